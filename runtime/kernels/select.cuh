// runtime/kernels/select.cuh: stage 2 of the MRA forward pipeline (forward.cuh), selection (§2.3-2.5): the
// level-1 pooled logits as a tiled GEMM, recomputed by every pass of a GPU-wide radix select that never stores
// the (N/s_1)^2 pairs, and the stored-key radix select of the levels l >= 2 (docs/kernels.md, "Selection").
// The counters its launches add to (radix histograms, the short-N histogram and ticket) are cleared by the pooling
// before it: select_counters.cuh.
#pragma once

#include "kernels/common.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// // The rank value of a candidate is priority (2 bits) above its score (32 bits) in an order-preserving unsigned
// form: unsigned order of rank values is §2.4's order up to the tie-break by flat index, which the kernels
// apply by position (flat order = row-major order = the order the lists are written in).
__host__ __device__ inline uint32_t ordered_bits(float score) {
  const uint32_t u = bits_of(score);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__host__ __device__ inline uint64_t rank_value(int priority, float score) {
  return (uint64_t(priority) << 32) | ordered_bits(score);
}

// A key of level l >= 2: 1 (a candidate; non-candidates are 0) | score (32 bits) | complement of the slot
// (kSlotBits bits). Priorities are 0 below level 1 and slot order is flat order, so unsigned order of keys is
// §2.4's order and keys are distinct.
inline constexpr uint64_t kSlotMask = (uint64_t(1) << kSlotBits) - 1;
__host__ __device__ inline uint64_t slot_key(float score, int64_t slot) {
  return (uint64_t(1) << 63) | (uint64_t(ordered_bits(score)) << kSlotBits) | (kSlotMask - uint64_t(slot));
}
// A crossing pair of causal attention (§9.3) is refined besides the budget: its key has every score bit set, above
// every candidate's (a candidate's score is at most 0, and a row that could hold a NaN score ranks nothing, §9.5).
__host__ __device__ inline uint64_t forced_key(int64_t slot) {
  return (uint64_t(1) << 63) | (uint64_t(0xffffffffu) << kSlotBits) | (kSlotMask - uint64_t(slot));
}
__host__ __device__ inline bool is_forced(uint64_t key) { return (key >> kSlotBits & 0xffffffffu) == 0xffffffffu; }

// The level-1 radix select: 3 passes over the 34-bit rank value, 12 + 11 + 11 bits from the top.
inline constexpr int kRankBits = 34;
__host__ __device__ constexpr int pass_shift(int pass) { return pass == 0 ? 22 : pass == 1 ? 11 : 0; }
__host__ __device__ constexpr int pass_bits(int pass) { return pass == 0 ? 12 : 11; }
static_assert(pass_shift(0) + pass_bits(0) == kRankBits && (1 << pass_bits(0)) == kHistBins);

// ---------------------------------------------------------------------------------------------------------
// Stage 2a (§2.3, level 1): the pooled logits σ q̄·k̄ as a register-tiled f32 GEMM. A CTA of kGemmThreads owns
// a band of kBandRows block rows and sweeps every key-block column, kBandCols at a time; each thread holds a
// 4 x 4 tile of logits (rows ty + 16 i, columns tx + 16 j), each a sum over the features in feature order
// (as the reference and the other stages), staged kGemmK features at a time through shared memory.
// `visit(c0, logit)` is called by every thread once per column tile with its 4 x 4 logits (-inf where the
// pair is not a candidate: outside the matrix, a block without real tokens, or, under causal attention, a pair
// that is not visible, §9.3).
inline constexpr int kGemmThreads = 256, kBandRows = 64, kBandCols = 64, kGemmK = 16, kMicro = 4;
static_assert(kGemmThreads == (kBandRows / kMicro) * (kBandCols / kMicro));
static_assert(kBandRows == kLevel1Tile && kBandCols == kLevel1Tile, "layout.h sizes the column ranges in these tiles");

// What one CTA of a level-1 launch sweeps: grid x is bands x lv.split, CTA x = band * split + part, and part
// `part` of the band takes the key-block columns [c_begin, c_end) (whole tiles but at nk; layout.h). With split 1
// (long N, policy row) a CTA sweeps its whole band, as the stages before the split did.
struct Sweep {
  int32_t row0, part, c_begin, c_end;
};
__device__ inline Sweep sweep_of(const Level& lv) {
  const int32_t part = int32_t(blockIdx.x) % lv.split, band = int32_t(blockIdx.x) / lv.split;
  const int32_t c_begin = part * lv.split_cols;
  return Sweep{band * kBandRows, part, c_begin, lv.nk - c_begin < lv.split_cols ? lv.nk : c_begin + lv.split_cols};
}

// The pooled logit σ q̄·k̄ of level-1 pair (r, c) from its sum over the features, or -inf where the pair is not a
// candidate (`real`: both blocks hold real tokens; under causal attention, a pair that is not visible, §9.3).
__device__ inline float level1_logit(const Params& p, bool real, int32_t r, int32_t c, float sum) {
  return real && pair_place(p, p.layout.level[0].side, r, c) == order::kVisible ? p.scale * sum : -INFINITY;
}

// The staging of one feature slab for the logit GEMMs (coarse_sweep, share_logits): features [d0, d0 + kGemmK) of
// Rows consecutive rows of an [n, D] f32 means array (q̄ or k̄) from row `row0` on (0 past row n), by Threads
// threads, into a shared tile s[d][i] (feature d of row row0 + i). A thread's element k is e = tid + k Threads:
// row e / kGemmK, feature e % kGemmK, so consecutive threads read consecutive features of a row, and the
// transposing stores into a padded tile spread over the banks. load and store move one element; fetch (global ->
// registers) and put (registers -> shared) all of a thread's, so that a caller may issue the next slab's loads
// before the current slab's products.
template <int D, int Rows, int Threads>
struct Slab {
  static constexpr int kElems = Rows * kGemmK, kLoads = (kElems + Threads - 1) / Threads;
  float v[kLoads] = {};
  // Whether element k is one of this thread's (always, when the threads divide the elements).
  __device__ static bool mine(int k) { return kElems % Threads == 0 || int(threadIdx.x) + k * Threads < kElems; }
  __device__ static float load(const float* mean, int32_t n, int32_t row0, int d0, int k) {
    const int e = int(threadIdx.x) + k * Threads, i = e / kGemmK;
    return row0 + i < n ? mean[int64_t(row0 + i) * D + d0 + e % kGemmK] : 0.f;
  }
  template <int Cols>
  __device__ static void store(float (&s)[kGemmK][Cols], int k, float x) {
    static_assert(Cols >= Rows);
    const int e = int(threadIdx.x) + k * Threads;
    s[e % kGemmK][e / kGemmK] = x;
  }
  __device__ void fetch(const float* mean, int32_t n, int32_t row0, int d0) {
    MRA_UNROLL
    for (int k = 0; k < kLoads; ++k)
      if (mine(k)) v[k] = load(mean, n, row0, d0, k);
  }
  template <int Cols>
  __device__ void put(float (&s)[kGemmK][Cols]) const {
    MRA_UNROLL
    for (int k = 0; k < kLoads; ++k)
      if (mine(k)) store(s, k, v[k]);
  }
};

template <class Cfg, class Visit>
__device__ void coarse_sweep(const Params& p, int64_t slice, const Sweep& g, Visit visit) {
  constexpr int D = Cfg::dim, W = kBandRows / kMicro;
  const int32_t row0 = g.row0;
  static_assert(D % kGemmK == 0);
  const Level& lv = p.layout.level[0];
  const int32_t b = int32_t(slice / p.heads);
  __shared__ float qs[kGemmK][kBandRows + 1];  // padded: the transposing stores hit distinct banks
  __shared__ float ks[kGemmK][kBandCols + 1];
  const int tx = int(threadIdx.x) % W, ty = int(threadIdx.x) / W;
  const float* qmean = at<float>(p, lv.qmean) + slice * lv.nq * D;
  const float* kmean = at<float>(p, lv.kmean) + slice * lv.nk * D;
  const float* qcount = at<float>(p, lv.qcount) + int64_t(b) * lv.nq;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  bool row_real[kMicro];
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    const int32_t r = row0 + ty + W * i;
    row_real[i] = r < lv.nq && qcount[r] > 0.f;
  }
  for (int32_t c0 = g.c_begin; c0 < g.c_end; c0 += kBandCols) {
    float acc[kMicro][kMicro] = {};
    MRA_NO_UNROLL  // at D = 32 nvcc unrolled both slabs and spilled (coarse_row_select_kernel, sm_80)
    for (int d0 = 0; d0 < D; d0 += kGemmK) {
      // An element of each at a time: the kernels of this sweep are at their register limit (a slab held in
      // registers spilled coarse_level1_kernel at D = 128).
      using QSlab = Slab<D, kBandRows, kGemmThreads>;
      using KSlab = Slab<D, kBandCols, kGemmThreads>;
      static_assert(QSlab::kLoads * kGemmThreads == QSlab::kElems && KSlab::kLoads == QSlab::kLoads);
      MRA_NO_UNROLL
      for (int k = 0; k < QSlab::kLoads; ++k) {
        const float qx = QSlab::load(qmean, lv.nq, row0, d0, k), kx = KSlab::load(kmean, lv.nk, c0, d0, k);
        QSlab::store(qs, k, qx);
        KSlab::store(ks, k, kx);
      }
      __syncthreads();
      for (int d = 0; d < kGemmK; ++d) {
        float a[kMicro], bk[kMicro];
        MRA_UNROLL
        for (int i = 0; i < kMicro; ++i) {
          a[i] = qs[d][ty + W * i];
          bk[i] = ks[d][tx + W * i];
        }
        MRA_UNROLL
        for (int i = 0; i < kMicro; ++i)
          MRA_UNROLL
          for (int j = 0; j < kMicro; ++j) acc[i][j] += a[i] * bk[j];
      }
      __syncthreads();
    }
    float logit[kMicro][kMicro];
    MRA_UNROLL
    for (int j = 0; j < kMicro; ++j) {
      const int32_t c = c0 + tx + W * j;
      const bool col_real = c < lv.nk && kcount[c] > 0.f;
      MRA_UNROLL
      for (int i = 0; i < kMicro; ++i)
        logit[i][j] = level1_logit(p, row_real[i] && col_real, row0 + ty + W * i, c, acc[i][j]);
    }
    visit(c0, logit);
  }
}
// The whole band (every column): policy row's select.
template <class Cfg, class Visit>
__device__ void coarse_sweep(const Params& p, int64_t slice, int32_t row0, Visit visit) {
  coarse_sweep<Cfg>(p, slice, Sweep{row0, 0, 0, p.layout.level[0].nk}, visit);
}

// Calls `f(i, j, r, c, value)` for every candidate of a sweep tile: its rank value from the logit and the
// row maximum (`rmax[i]` for row ty + 16 i of the band).
template <class F>
__device__ inline void for_each_candidate(const Params& p, int32_t row0, int32_t c0, const float (&logit)[kMicro][kMicro],
                                          const float (&rmax)[kMicro], F f) {
  constexpr int W = kBandRows / kMicro;
  const int tx = int(threadIdx.x) % W, ty = int(threadIdx.x) / W;
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i)
    MRA_UNROLL
    for (int j = 0; j < kMicro; ++j) {
      if (logit[i][j] == -INFINITY) continue;
      const int32_t r = row0 + ty + W * i, c = c0 + tx + W * j;
      f(i, j, r, c, rank_value(order::level1_priority(r, c, p.prior_first, p.prior_diagonal), logit[i][j] - rmax[i]));
    }
}

// §9.3: calls f(c) for every active crossing pair (r, c) of level-1 block row r, which causal attention refines
// besides the budget: the key blocks holding keys r s + δ + 1 ... (last query) + δ, at most two.
template <class F>
__device__ inline void for_each_crossing(const Params& p, int32_t b, int32_t r, F f) {
  const Level& lv = p.layout.level[0];
  if (!(at<float>(p, lv.qcount)[int64_t(b) * lv.nq + r] > 0.f)) return;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  const int32_t s = lv.side, delta = p.nk - p.nq;
  const int32_t lo = r * s + delta, hi = ((r + 1) * s < p.nq ? (r + 1) * s : p.nq) - 1 + delta;
  for (int32_t c = lo < 0 ? 0 : lo / s; hi >= 0 && c <= hi / s && c < lv.nk; ++c)
    if (kcount[c] > 0.f && pair_place(p, s, r, c) == order::kCrossing) f(c);
}

// The row maxima of this thread's band rows, from the workspace.
__device__ inline void load_row_max(const Params& p, int64_t slice, int32_t row0, float (&rmax)[kMicro]) {
  constexpr int W = kBandRows / kMicro;
  const Level& lv = p.layout.level[0];
  const float* rowmax = at<float>(p, lv.rowmax) + slice * lv.nq;
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    const int32_t r = row0 + int(threadIdx.x) / W + W * i;
    rmax[i] = r < lv.nq ? rowmax[r] : -INFINITY;
  }
}

// The maximum logit of each of this thread's band rows (§2.4's score is relative to it) over the columns of
// sweep g; written to the workspace, for the later passes (`rowmax`, split 1) or for the merge of the ranges
// (`rowmax_part`, [row, part]). The W threads of one row are W consecutive lanes of one warp, so every lane of a
// row ends with the same maximum.
template <class Cfg>
__device__ void band_row_max(const Params& p, int64_t slice, const Sweep& g, float (&m)[kMicro]) {
  constexpr int W = kBandRows / kMicro;
  const Level& lv = p.layout.level[0];
  const int32_t row0 = g.row0;
  float* out = at<float>(p, lv.split > 1 ? lv.rowmax_part : lv.rowmax) + slice * lv.nq * lv.split;
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) m[i] = -INFINITY;
  coarse_sweep<Cfg>(p, slice, g, [&](int32_t, const float (&logit)[kMicro][kMicro]) {
    MRA_UNROLL
    for (int i = 0; i < kMicro; ++i)
      MRA_UNROLL
      for (int j = 0; j < kMicro; ++j) m[i] = logit[i][j] > m[i] ? logit[i][j] : m[i];
  });
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    for (int o = W / 2; o > 0; o /= 2) {
      const float x = __shfl_xor_sync(0xffffffffu, m[i], o);
      m[i] = x > m[i] ? x : m[i];
    }
    const int32_t r = row0 + int(threadIdx.x) / W + W * i;
    if (int(threadIdx.x) % W == 0 && r < lv.nq) out[int64_t(r) * lv.split + g.part] = m[i];
  }
}
template <class Cfg>
__device__ void band_row_max(const Params& p, int64_t slice, int32_t row0, float (&m)[kMicro]) {
  band_row_max<Cfg>(p, slice, Sweep{row0, 0, 0, p.layout.level[0].nk}, m);
}

// Split > 1: the row maxima of the ranges (coarse_rowmax_kernel, the launch before), merged in range order with
// the sweep's own comparison (a maximum: the same value whichever order); part 0 of each band stores them in
// `rowmax` for the later passes.
__device__ inline void merge_row_max(const Params& p, int64_t slice, const Sweep& g, float (&m)[kMicro]) {
  constexpr int W = kBandRows / kMicro;
  const Level& lv = p.layout.level[0];
  const float* part = at<float>(p, lv.rowmax_part) + slice * lv.nq * lv.split;
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    const int32_t r = g.row0 + int(threadIdx.x) / W + W * i;
    m[i] = -INFINITY;
    if (r >= lv.nq) continue;
    for (int32_t s = 0; s < lv.split; ++s) {
      const float x = part[int64_t(r) * lv.split + s];
      m[i] = x > m[i] ? x : m[i];
    }
    if (g.part == 0 && int(threadIdx.x) % W == 0) at<float>(p, lv.rowmax)[slice * lv.nq + r] = m[i];
  }
}

// Split > 1 only: the row maxima per column range, before radix pass 0 (which, with split 1, finds them itself).
// Grid (bands * split, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_rowmax_kernel(Params p) {
  float m[kMicro];
  band_row_max<Cfg>(p, p.slice0 + int64_t(blockIdx.y), sweep_of(p.layout.level[0]), m);
}

// The selection state after the pick of radix pass `pass`: the digit of the budget-th largest rank value, from
// the slice's histogram of that pass and the state after the pick before (state[pass - 1]), both written by
// earlier launches. No launch of its own: every CTA of the launch that needs it computes it, alike from the
// same data (a few µs of reading, against one launch), and CTA 0 of the slice stores it as state[pass] for the
// launches after. The pick of pass 0 also turns pool_kernel's block flags (counted in the pass-0 histogram's
// last word) into the slice's non-finite flag (a poisoned slice refines nothing, §2.7), counts the candidates
// and settles the cases that need no search (budget 0, budget >= candidates); a digit whose whole bin is
// wanted settles the threshold early, and the passes after it skip their sweeps. Uniform over the CTA (its
// kGemmThreads threads); contains barriers. The levels l >= 2 (level index li) pick alike from their own
// histograms (level_rank_kernel), whose last word stays 0: only level 1 sets the slice's flag.
inline constexpr int kScanThreads = kGemmThreads;
template <class Cfg>
__device__ SelectState pick_state(const Params& p, int64_t slice, int pass, int li = 0) {
  const Level& lv = p.layout.level[li];
  const int tid = threadIdx.x;
  constexpr int per = kHistBins / kScanThreads;
  const uint64_t* hist = at<uint64_t>(p, lv.hist) + (slice * kPasses + pass) * kHistWords;
  SelectState* state = at<SelectState>(p, lv.state) + slice * kPasses;
  __shared__ uint64_t part[kScanThreads];
  __shared__ SelectState result;
  const SelectState st = pass == 0 ? SelectState{0, 0, 0, 0} : state[pass - 1];
  uint64_t mine = 0;
  for (int i = 0; i < per; ++i) mine += hist[tid * per + i];
  part[tid] = mine;
  __syncthreads();
  if (tid == 0) {
    SelectState s = st;
    bool search = !st.done;
    if (pass == 0) {
      uint64_t total = 0;
      for (int t = 0; t < kScanThreads; ++t) total += part[t];
      s.candidates = total;
      const bool any_bad = hist[kHistBins] != 0;
      if (blockIdx.x == 0 && li == 0) at<int32_t>(p, p.layout.slice_bad)[slice] = any_bad;
      if (any_bad || lv.budget == 0) {
        s = SelectState{~uint64_t(0), 0, 1, total};  // nothing exceeds the threshold
        search = false;
      } else if (uint64_t(lv.budget) >= total) {
        s = SelectState{0, ~uint64_t(0), 1, total};  // every candidate: value >= 0
        search = false;
      } else {
        s.ties = uint64_t(lv.budget);
      }
    }
    if (search) {
      // From the top: the bin holding the ties-th largest of the values still in play.
      uint64_t above = 0;
      int t = kScanThreads - 1;
      while (above + part[t] < s.ties) above += part[t--];
      int digit = t * per + per - 1;
      while (above + hist[digit] < s.ties) above += hist[digit--];
      const int shift = pass_shift(pass);
      s.threshold |= uint64_t(digit) << shift;
      s.ties -= above;
      if (s.ties == hist[digit]) {  // the whole bin: every value >= its lowest one
        s = s.threshold == 0 ? SelectState{0, ~uint64_t(0), 1, s.candidates}
                             : SelectState{s.threshold - 1, 0, 1, s.candidates};
      } else if (pass == kPasses - 1) {
        s.done = 1;
      }
    }
    result = s;
    if (blockIdx.x == 0) state[pass] = s;
  }
  __syncthreads();
  return result;
}

// Radix pass `pass`: the histogram of the next digit of the rank values that match the digits found so far
// (the state after the previous pass's pick, computed here). Pass 0 first finds the row maxima (split 1) or
// merges those of the column ranges, and counts this CTA's share of pool_kernel's non-finite block flags. Counts
// are integers, so the order of the atomic additions does not matter: the CTAs of a band's column ranges add
// into the same histogram. Grid (bands * split, slices); pool_kernel cleared the histograms.
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_rank_kernel(Params p, int pass) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int tid = threadIdx.x;
  const SelectState st = pass == 0 ? SelectState{0, 0, 0, 0} : pick_state<Cfg>(p, slice, pass - 1);
  if (st.done) return;  // uniform over the CTA
  const Sweep g = sweep_of(lv);
  const int32_t row0 = g.row0;
  uint64_t* global = at<uint64_t>(p, lv.hist) + (slice * kPasses + pass) * kHistWords;
  __shared__ uint32_t hist[kHistBins];
  float rmax[kMicro];
  if (pass == 0) {
    if (lv.split > 1) merge_row_max(p, slice, g, rmax);
    else band_row_max<Cfg>(p, slice, g, rmax);
    const int32_t blocks = lv.nq + lv.nk, share = (blocks + int32_t(gridDim.x) - 1) / int32_t(gridDim.x);
    const int32_t lo = int32_t(blockIdx.x) * share, hi = lo + share < blocks ? lo + share : blocks;
    const int32_t* block_bad = at<int32_t>(p, p.layout.block_bad) + slice * blocks;
    int bad = 0;
    for (int32_t i = lo + tid; i < hi; i += blockDim.x) bad |= block_bad[i] != 0;
    if (__syncthreads_or(bad) && tid == 0)
      atomicAdd(reinterpret_cast<unsigned long long*>(&global[kHistBins]), 1ull);
  } else {
    load_row_max(p, slice, row0, rmax);
  }
  for (int i = tid; i < kHistBins; i += blockDim.x) hist[i] = 0;
  const int shift = pass_shift(pass), high = shift + pass_bits(pass);
  const uint64_t digit_mask = (uint64_t(1) << pass_bits(pass)) - 1;
  __syncthreads();
  coarse_sweep<Cfg>(p, slice, g, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    for_each_candidate(p, row0, c0, logit, rmax, [&](int, int, int32_t, int32_t, uint64_t v) {
      if ((v >> high) == (st.threshold >> high)) atomicAdd(&hist[(v >> shift) & digit_mask], 1u);
    });
  });
  __syncthreads();
  for (int i = tid; i < (1 << pass_bits(pass)); i += blockDim.x)
    if (hist[i]) atomicAdd(reinterpret_cast<unsigned long long*>(&global[i]), (unsigned long long)hist[i]);
}

// Policy row (§10), level 1: every block row's own top budget_1, by a radix select per row over the same rank
// values, kRowDigit bits per pass from the top, each pass a sweep of the band's logits into a per-row histogram
// in shared memory, after a first sweep for the row maxima. Writes per row the threshold (its budget-th largest
// value) and the quota of ties at it (RowPick), and the number it takes as rowcount's "above" (ties 0), so that
// coarse_write_kernel's offsets and columns follow unchanged. A poisoned slice (§2.7) takes nothing. Grid
// (bands, slices).
inline constexpr int kRowDigit = 6, kRowBins = 1 << kRowDigit;
inline constexpr int kRowPasses = (kRankBits + kRowDigit - 1) / kRowDigit;
template <class Cfg>
// Two CTAs per SM: without a minimum, ptxas 13.0 held this kernel to 64 registers on sm_80 and spilled 12/32 bytes
// (r32x1_d64_f32); at 2 x 256 threads it may use 128 and takes 80, no spill.
__global__ void __launch_bounds__(kGemmThreads, 2) coarse_row_select_kernel(Params p) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t row0 = int32_t(blockIdx.x) * kBandRows;
  const int tid = threadIdx.x;
  __shared__ uint32_t hist[kBandRows][kRowBins];
  __shared__ uint64_t prefix[kBandRows];
  __shared__ uint32_t rest[kBandRows], taken[kBandRows];
  // Non-finite values: without causal attention a flag for the whole slice (§2.7); with it, the slice's first
  // real key with a non-finite k or v (from pool_kernel's offsets in the key blocks), which with the query blocks'
  // flags poisons rows one by one (§9.5).
  int any_bad = 0;
  int32_t first = p.nk;
  const int32_t* block_bad = at<int32_t>(p, p.layout.block_bad) + slice * (lv.nq + lv.nk);
  for (int32_t i = tid; i < lv.nq + lv.nk; i += blockDim.x) {
    any_bad |= block_bad[i];
    if (i >= lv.nq && block_bad[i] != 0 && (i - lv.nq) * lv.side + block_bad[i] - 1 < first)
      first = (i - lv.nq) * lv.side + block_bad[i] - 1;
  }
  __shared__ int32_t first_bad;
  if (tid == 0) first_bad = p.nk;
  __syncthreads();
  if (first < p.nk) atomicMin(&first_bad, first);
  const bool bad = __syncthreads_or(any_bad) != 0 && !p.layout.causal;
  if (blockIdx.x == 0 && tid == 0) {
    at<int32_t>(p, p.layout.slice_bad)[slice] = bad;
    if (p.layout.causal) at<int32_t>(p, p.layout.first_bad)[slice] = first_bad;
    // The slice's state as coarse_write_kernel reads it: no tie quota beyond the rows' own.
    at<SelectState>(p, lv.state)[slice * kPasses + kPasses - 1] = SelectState{0, 0, 1, 0};
  }
  if (tid < kBandRows) {
    // A poisoned row (§9.5) ranks nothing.
    const int32_t r = row0 + tid;
    const bool poisoned = r < lv.nq && r * lv.side >= poisoned_from(p, slice, r * lv.side, first_bad);
    prefix[tid] = 0;
    rest[tid] = bad || poisoned ? 0u : ~0u;  // ~0: not counted yet (pass 0 counts the row's candidates)
    taken[tid] = 0;
  }
  float rmax[kMicro];
  band_row_max<Cfg>(p, slice, row0, rmax);
  for (int pass = 0; pass < kRowPasses && !bad; ++pass) {
    const int high = kRankBits - kRowDigit * pass, shift = high > kRowDigit ? high - kRowDigit : 0;
    for (int e = tid; e < kBandRows * kRowBins; e += blockDim.x) hist[e / kRowBins][e % kRowBins] = 0;
    __syncthreads();
    coarse_sweep<Cfg>(p, slice, row0, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
      for_each_candidate(p, row0, c0, logit, rmax, [&](int, int, int32_t r, int32_t, uint64_t v) {
        const int i = r - row0;
        if (rest[i] != 0 && (v >> high) == (prefix[i] >> high)) atomicAdd(&hist[i][(v >> shift) & (kRowBins - 1)], 1u);
      });
    });
    __syncthreads();
    if (tid < kBandRows && rest[tid] != 0) {
      const uint32_t* h = hist[tid];
      if (rest[tid] == ~0u) {  // pass 0: settle the rows that need no search
        uint32_t total = 0;
        for (int d = 0; d < kRowBins; ++d) total += h[d];
        const uint64_t budget = uint64_t(lv.budget);
        if (budget >= total) {
          taken[tid] = total;  // every candidate: value >= threshold 0, ties without limit
          prefix[tid] = 0;
          rest[tid] = 0;
        } else {
          taken[tid] = uint32_t(budget);
          rest[tid] = uint32_t(budget);
        }
      }
      if (rest[tid] != 0) {  // the bin holding the rest-th largest value still in play
        uint32_t above = 0;
        int digit = kRowBins - 1;
        while (above + h[digit] < rest[tid]) above += h[digit--];
        prefix[tid] |= uint64_t(digit) << shift;
        rest[tid] -= above;
        if (shift == 0) taken[tid] |= 0x80000000u;  // searched to the last digit: prefix is the threshold
      }
    }
    __syncthreads();
  }
  if (tid < kBandRows && row0 + tid < lv.nq) {
    const int32_t r = row0 + tid;
    const bool searched = (taken[tid] & 0x80000000u) != 0;
    const uint32_t n = taken[tid] & 0x7fffffffu;
    // Unsearched rows take all their candidates (threshold 0, any number of ties) or none (budget 0, poisoned).
    RowPick* pick = at<RowPick>(p, lv.rowpick) + slice * lv.nq + r;
    *pick = searched ? RowPick{prefix[tid], rest[tid]} : n > 0 ? RowPick{0, ~uint64_t(0)} : RowPick{~uint64_t(0), 0};
    // Causal attention: the row's crossing pairs are refined besides its budget (§9.3); coarse_write_kernel adds
    // them to the columns.
    uint32_t forced = 0;
    if (p.layout.causal) for_each_crossing(p, int32_t(slice / p.heads), r, [&](int32_t) { ++forced; });
    uint32_t* rowcount = at<uint32_t>(p, lv.rowcount) + slice * lv.nq * 2;
    rowcount[2 * r] = n + forced;
    rowcount[2 * r + 1] = 0;
  }
}

// The refined pairs of one band: rank value above the threshold, or equal to it within the tie quota.
// Pass 1 (`count`, after the last pick): per row and column range, how many are above and how many tie.
// Grid (bands * split, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_count_kernel(Params p) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const SelectState st = pick_state<Cfg>(p, slice, kPasses - 1);
  const Sweep g = sweep_of(lv);
  const int32_t row0 = g.row0;
  __shared__ uint32_t above[kBandRows], ties[kBandRows];
  for (int i = threadIdx.x; i < kBandRows; i += blockDim.x) above[i] = ties[i] = 0;
  float rmax[kMicro];
  load_row_max(p, slice, row0, rmax);
  __syncthreads();
  coarse_sweep<Cfg>(p, slice, g, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    for_each_candidate(p, row0, c0, logit, rmax, [&](int, int, int32_t r, int32_t, uint64_t v) {
      if (v > st.threshold) atomicAdd(&above[r - row0], 1u);
      else if (v == st.threshold) atomicAdd(&ties[r - row0], 1u);
    });
  });
  __syncthreads();
  uint32_t* rowcount = at<uint32_t>(p, lv.rowcount) + slice * lv.nq * lv.split * 2;
  for (int i = threadIdx.x; i < kBandRows && row0 + i < lv.nq; i += blockDim.x) {
    const int64_t seg = int64_t(row0 + i) * lv.split + g.part;
    rowcount[2 * seg] = above[i];
    rowcount[2 * seg + 1] = ties[i];
  }
}

// The output offsets of this CTA's segments (row r of the band, column range g.part) and their tie bases (ties
// in the segments before), from the per-segment counts; the CSR row offsets of the band's rows (and, from the
// last band, rowptr[nq]) from part 0. Segments in (row, part) order are in flat order, and the tie quota goes to
// the ties in flat order, so the segments before one took min(ties before it, quota) of them: its offset is
// (above before it) + min(tie base, quota). The sums over the rows before the band are integers: per thread, then
// over the threads in thread order.
template <class Cfg>
__device__ void band_offsets(const Params& p, int64_t slice, const Sweep& g, const SelectState& st,
                                    int32_t (&band_ptr)[kBandRows], uint64_t (&band_tb)[kBandRows]) {
  const Level& lv = p.layout.level[0];
  const int tid = threadIdx.x;
  const int32_t row0 = g.row0;
  const uint32_t* rowcount = at<uint32_t>(p, lv.rowcount) + slice * lv.nq * lv.split * 2;
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  __shared__ uint64_t part[2][kGemmThreads];
  uint64_t above = 0, ties = 0;
  for (int64_t seg = tid; seg < int64_t(row0) * lv.split; seg += blockDim.x) {
    above += rowcount[2 * seg];
    ties += rowcount[2 * seg + 1];
  }
  part[0][tid] = above;
  part[1][tid] = ties;
  __syncthreads();
  if (tid == 0) {
    uint64_t a = 0, tb = 0;
    for (int t = 0; t < kGemmThreads; ++t) {
      a += part[0][t];
      tb += part[1][t];
    }
    for (int i = 0; i < kBandRows && row0 + i < lv.nq; ++i) {
      for (int32_t s = 0; s < lv.split; ++s) {
        const int32_t offset = int32_t(a + (tb < st.ties ? tb : st.ties));
        if (s == 0 && g.part == 0) rowptr[row0 + i] = offset;
        if (s == g.part) {
          band_tb[i] = tb;
          band_ptr[i] = offset;
        }
        const int64_t seg = int64_t(row0 + i) * lv.split + s;
        a += rowcount[2 * seg];
        tb += rowcount[2 * seg + 1];
      }
    }
    if (g.part == 0 && row0 + kBandRows >= lv.nq) rowptr[lv.nq] = int32_t(a + (tb < st.ties ? tb : st.ties));
  }
  __syncthreads();
}

// Pass 2 (`write`): the CSR offsets of the band's rows, then the columns of the refined pairs in the CTA's column
// range, row by row in column order, at their CSR positions (each range from its segment's offset). A column
// tile's verdicts go through shared memory; then warp w writes rows w, w + 8, ... of the band, its lanes covering
// 32 columns at a time, with ballots for the positions. Grid (bands * split, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_write_kernel(Params p) {
  constexpr int W = kBandRows / kMicro, kWarps = kGemmThreads / 32, kRowsPerWarp = kBandRows / kWarps;
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const SelectState st = at<SelectState>(p, lv.state)[slice * kPasses + kPasses - 1];
  const Sweep g = sweep_of(lv);
  const int32_t row0 = g.row0;
  __shared__ int32_t band_ptr[kBandRows];
  __shared__ uint64_t band_tb[kBandRows];
  band_offsets<Cfg>(p, slice, g, st, band_ptr, band_tb);
  int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  // The threshold and the tie quota of row r: the slice's (§2.4), or the row's own under policy row (§10).
  const RowPick* picks = at<RowPick>(p, lv.rowpick) + slice * lv.nq;
  const auto pick = [&](int32_t r) { return p.layout.by_row ? picks[r] : RowPick{st.threshold, st.ties}; };
  __shared__ uint8_t verdict[kBandRows][kBandCols];  // 0: not refined, 1: above the threshold, 2: a tie
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  // Per row of the warp, the same in every lane: columns written and ties seen so far (each < nk < 2^26).
  uint32_t written[kRowsPerWarp] = {}, seen_ties[kRowsPerWarp] = {};
  float rmax[kMicro];
  load_row_max(p, slice, row0, rmax);
  coarse_sweep<Cfg>(p, slice, g, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    const int tx = int(threadIdx.x) % W, ty = int(threadIdx.x) / W;
    MRA_UNROLL
    for (int i = 0; i < kMicro; ++i)
      MRA_UNROLL
      for (int j = 0; j < kMicro; ++j) verdict[ty + W * i][tx + W * j] = 0;
    for_each_candidate(p, row0, c0, logit, rmax, [&](int i, int j, int32_t r, int32_t, uint64_t v) {
      const uint64_t threshold = pick(r).threshold;
      verdict[ty + W * i][tx + W * j] = v > threshold ? 1 : v == threshold ? 2 : 0;
    });
    if (p.layout.causal) {  // the crossing pairs of the band's rows, refined besides the budget (§9.3)
      __syncthreads();
      const int t = int(threadIdx.x);
      if (t < kBandRows && row0 + t < lv.nq)
        for_each_crossing(p, int32_t(slice / p.heads), row0 + t, [&](int32_t c) {
          if (c >= c0 && c < c0 + kBandCols) verdict[t][c - c0] = 1;
        });
    }
    __syncthreads();
    MRA_UNROLL
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int i = warp + kWarps * k;
      const int32_t r = row0 + i;
      if (r >= lv.nq) continue;  // uniform over the warp
      for (int h = 0; h < kBandCols; h += 32) {
        const uint8_t v = verdict[i][h + lane];
        const unsigned lower = (1u << lane) - 1u;
        const unsigned tie_mask = __ballot_sync(0xffffffffu, v == 2);
        const uint64_t tie_rank = band_tb[i] + seen_ties[k] + uint64_t(__popc(tie_mask & lower));
        const bool take = v == 1 || (v == 2 && tie_rank < pick(r).ties);
        const unsigned take_mask = __ballot_sync(0xffffffffu, take);
        if (take) col[band_ptr[i] + int64_t(written[k]) + __popc(take_mask & lower)] = c0 + h + lane;
        seen_ties[k] += uint32_t(__popc(tie_mask));
        written[k] += uint32_t(__popc(take_mask));
      }
    }
    __syncthreads();
  });
}

// ---------------------------------------------------------------------------------------------------------
// Level 1 at short N (Level::small, layout.h: global policy, nq_1 * nk_1 <= kSmallPairs). There the multi-CTA
// kernels above spread 6 sweeps over 5 to 6 launches of too few CTAs (64 at N = 4K, H = 16: the 64 x 64 tile
// bounds the split), and the launches cost more than the work. Instead one launch, level1_small_select_kernel:
// Level::shares CTAs per slice, each computing the logits of a share of whole block rows once and storing them
// (4 bytes per pair, at most 64 KB per slice; coarse_level1_small_kernel reads them again), ranking them, and the
// last of them to finish resolving the threshold from the few entries near it. The logits are coarse_sweep's
// sums (features in feature order, level1_logit), the rank values, the 12 + 11 + 11-bit digits, the threshold and
// the tie rule are the multi-CTA path's: T_1 is the same bits (test `small level 1`).
inline constexpr int kSmallThreads = 512, kSmallWarps = kSmallThreads / 32;

// The logits of block rows [r0, r1) and every column into the workspace, in tiles of kSmallWarps rows x
// kShareCols columns: warp w takes row w of the tile, lane l the kShareMicro consecutive columns from
// kShareMicro l (for_each_pair's pairs of the thread), so a q̄ element is one broadcast read and a lane's k̄
// elements of a feature are one 16-byte read (Quad) of a tile padded to whole quads. Features are staged kGemmK at
// a time (Slab), the next slab's loads issued before the current one's products so that their L2 latency overlaps
// them; each pair's sum is in feature order (coarse_sweep's additions: the same bits).
inline constexpr int kShareCols = 128, kShareMicro = kShareCols / 32;
struct alignas(16) Quad {
  float v[4];
};
static_assert(kShareMicro == 4 && sizeof(Quad) == 4 * sizeof(float), "a lane's columns of a feature are one Quad");
template <class Cfg>
__device__ void share_logits(const Params& p, int64_t slice, int32_t r0, int32_t r1) {
  constexpr int D = Cfg::dim;
  static_assert(D % kGemmK == 0);
  const Level& lv = p.layout.level[0];
  const int32_t b = int32_t(slice / p.heads), nk = lv.nk;
  const float* qmean = at<float>(p, lv.qmean) + slice * lv.nq * D;
  const float* kmean = at<float>(p, lv.kmean) + slice * nk * D;
  const float* qcount = at<float>(p, lv.qcount) + int64_t(b) * lv.nq;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * nk;
  float* out = at<float>(p, lv.logits) + slice * lv.nq * nk;
  __shared__ float qs[kGemmK][kSmallWarps];
  // Padded by a quad: the rows stay 16-byte aligned and the transposing stores hit at most 2 threads per bank.
  __shared__ __align__(16) float ks[kGemmK][kShareCols + 4];
  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;
  for (int32_t t0 = r0; t0 < r1; t0 += kSmallWarps) {
    const int32_t r = t0 + warp;
    const bool row_real = r < r1 && qcount[r] > 0.f;
    for (int32_t c0 = 0; c0 < nk; c0 += kShareCols) {
      // The staging loads of slab d0 (Slab): the tile's k̄ rows and, for the first kSmallWarps x kGemmK threads,
      // its q̄ rows.
      Slab<D, kShareCols, kSmallThreads> kn;
      Slab<D, kSmallWarps, kSmallThreads> qn;
      const auto fetch = [&](int d0) {
        kn.fetch(kmean, nk, c0, d0);
        qn.fetch(qmean, r1, t0, d0);
      };
      fetch(0);
      float acc[kShareMicro] = {};
      MRA_NO_UNROLL
      for (int d0 = 0; d0 < D; d0 += kGemmK) {
        kn.put(ks);
        qn.put(qs);
        // Before the barrier, which ptxas does not move loads across: in flight during the products.
        if (d0 + kGemmK < D) fetch(d0 + kGemmK);
        __syncthreads();
        for (int d = 0; d < kGemmK; ++d) {
          const float a = qs[d][warp];
          const Quad b = *reinterpret_cast<const Quad*>(&ks[d][kShareMicro * lane]);
          MRA_UNROLL
          for (int j = 0; j < kShareMicro; ++j) acc[j] += a * b.v[j];
        }
        __syncthreads();
      }
      MRA_UNROLL
      for (int j = 0; j < kShareMicro; ++j) {
        const int32_t c = c0 + kShareMicro * lane + j;
        if (r < r1 && c < nk) out[int64_t(r) * nk + c] = level1_logit(p, row_real && kcount[c] > 0.f, r, c, acc[j]);
      }
    }
  }
}

// An entry of the short-N selection: rank value (34 bits) above the pair's flat index in the slice (r nk + c).
inline constexpr int kFlatBits = 14;
static_assert((int64_t(1) << kFlatBits) == kSmallPairs, "a flat index of the slice fits the entry's low bits");
// The last CTA's bit masks of the slice's pairs: ceil(nk / 32) words per row, at most kSmallPairs / 32 + kSmallRows
// in all; they and the per-row array take the share's cursor array.
inline constexpr int kSelectMaskWords = int(kSmallPairs / 32 + kSmallRows);
static_assert(2 * kSelectMaskWords + kSmallRows <= kHistBins, "the masks and rows fit in the cursors' place");

// Calls f(k, r, c, e) for every pair (r, c) of rows [r0, r1) of an nk-column matrix, e = r nk + c: warp w takes
// rows r0 + w, r0 + w + 16, ..., lane l the columns kShareMicro l ... kShareMicro l + kShareMicro - 1 of every
// kShareCols (share_logits' pairs of the thread; a warp's loads cover 128 consecutive words). k is a compile-time
// slot for a thread's first kHeldPairs pairs (0, 1, ... in this order) and kHeldPairs past them, so that f may keep
// a value per pair in a register array. `f` must not hold a warp-wide operation.
inline constexpr int kHeldPairs = 4;  // every pair of a thread when a share is at most 16 rows x 128 columns (4K)
template <class F>
__device__ inline void for_each_pair(int32_t r0, int32_t r1, int32_t nk, F f) {
  const int32_t lane = int32_t(threadIdx.x) % 32;
  int32_t r = kShareMicro * lane < nk ? r0 + int32_t(threadIdx.x) / 32 : r1, c = kShareMicro * lane;
  const auto next = [&] {
    if (++c % kShareMicro == 0) c += kShareCols - kShareMicro;
    if (c >= nk) {
      c = kShareMicro * lane;
      r += kSmallWarps;
    }
  };
  MRA_UNROLL
  for (int k = 0; k < kHeldPairs; ++k) {
    if (r < r1) f(k, r, c, r * nk + c);
    next();
  }
  while (r < r1) {
    f(kHeldPairs, r, c, r * nk + c);
    next();
  }
}

// Sum of x over the threads after this one (an integer: any order gives it), and over all of them. `warp_sum`
// holds kSmallWarps words; contains a barrier, and every thread must have passed one since it read the previous
// call's (each call below follows a barrier). Returned by value (an out pointer made ptxas keep it on the stack).
struct Sums {
  uint32_t after, total;
};
__device__ inline Sums sum_after(uint32_t x, uint32_t* warp_sum) {
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  uint32_t suffix = x;  // over lanes lane .. 31
  for (int o = 1; o < 32; o *= 2) {
    const uint32_t y = __shfl_down_sync(0xffffffffu, suffix, o);
    if (lane + o < 32) suffix += y;
  }
  if (lane == 0) warp_sum[warp] = suffix;
  __syncthreads();
  uint32_t after = suffix - x, all = 0;
  for (int w = 0; w < kSmallWarps; ++w) {
    all += warp_sum[w];
    if (w > warp) after += warp_sum[w];
  }
  return Sums{after, all};
}

// The rank value of pair (r, c) from its ordered score bits (0: not a candidate; see the kernel).
__device__ inline uint64_t small_rank(const Params& p, int32_t r, int32_t c, uint32_t score) {
  return (uint64_t(order::level1_priority(r, c, p.prior_first, p.prior_diagonal)) << 32) | score;
}

// The level-1 selection of one slice. Grid (shares, slices): CTA k ranks block rows [k share_rows, (k + 1)
// share_rows) (stages 0-4), then the last CTA of the slice to finish (a ticket after a fence, so no CTA waits for
// another) selects for the slice (stages 5-8):
//   0. the logits of its rows (share_logits), stored; its own threads read them back in stages 1-3;
//   1. per row its maximum logit (a warp per row; stored in `rowmax`), and the share of pool_kernel's non-finite
//      block flags (§2.7) counted in the slice histogram's flag word;
//   2. per pair its rank value: ordered score bits of λ − row max (as rank_value; 0 for a non-candidate: no score
//      maps to 0, since ordered_bits(x) = 0 needs x's bits all set, a NaN that arithmetic never makes) under the
//      priority; radix pass 0's histogram of them, added into the slice's (integers: any order gives the counts);
//   3. a counting sort of the share's entries by pass-0 digit, descending, into its run of `keys`, and per digit d
//      the entries with a digit >= d (`bucket_end`, when the slice has several shares): the entries at or above
//      any digit are a prefix of the run;
//   4. the ticket;
//   5. the last CTA: the pick of pass 0 from the slice's histogram (the candidates, the flag, the cases that need
//      no search: budget 0, a poisoned slice, at least the candidates), then passes 1 and 2 over the only entries
//      that can matter, those at or above the picked digit (the budget's plus the digit's own), from the runs;
//   6. the refined pairs as bit masks of the slice's pairs: value > T, and the ties (value = T) in a second mask;
//   7. the first t ties in flat order (row-major mask words, a prefix of their counts) moved into the first;
//   8. per row its count, the CSR offsets (a scan over the rows), and the columns from the mask words (a warp per
//      row, a word per lane, positions by a prefix over the lanes).
// The entries' order within a digit's run depends on the atomics, but every stage after the sort uses them as a
// set (counts, masks), so T_1 and the workspace it is read from are bitwise reproducible.
template <class Cfg>
// A minimum of one CTA per SM: the launch is one wave by construction (shares x slices <= kSmallFill when the slices
// allow), and without the minimum ptxas held the one-CTA kernel this replaced to 40 registers and spilled (48 now).
__global__ void __launch_bounds__(kSmallThreads, 1) level1_small_select_kernel(Params p) {
  constexpr int per = kHistBins / kSmallThreads;  // histogram bins per thread in the scans
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int tid = threadIdx.x, lane = tid % 32;
  const int32_t nq = lv.nq, nk = lv.nk, share = int32_t(blockIdx.x);
  const int32_t r0 = share * lv.share_rows, r1 = r0 + lv.share_rows < nq ? r0 + lv.share_rows : nq;
  const float* logits = at<float>(p, lv.logits) + slice * nq * nk;
  uint64_t* entries = at<uint64_t>(p, lv.keys) + slice * nq * nk;
  uint32_t* bucket_end = at<uint32_t>(p, lv.bucket_end) + slice * lv.shares * kHistBins;
  uint32_t* global = at<uint32_t>(p, lv.small_hist) + slice * kHistWords;  // pass 0's histogram and flag word
  uint32_t* ticket = at<uint32_t>(p, lv.ticket) + slice;
  __shared__ uint32_t hist[kHistBins];
  __shared__ uint32_t aux[kHistBins];  // the share's cursors per digit; the last CTA's masks and rows
  __shared__ float rmax[kSmallRows];   // the share's row maxima
  __shared__ uint32_t warp_sum[kSmallWarps];
  __shared__ uint32_t picked[kPasses][2];  // per pass the pick's digit and the values above its bin
  __shared__ uint32_t gathered[kSmallFill];  // the last CTA: per share, its entries at or above the picked digit
  __shared__ int last;

  // 0. The logits. No barrier after it: stages 1-3 visit the pairs as it stores them (warp per row, lane per
  // 4 consecutive columns of every 128: for_each_pair), so each thread reads back only its own stores.
  share_logits<Cfg>(p, slice, r0, r1);

  // 1. The row maxima (the multi-CTA sweep's comparison: the same value in any order), the block flags.
  for (int32_t r = r0 + tid / 32; r < r1; r += kSmallWarps) {
    float m = -INFINITY;
    for (int32_t c0 = kShareMicro * lane; c0 < nk; c0 += kShareCols)
      for (int32_t c = c0; c < c0 + kShareMicro && c < nk; ++c) {
        const float x = logits[r * nk + c];
        m = x > m ? x : m;
      }
    for (int o = 16; o > 0; o /= 2) {
      const float y = __shfl_xor_sync(0xffffffffu, m, o);
      m = y > m ? y : m;
    }
    if (lane == 0) {
      rmax[r - r0] = m;
      at<float>(p, lv.rowmax)[slice * nq + r] = m;
    }
  }
  for (int i = tid; i < kHistBins; i += kSmallThreads) hist[i] = 0;
  const int32_t blocks = nq + nk, flags = (blocks + lv.shares - 1) / lv.shares;
  const int32_t f0 = share * flags, f1 = f0 + flags < blocks ? f0 + flags : blocks;
  const int32_t* block_bad = at<int32_t>(p, p.layout.block_bad) + slice * blocks;
  int bad = 0;
  for (int32_t i = f0 + tid; i < f1; i += kSmallThreads) bad |= block_bad[i] != 0;
  if (__syncthreads_or(bad) && tid == 0) atomicAdd(&global[kHistBins], 1u);

  // 2. The rank values and pass 0's histogram. A thread keeps those of its first kHeldPairs pairs for stage 3 in
  // registers and computes the others again there.
  const auto value = [&](int32_t r, int32_t c, int32_t e) {
    const float x = logits[e];
    return x == -INFINITY ? uint64_t(0) : small_rank(p, r, c, ordered_bits(x - rmax[r - r0]));
  };
  uint64_t held[kHeldPairs] = {};
  for_each_pair(r0, r1, nk, [&](int k, int32_t r, int32_t c, int32_t e) {
    const uint64_t v = value(r, c, e);
    if (k < kHeldPairs) held[k] = v;
    if (v != 0) atomicAdd(&hist[v >> pass_shift(0)], 1u);
  });
  __syncthreads();

  // 3. The counting sort: thread t owns bins [t per, (t + 1) per); the runs of the digits above them come first.
  uint32_t mine = 0;
  for (int i = 0; i < per; ++i) {
    const uint32_t h = hist[tid * per + i];
    mine += h;
    if (h) atomicAdd(&global[tid * per + i], h);
  }
  uint32_t end = sum_after(mine, warp_sum).after;
  for (int i = per - 1; i >= 0; --i) {
    const int d = tid * per + i;
    aux[d] = end;  // the cursor: where digit d's run starts; after the scatter, where it ends
    end += hist[d];
    if (lv.shares > 1) bucket_end[share * kHistBins + d] = end;
  }
  __syncthreads();
  uint64_t* run = entries + int64_t(r0) * nk;
  for_each_pair(r0, r1, nk, [&](int k, int32_t r, int32_t c, int32_t e) {
    const uint64_t v = k < kHeldPairs ? held[k] : value(r, c, e);
    if (v != 0) run[atomicAdd(&aux[v >> pass_shift(0)], 1u)] = v << kFlatBits | uint64_t(e);
  });

  // 4. The ticket: the fence orders this share's entries, ends and counts before it; the last CTA fences again
  // before reading the others' (data it has not read before, so no stale copy of it is cached).
  __threadfence();
  __syncthreads();
  if (tid == 0) last = atomicAdd(ticket, 1u) == uint32_t(lv.shares - 1);
  __syncthreads();
  if (!last) return;  // uniform over the CTA
  __threadfence();

  // 5. The threshold T and the ties wanted t: T_1 = {value > T} + the first t of {value = T} in flat order.
  mine = 0;
  for (int i = 0; i < per; ++i) {
    hist[tid * per + i] = global[tid * per + i];
    mine += hist[tid * per + i];
  }
  const uint32_t candidates = sum_after(mine, warp_sum).total;  // its barrier also ends the copy
  const bool poisoned = global[kHistBins] != 0;
  if (tid == 0) at<int32_t>(p, p.layout.slice_bad)[slice] = poisoned;
  // The entries that can still be refined, those with a pass-0 digit >= low (kHistBins: none): a prefix of each
  // share's run, its length from the share's run ends (a lone share's are its own cursors, never stored).
  const auto gather = [&](int32_t low) {
    for (int32_t k = tid; k < lv.shares; k += kSmallThreads)
      gathered[k] = low >= kHistBins ? 0u : lv.shares == 1 ? aux[low] : bucket_end[k * kHistBins + low];
    __syncthreads();
  };
  // Calls f(v, e) for each gathered entry: rank value v, flat index e.
  const auto for_each_entry = [&](auto f) {
    for (int32_t k = 0; k < lv.shares; ++k) {
      const uint64_t* from = entries + int64_t(k) * lv.share_rows * nk;
      for (uint32_t i = tid; i < gathered[k]; i += kSmallThreads)
        f(from[i] >> kFlatBits, int32_t(from[i] & (kSmallPairs - 1)));
    }
  };
  uint64_t threshold = 0, ties = 0;
  if (poisoned || lv.budget == 0) {
    threshold = ~uint64_t(0);  // nothing exceeds it
    gather(kHistBins);
  } else if (uint64_t(lv.budget) < candidates) {
    // Pass 0's histogram is the copy above; passes 1 and 2 (11-bit digits) count into the first and the second
    // half of its bins, cleared once pass 0's pick has read them, and each pass has its own `picked`, so no
    // barrier is needed for a reuse.
    uint32_t rest = uint32_t(lv.budget);
    for (int pass = 0; pass < kPasses; ++pass) {
      const int shift = pass_shift(pass), high = shift + pass_bits(pass);
      uint32_t* h = hist + (pass == 2 ? kHistBins / 2 : 0);
      if (pass > 0)
        for_each_entry([&](uint64_t v, int32_t) {
          if ((v >> high) == (threshold >> high)) atomicAdd(&h[(v >> shift) & ((1u << pass_bits(pass)) - 1u)], 1u);
        });
      __syncthreads();  // the histogram is complete (pass 0: the last reads of warp_sum are over)
      // The pick: thread t sums bins [t chunk, (t + 1) chunk); the one whose chunk holds the rest-th largest value
      // (counted from the top) walks it down to the digit.
      const int chunk = per >> (pass > 0);  // 11-bit digits: half the bins
      uint32_t sum = 0;
      for (int i = 0; i < chunk; ++i) sum += h[tid * chunk + i];
      uint32_t above = sum_after(sum, warp_sum).after;
      if (above < rest && above + sum >= rest) {
        int digit = tid * chunk + chunk - 1;
        while (above + h[digit] < rest) above += h[digit--];
        picked[pass][0] = uint32_t(digit);
        picked[pass][1] = above;
      }
      __syncthreads();
      threshold |= uint64_t(picked[pass][0]) << shift;
      rest -= picked[pass][1];
      if (pass == 0) {
        for (int i = tid; i < kHistBins; i += kSmallThreads) hist[i] = 0;
        gather(int32_t(threshold >> shift));  // its barrier ends the clearing
      }
    }
    ties = rest;
  } else {  // every candidate: value > 0, from digit 0 on
    gather(0);
  }

  // 6. The masks: bit c % 32 of word r words + c / 32.
  const int32_t words = (nk + 31) / 32, all_words = nq * words;
  uint32_t* taken = aux;
  uint32_t* tied = aux + kSelectMaskWords;
  uint32_t* rows = aux + 2 * kSelectMaskWords;
  for (int32_t i = tid; i < all_words; i += kSmallThreads) taken[i] = tied[i] = 0;
  __syncthreads();
  for_each_entry([&](uint64_t v, int32_t e) {
    const int32_t r = e / nk, c = e % nk;
    if (v > threshold) atomicOr(&taken[r * words + c / 32], 1u << (c % 32));
    else if (v == threshold) atomicOr(&tied[r * words + c / 32], 1u << (c % 32));
  });
  __syncthreads();

  // 7. The tie quota: thread t takes words [t wk, (t + 1) wk), the ties in the words before counted first.
  const int32_t wk = (all_words + kSmallThreads - 1) / kSmallThreads, w0 = tid * wk < all_words ? tid * wk : all_words,
                w1 = w0 + wk < all_words ? w0 + wk : all_words;
  uint32_t n_ties = 0;
  for (int32_t w = w0; w < w1; ++w) n_ties += uint32_t(__popc(tied[w]));
  const Sums tie_sums = sum_after(n_ties, warp_sum);
  uint64_t rank = tie_sums.total - tie_sums.after - n_ties;  // ties before word w0
  for (int32_t w = w0; w < w1 && rank < ties; ++w)
    for (uint32_t t = tied[w]; t != 0 && rank < ties; t &= t - 1, ++rank) taken[w] |= t & (~t + 1u);
  __syncthreads();

  // 8. The counts per row, the CSR offsets (thread t takes rows [t k, t k + k), after the threads before), the
  // columns.
  for (int32_t r = tid; r < nq; r += kSmallThreads) {
    uint32_t n = 0;
    for (int32_t j = 0; j < words; ++j) n += uint32_t(__popc(taken[r * words + j]));
    rows[r] = n;
  }
  __syncthreads();
  const int32_t k = (nq + kSmallThreads - 1) / kSmallThreads, lo = tid * k < nq ? tid * k : nq,
                hi = lo + k < nq ? lo + k : nq;
  uint32_t a = 0;
  for (int32_t r = lo; r < hi; ++r) a += rows[r];
  const Sums row_sums = sum_after(a, warp_sum);
  a = row_sums.total - row_sums.after - a;  // in the rows before lo
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (nq + 1);
  for (int32_t r = lo; r < hi; ++r) {
    const uint32_t n = rows[r];
    rows[r] = a;
    rowptr[r] = int32_t(a);
    a += n;
  }
  if (tid == 0) {
    rowptr[nq] = int32_t(row_sums.total);
    at<SelectState>(p, lv.state)[slice * kPasses + kPasses - 1] = SelectState{threshold, ties, 1, candidates};
  }
  __syncthreads();
  int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  for (int32_t r = tid / 32; r < nq; r += kSmallWarps) {
    uint32_t written = rows[r];
    for (int32_t j0 = 0; j0 < words; j0 += 32) {
      const int32_t j = j0 + lane;
      uint32_t bits = j < words ? taken[r * words + j] : 0u;
      const uint32_t n = uint32_t(__popc(bits));
      uint32_t upto = n;  // over lanes 0 .. lane
      for (int o = 1; o < 32; o *= 2) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, upto, o);
        if (lane >= o) upto += y;
      }
      for (uint32_t pos = written + upto - n; bits != 0; bits &= bits - 1, ++pos) col[pos] = j * 32 + __ffs(int(bits)) - 1;
      written += __shfl_sync(0xffffffffu, upto, 31);
    }
  }
}

// Stage 2b (§2.5, level l >= 2): the candidates of level-l row r are the children, in row r, of the refined
// pairs of its parent row. Their key slots are laid out so that slot order is flat-index order (docs/kernels.md,
// "Selection"): row r's candidates are one contiguous range, for the row maximum. Two passes over the row: the
// pooled logits (kept in the key slots meanwhile), then, knowing the row maximum, the keys. Grid
// (nq_{l-1} * rho, slices): every slot of the level is written.
inline constexpr int kRowThreads = 128;
template <class Cfg>
__global__ void __launch_bounds__(kRowThreads) refine_keys_kernel(Params p, int li) {
  constexpr int D = Cfg::dim;
  const Level& lv = p.layout.level[li];
  const Level& up = p.layout.level[li - 1];
  const int32_t rho = up.side / lv.side;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const int32_t r = blockIdx.x, parent = r / rho, tr = r % rho;
  const int32_t* rowptr = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
  const int32_t* up_col = at<int32_t>(p, up.col) + slice * up.cap;
  const int32_t start = rowptr[parent], n = rowptr[parent + 1] - start, count = rho * n;
  const bool row_real = r < lv.nq && at<float>(p, lv.qcount)[int64_t(b) * lv.nq + r] > 0.f;
  const int64_t base = int64_t(rho) * rho * start + int64_t(tr) * rho * n;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  const float* kmean = at<float>(p, lv.kmean) + slice * lv.nk * D;
  uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots + base;
  __shared__ float qbar[D];
  __shared__ float scratch[kRowThreads / 32];
  // Under causal attention (§9.3) a future child is no candidate (key 0) and a crossing one is forced (no score,
  // no part in the row maximum); a poisoned row (§9.5) ranks none of its visible children.
  auto column = [&](int32_t u) {  // the child's key-block column, -1 when the pair is inactive or future
    const int32_t c = up_col[start + u / rho] * rho + u % rho;
    return c < lv.nk && kcount[c] > 0.f && pair_place(p, lv.side, r, c) != order::kFuture ? c : -1;
  };
  const bool ranked = row_real && r * lv.side < poisoned_from(p, slice, r * lv.side, first_bad_key(p, slice));
  auto scored = [&](int32_t c) { return ranked && c >= 0 && pair_place(p, lv.side, r, c) == order::kVisible; };
  if (row_real)
    for (int d = threadIdx.x; d < D; d += blockDim.x) qbar[d] = at<float>(p, lv.qmean)[(slice * lv.nq + r) * D + d];
  __syncthreads();
  float row_max = -INFINITY;
  for (int32_t u = threadIdx.x; u < count; u += blockDim.x) {
    const int32_t c = column(u);
    const float logit = scored(c) ? p.scale * dot<D>(qbar, kmean + int64_t(c) * D) : -INFINITY;
    keys[u] = bits_of(logit);
    row_max = logit > row_max ? logit : row_max;
  }
  row_max = block_max(row_max, scratch);
  for (int32_t u = threadIdx.x; u < count; u += blockDim.x) {
    const int32_t c = row_real ? column(u) : -1;
    keys[u] = c < 0 ? 0
              : scored(c) ? slot_key(float_of(uint32_t(keys[u])) - row_max, base + u)
              : pair_place(p, lv.side, r, c) == order::kCrossing ? forced_key(base + u)
                                                                  : 0;
  }
}

// Stage 2c (§2.4, level l >= 2, global policy): T_l = the top min(budget_l, candidates) keys of the slice, by the
// level-1 radix select spread over the GPU. The slots in use (rho^2 per pair of T_{l-1}) are cut into chunks of
// lv.chunk consecutive slots, one CTA each: grid (lv.chunks, slices), sized for the capacity, so a CTA past the
// slots in use returns at once (CTA 0 always runs: it stores the picks). The rank value of a key is its score
// (priority 0 below level 1) in the 34-bit form of level 1, so the same three histograms, picks (pick_state) and
// settled cases apply; the tie-break by flat index is slot order. Then per chunk the keys above the threshold and
// the ties (level_count_kernel), and the columns written in slot order from each chunk's offset
// (level_write_kernel): a fixed-order result, bitwise reproducible and the same for any chunk size.
struct ChildSlots {
  const int32_t* up_row;  // T_{l-1}'s row offsets and columns, of this slice
  const int32_t* up_col;
  int32_t up_nq, nq, rho;
  __device__ ChildSlots(const Params& p, int li, int64_t slice) {
    const Level& lv = p.layout.level[li];
    const Level& up = p.layout.level[li - 1];
    up_row = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
    up_col = at<int32_t>(p, up.col) + slice * up.cap;
    up_nq = up.nq;
    nq = lv.nq;
    rho = up.side / lv.side;
  }
  __device__ int64_t used() const { return int64_t(rho) * rho * up_row[up_nq]; }
  // Row r's first slot (refine_keys_kernel's layout); for r = nq the slots in use.
  __device__ int64_t first(int32_t r) const {
    if (r >= nq) return used();
    const int32_t start = up_row[r / rho], n = up_row[r / rho + 1] - start;
    return int64_t(rho) * rho * start + int64_t(r % rho) * rho * n;
  }
  // The key-block column of slot s: its parent row is the last whose slot range starts at or before s.
  __device__ int32_t column(int64_t s) const {
    int32_t lo = 0, hi = up_nq;
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo + 1) / 2;
      if (int64_t(rho) * rho * up_row[mid] <= s) lo = mid; else hi = mid - 1;
    }
    // Within the parent row's rho^2 n slots (< 2^31): 32-bit arithmetic (a 64-bit division is a call, with a
    // stack frame and a spill on sm_90).
    const int32_t start = up_row[lo], n = up_row[lo + 1] - start;
    const int32_t u = int32_t(s - int64_t(rho) * rho * start) % (rho * n);
    return up_col[start + u / rho] * rho + u % rho;
  }
};

// A key's rank value: its 32 score bits (0 for a non-candidate, which the kernels skip by key == 0).
__device__ inline uint64_t key_value(uint64_t key) { return key >> kSlotBits & 0xffffffffu; }

// The slots [begin, end) of this CTA's chunk (empty past the slots in use).
struct Chunk {
  int64_t begin, end;
};
__device__ inline Chunk chunk_of(const Level& lv, const ChildSlots& slots) {
  const int64_t begin = int64_t(blockIdx.x) * lv.chunk, used = slots.used();
  return Chunk{begin, begin + lv.chunk < used ? begin + lv.chunk : used};
}

// Radix pass `pass` of level li: after the pick of the pass before, the histogram of the next digit of the chunk's
// values that match the digits found so far, added into the slice's (integers: any order gives the same counts).
static_assert(kSelectThreads == kScanThreads, "pick_state scans with the CTA's threads");
template <class Cfg>
__global__ void __launch_bounds__(kSelectThreads) level_rank_kernel(Params p, int li, int pass) {
  const Level& lv = p.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const ChildSlots slots(p, li, slice);
  const Chunk ch = chunk_of(lv, slots);
  if (blockIdx.x > 0 && ch.begin >= ch.end) return;  // uniform over the CTA
  const SelectState st = pass == 0 ? SelectState{0, 0, 0, 0} : pick_state<Cfg>(p, slice, pass - 1, li);
  if (st.done) return;
  const uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots;
  uint64_t* global = at<uint64_t>(p, lv.hist) + (slice * kPasses + pass) * kHistWords;
  __shared__ uint32_t hist[kHistBins];
  const int tid = threadIdx.x;
  for (int i = tid; i < kHistBins; i += blockDim.x) hist[i] = 0;
  const int shift = pass_shift(pass), high = shift + pass_bits(pass);
  const uint64_t digit_mask = (uint64_t(1) << pass_bits(pass)) - 1;
  __syncthreads();
  for (int64_t s = ch.begin + tid; s < ch.end; s += blockDim.x) {
    const uint64_t key = keys[s], v = key_value(key);
    if (key != 0 && (v >> high) == (st.threshold >> high)) atomicAdd(&hist[(v >> shift) & digit_mask], 1u);
  }
  __syncthreads();
  for (int i = tid; i < (1 << pass_bits(pass)); i += blockDim.x)
    if (hist[i]) atomicAdd(reinterpret_cast<unsigned long long*>(&global[i]), (unsigned long long)hist[i]);
}

// After the last pick: per chunk, the keys above the threshold and the ties (lv.chunkcount).
template <class Cfg>
__global__ void __launch_bounds__(kSelectThreads) level_count_kernel(Params p, int li) {
  const Level& lv = p.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const ChildSlots slots(p, li, slice);
  const Chunk ch = chunk_of(lv, slots);
  if (blockIdx.x > 0 && ch.begin >= ch.end) return;  // uniform over the CTA
  const SelectState st = pick_state<Cfg>(p, slice, kPasses - 1, li);
  const uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots;
  __shared__ uint32_t count[2];
  if (threadIdx.x == 0) count[0] = count[1] = 0;
  __syncthreads();
  uint32_t above = 0, ties = 0;
  for (int64_t s = ch.begin + threadIdx.x; s < ch.end; s += blockDim.x) {
    const uint64_t key = keys[s], v = key_value(key);
    above += key != 0 && v > st.threshold;
    ties += key != 0 && v == st.threshold;
  }
  atomicAdd(&count[0], above);
  atomicAdd(&count[1], ties);
  __syncthreads();
  uint32_t* out = at<uint32_t>(p, lv.chunkcount) + (slice * lv.chunks + blockIdx.x) * 2;
  if (threadIdx.x < 2) out[threadIdx.x] = count[threadIdx.x];
}

// The exclusive prefix of `flag` over the CTA's threads in thread order, and the CTA's total; `warp_total`
// holds kSelectThreads / 32 words. Contains barriers.
struct Prefix {
  uint32_t before, total;
};
__device__ inline Prefix block_prefix(bool flag, uint32_t* warp_total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  if (lane == 0) warp_total[warp] = __popc(ballot);
  __syncthreads();
  Prefix r{uint32_t(__popc(ballot & ((1u << lane) - 1u))), 0};
  for (int w = 0; w < kSelectThreads / 32; ++w) {
    if (w < warp) r.before += warp_total[w];
    r.total += warp_total[w];
  }
  __syncthreads();
  return r;
}

// The columns of T_l in slot order and its row offsets. A chunk's first position is (keys above the threshold in
// the chunks before) + min(ties before, quota), as level 1's segments (band_offsets); within the chunk the CTA
// takes kSelectThreads slots at a time, the tie ranks and the positions by block prefixes. The row offsets: for
// each row whose first slot lies in the chunk (the last chunk in use also the rows from its end on, and nq), the
// chosen slots before it.
template <class Cfg>
__global__ void __launch_bounds__(kSelectThreads) level_write_kernel(Params p, int li) {
  const Level& lv = p.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const ChildSlots slots(p, li, slice);
  const Chunk ch = chunk_of(lv, slots);
  const bool last = ch.end == slots.used();  // the chunk holding the last slot in use, or chunk 0 when none is
  if (blockIdx.x > 0 && ch.begin >= ch.end) return;  // uniform over the CTA
  const int tid = threadIdx.x;
  const SelectState st = at<SelectState>(p, lv.state)[slice * kPasses + kPasses - 1];
  const uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots;
  const uint32_t* counts = at<uint32_t>(p, lv.chunkcount) + slice * lv.chunks * 2;
  int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  __shared__ unsigned long long before[2];     // above and ties in the chunks before
  __shared__ uint32_t chosen[kSelectChunk];    // chosen slots of the chunk before each of its slots
  __shared__ uint32_t warp_total[kSelectThreads / 32];
  __shared__ int32_t rows[2];                  // the rows whose offsets this chunk writes
  if (tid < 2) before[tid] = 0;
  __syncthreads();
  unsigned long long above = 0, ties = 0;
  for (int32_t c = tid; c < int32_t(blockIdx.x); c += blockDim.x) {
    above += counts[2 * c];
    ties += counts[2 * c + 1];
  }
  atomicAdd(&before[0], above);
  atomicAdd(&before[1], ties);
  __syncthreads();
  const uint64_t offset = before[0] + (before[1] < st.ties ? before[1] : st.ties);
  uint64_t tie_base = before[1];
  uint32_t written = 0;
  for (int64_t s0 = ch.begin; s0 < ch.end; s0 += blockDim.x) {
    const int64_t s = s0 + tid;
    const uint64_t key = s < ch.end ? keys[s] : 0, v = key_value(key);
    const Prefix tie = block_prefix(key != 0 && v == st.threshold, warp_total);
    const bool take = key != 0 && (v > st.threshold || (v == st.threshold && tie_base + tie.before < st.ties));
    const Prefix pos = block_prefix(take, warp_total);
    if (s < ch.end) chosen[s - ch.begin] = written + pos.before;
    if (take) col[offset + written + pos.before] = slots.column(s);
    written += pos.total;
    tie_base += tie.total;
  }
  if (tid < 2) {  // rows[0]: the first row starting at or after the chunk's start; rows[1]: likewise its end
    const int64_t bound = tid == 0 ? ch.begin : last ? INT64_MAX : ch.end;
    int32_t lo = 0, hi = lv.nq + 1;
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (slots.first(mid) < bound) lo = mid + 1; else hi = mid;
    }
    rows[tid] = lo;
  }
  __syncthreads();
  for (int32_t r = rows[0] + tid; r < rows[1]; r += blockDim.x) {
    const int64_t f = slots.first(r);
    rowptr[r] = int32_t(offset + (f < ch.end ? chosen[f - ch.begin] : written));
  }
}

// Stage 2c under policy row (§10, level l >= 2): every block row of the level keeps its own top
// min(budget_l, candidates) keys. One CTA per slice (grid (slices)), one warp per row at a time: first the counts,
// turned into the CSR row offsets by a scan over the rows; then per row a radix select of 8 bits per pass over its
// contiguous slot range (refine_keys_kernel) finds its take-th largest key (keys are distinct, so exactly `take`
// keys are >= it), and the chosen slots are written in slot order (= column order) as key-block columns.
// Exclusive prefix sum over the CTA (kSelectThreads values), in a fixed order; returns the CTA total too.
__device__ inline uint64_t block_exclusive_scan(uint64_t x, uint64_t* buf, uint64_t* total) {
  const int tid = threadIdx.x;
  buf[tid] = x;
  __syncthreads();
  for (int o = 1; o < kSelectThreads; o *= 2) {
    const uint64_t add = tid >= o ? buf[tid - o] : 0;
    __syncthreads();
    buf[tid] += add;
    __syncthreads();
  }
  const uint64_t inclusive = buf[tid];
  *total = buf[kSelectThreads - 1];
  __syncthreads();
  return inclusive - x;
}

template <class Cfg>
__global__ void __launch_bounds__(kSelectThreads) select_row_kernel(Params p, int li) {
  constexpr int kWarps = kSelectThreads / 32;
  const Level& lv = p.layout.level[li];
  const Level& up = p.layout.level[li - 1];
  const int32_t rho = up.side / lv.side;
  const int64_t slice = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots;
  int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  const int32_t* up_row = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
  const int32_t* up_col = at<int32_t>(p, up.col) + slice * up.cap;
  __shared__ uint32_t hist[kWarps][256];
  __shared__ uint64_t buf[kSelectThreads];
  // Row r's candidates: the rho * n slots from `first` (n refined pairs in its parent row, from `start`).
  struct Range {
    int64_t first;
    int32_t start, count;
  };
  const auto range = [&](int32_t r) {
    const int32_t start = up_row[r / rho], n = up_row[r / rho + 1] - start;
    return Range{int64_t(rho) * rho * start + int64_t(r % rho) * rho * n, start, rho * n};
  };
  // A row takes its forced keys (the crossing pairs of causal attention, §9.3) besides min(budget, candidates).
  for (int32_t r = warp; r < lv.nq; r += kWarps) {
    const Range g = range(r);
    uint32_t n = 0, forced = 0;
    for (int32_t u = lane; u < g.count; u += 32) {
      const uint64_t key = keys[g.first + u];
      n += key != 0 && !is_forced(key);
      forced += key != 0 && is_forced(key);
    }
    for (int o = 16; o > 0; o /= 2) {
      n += __shfl_xor_sync(0xffffffffu, n, o);
      forced += __shfl_xor_sync(0xffffffffu, forced, o);
    }
    if (lane == 0) rowptr[r] = int32_t(forced + (uint64_t(n) < uint64_t(lv.budget) ? n : uint32_t(lv.budget)));
  }
  __syncthreads();
  uint64_t before = 0;
  for (int32_t r0 = 0; r0 < lv.nq; r0 += kSelectThreads) {
    const int32_t r = r0 + tid;
    uint64_t total;
    const uint64_t offset = before + block_exclusive_scan(r < lv.nq ? uint64_t(rowptr[r]) : 0, buf, &total);
    if (r < lv.nq) rowptr[r] = int32_t(offset);
    before += total;
  }
  if (tid == 0) rowptr[lv.nq] = int32_t(before);
  __syncthreads();
  for (int32_t r = warp; r < lv.nq; r += kWarps) {
    const Range g = range(r);
    const int32_t begin = rowptr[r], take = rowptr[r + 1] - begin;
    if (take == 0) continue;  // uniform over the warp
    uint64_t prefix = 0, prefix_mask = 0;
    uint32_t rest = uint32_t(take);
    for (int shift = 56; shift >= 0; shift -= 8) {
      for (int i = lane; i < 256; i += 32) hist[warp][i] = 0;
      __syncwarp();
      for (int32_t u = lane; u < g.count; u += 32) {
        const uint64_t key = keys[g.first + u];
        if (key != 0 && (key & prefix_mask) == prefix) atomicAdd(&hist[warp][(key >> shift) & 255u], 1u);
      }
      __syncwarp();
      uint32_t digit = 255, above = 0;
      if (lane == 0)
        for (; digit > 0 && above + hist[warp][digit] < rest; --digit) above += hist[warp][digit];
      digit = __shfl_sync(0xffffffffu, digit, 0);
      above = __shfl_sync(0xffffffffu, above, 0);
      prefix |= uint64_t(digit) << shift;
      prefix_mask |= uint64_t(255) << shift;
      rest -= above;
      __syncwarp();
    }
    // prefix is the take-th largest key of the row: the chosen ones are the keys >= it.
    int32_t written = 0;
    for (int32_t u0 = 0; u0 < g.count; u0 += 32) {
      const int32_t u = u0 + lane;
      const uint64_t key = u < g.count ? keys[g.first + u] : 0;
      const bool chosen = key != 0 && key >= prefix;
      const unsigned ballot = __ballot_sync(0xffffffffu, chosen);
      if (chosen) col[begin + written + __popc(ballot & ((1u << lane) - 1u))] = up_col[g.start + u / rho] * rho + u % rho;
      written += __popc(ballot);
    }
  }
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
