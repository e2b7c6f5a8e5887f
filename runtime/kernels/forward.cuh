// runtime/kernels/forward.cuh: the MRA forward kernels (docs/semantics.md §2), one template per stage.
//
// Every generated file generated/<name>.cu includes this header, names its Config and defines its entry; it is
// compiled by nvcc for the CUDA backend and, unchanged, as C++ against runtime/simt/simt.h for the emulated
// backend (both in generated/CMakeLists.txt). The pipeline, per (batch, head) slice:
//   pool_kernel         masked means of q and k, sums of v, token counts, per block at every coarse level
//   coarse_max_kernel   level 1: the pooled logits q̄·k̄ᵀ as a tiled f32 GEMM (recomputed by every level-1
//                       pass below, never stored) -> the maximum logit of every block row
//   coarse_hist_kernel  level 1, 3 radix passes: histogram of the next digit of the rank value
//   select_pick_kernel  ... and the digit of the budget-th largest value (one CTA per slice)
//   coarse_count_kernel level 1: per row, the pairs above the threshold and the ties
//   select_rows_kernel  level 1: CSR row offsets of T_1 and the tie quota's per-row base
//   coarse_write_kernel level 1: the columns of T_1, row by row in column order
//   refine_keys_kernel  level l >= 2: pooled logits of the children of T_{l-1} -> 64-bit keys
//   select_kernel       level l >= 2: the top budget_l keys by radix select -> T_l as CSR
//   attend_kernel       per query tile: coarse components from pooled V sums, then the exact entries of the
//                       refined key blocks streamed through shared memory with an online softmax
// Accumulation is f32 everywhere; q, k, v and the output are stored as the configuration's dtype.
// docs/kernels.md explains the key encoding, the workspace and the tuning parameters.
#pragma once

#include "simt/simt.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/entry.h"
#include "kernels/layout.h"

// The two builds of one generated file must not share symbols, since a program may link both backends.
#if defined(__CUDACC__)
#define MRA_KERNEL_NAMESPACE cuda
#define MRA_KERNEL_ENTRY(name) name
#else
#define MRA_KERNEL_NAMESPACE emulated
#define MRA_KERNEL_ENTRY(name) name##_emulated
#endif

// Loops over per-thread register arrays must be unrolled, or the arrays move to local memory.
#if defined(__CUDACC__)
#define MRA_UNROLL _Pragma("unroll")
#else
#define MRA_UNROLL _Pragma("GCC unroll 16")
#endif

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

template <int... Sides>
struct Resolutions {
  static constexpr int levels = sizeof...(Sides);
  static constexpr int side[levels] = {Sides...};
};

template <int Threads, int QueryRows, int KeyTile, int VectorWidth, int MinCtasPerSm>
struct Tuning {
  static constexpr int threads = Threads;
  static constexpr int query_rows = QueryRows;
  static constexpr int key_tile = KeyTile;
  static constexpr int vector_width = VectorWidth;
  static constexpr int min_ctas_per_sm = MinCtasPerSm;
};

template <class Res, int Dim, class Storage, class Tune>
struct Config {
  using T = Storage;
  static constexpr int dim = Dim;
  static constexpr int levels = Res::levels;
  static constexpr int steps = levels - 1;
  static constexpr int finest = Res::side[levels - 2];  // s_{L-1}: the side of the exact blocks
  static constexpr int threads = Tune::threads;
  static constexpr int rows = Tune::query_rows;
  static constexpr int tile = Tune::key_tile;
  static constexpr int vec = Tune::vector_width;
  static constexpr int min_ctas = Tune::min_ctas_per_sm;
  static constexpr int acc_per_thread = rows * dim / threads;
  static_assert(levels >= 2 && levels <= MRA_MAX_LEVELS && Res::side[levels - 1] == 1);
  static_assert(finest % rows == 0, "a query tile lies inside one finest block");
  static_assert(rows * dim % threads == 0 && threads % 32 == 0 && dim % vec == 0);
  static_assert(dim <= 1024, "pool_kernel runs one thread per feature");
};

// Everything a kernel reads: sizes, pointers, the workspace layout. Passed by value.
struct Params {
  int32_t batch, heads, nq, nk;
  float scale;
  int32_t full, prior_first, prior_diagonal;
  const void* q;
  const void* k;
  const void* v;
  const uint8_t* qmask;
  const uint8_t* kmask;
  void* out;
  unsigned char* ws;
  Layout layout;
  // Kernels with one slice per grid row see slices slice0 + blockIdx.y: CUDA caps gridDim.y at 65535, so a
  // larger batch * heads is launched in several parts (forward()).
  int32_t slice0;
};

// ---------------------------------------------------------------------------------------------------------
// Scalar helpers.

__host__ __device__ inline float to_float(float x) { return x; }
__host__ __device__ inline float to_float(__half x) { return __half2float(x); }
__host__ __device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__host__ __device__ inline T from_float(float x);
template <>
__host__ __device__ inline float from_float<float>(float x) { return x; }
template <>
__host__ __device__ inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__host__ __device__ inline uint32_t bits_of(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}
__host__ __device__ inline float float_of(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}
__host__ __device__ inline bool finite(float x) { return (bits_of(x) & 0x7f800000u) != 0x7f800000u; }
__host__ __device__ inline float quiet_nan() { return float_of(0x7fc00000u); }

template <class T>
__device__ inline const T* slice_rows(const void* base, int64_t slice, int32_t n, int dim) {
  return static_cast<const T*>(base) + slice * int64_t(n) * dim;
}

template <class T>
__device__ inline T* at(const Params& p, size_t offset) {
  return reinterpret_cast<T*>(p.ws + offset);
}

__device__ inline bool is_real(const uint8_t* mask, int32_t b, int32_t n, int32_t i) {
  return mask == nullptr || mask[int64_t(b) * n + i] != 0;
}

// First position in sorted a[lo, hi) holding a value >= x.
__device__ inline int32_t lower_bound(const int32_t* a, int32_t lo, int32_t hi, int32_t x) {
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

template <int Dim>
__device__ inline float dot(const float* a, const float* b) {
  float s = 0.f;
  for (int d = 0; d < Dim; ++d) s += a[d] * b[d];
  return s;
}

// Maximum of v over the CTA. `scratch` holds blockDim.x / 32 floats; contains the barriers it needs.
__device__ inline float block_max(float v, float* scratch) {
  for (int o = 16; o > 0; o /= 2) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  const int warps = blockDim.x / 32;
  __syncthreads();
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float m = scratch[0];
  for (int w = 1; w < warps; ++w) m = scratch[w] > m ? scratch[w] : m;
  return m;
}

// Loads `Vec` consecutive elements (one aligned vector access) and widens them to f32.
template <class T, int Vec>
struct alignas(sizeof(T) * Vec) Pack {
  T v[Vec];
};
template <class T, int Vec>
__device__ inline void load_widen(const T* src, float* dst) {
  const Pack<T, Vec> pk = *reinterpret_cast<const Pack<T, Vec>*>(src);
  for (int i = 0; i < Vec; ++i) dst[i] = to_float(pk.v[i]);
}

// ---------------------------------------------------------------------------------------------------------
// Stage 1 (§2.2): pooling at level `li`. Grid (nq_l + nk_l, slices), Cfg::dim threads, one feature each.
// Query blocks come first, then key blocks. At level 1 the CTA also records whether its block holds a
// non-finite value in a real token (§2.7).
template <class Cfg>
__global__ void __launch_bounds__(Cfg::dim) pool_kernel(Params p, int li) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::dim;
  const Level& lv = p.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), h = int32_t(slice % p.heads);
  const bool is_q = int32_t(blockIdx.x) < lv.nq;
  const int32_t blk = is_q ? int32_t(blockIdx.x) : int32_t(blockIdx.x) - lv.nq;
  const int32_t n = is_q ? p.nq : p.nk;
  const int32_t t0 = blk * lv.side, t1 = t0 + lv.side < n ? t0 + lv.side : n;
  const uint8_t* mask = is_q ? p.qmask : p.kmask;
  const T* x = slice_rows<T>(is_q ? p.q : p.k, slice, n, D);
  const T* vv = slice_rows<T>(p.v, slice, p.nk, D);
  const int d = threadIdx.x;

  __shared__ int any_bad;
  if (d == 0) any_bad = 0;
  __syncthreads();
  float sx = 0.f, sv = 0.f;
  int count = 0;
  bool bad = false;
  for (int32_t i = t0; i < t1; ++i) {
    if (!is_real(mask, b, n, i)) continue;
    const float a = to_float(x[int64_t(i) * D + d]);
    sx += a;
    bad |= !finite(a);
    if (!is_q) {
      const float c = to_float(vv[int64_t(i) * D + d]);
      sv += c;
      bad |= !finite(c);
    }
    ++count;
  }
  if (bad) any_bad = 1;
  const float mean = count > 0 ? sx / float(count) : 0.f;
  const int32_t nb = is_q ? lv.nq : lv.nk;
  float* means = at<float>(p, is_q ? lv.qmean : lv.kmean) + (slice * nb + blk) * D;
  means[d] = mean;
  if (!is_q) at<float>(p, lv.vsum)[(slice * nb + blk) * D + d] = sv;
  if (h == 0 && d == 0) at<float>(p, is_q ? lv.qcount : lv.kcount)[int64_t(b) * nb + blk] = float(count);
  __syncthreads();
  if (li == 0 && d == 0)
    at<int32_t>(p, p.layout.block_bad)[slice * (lv.nq + lv.nk) + blockIdx.x] = any_bad;
}

// ---------------------------------------------------------------------------------------------------------
// Selection (§2.4; docs/kernels.md, "Selection").
//
// The rank value of a candidate is priority (2 bits) above its score (32 bits) in an order-preserving unsigned
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
__host__ __device__ inline int64_t slot_of_key(uint64_t key) { return int64_t(kSlotMask - (key & kSlotMask)); }

__device__ inline int level1_priority(const Params& p, int r, int c) {
  const int half = p.prior_diagonal / 2;
  const int d = r > c ? r - c : c - r;
  return (p.prior_diagonal > 0 && d <= half) + (r < p.prior_first) + (c < p.prior_first);
}

// The level-1 radix select: 3 passes over the 34-bit rank value, 12 + 11 + 11 bits from the top.
inline constexpr int kRankBits = 34, kPasses = 3;
__host__ __device__ constexpr int pass_shift(int pass) { return pass == 0 ? 22 : pass == 1 ? 11 : 0; }
__host__ __device__ constexpr int pass_bits(int pass) { return pass == 0 ? 12 : 11; }
static_assert(pass_shift(0) + pass_bits(0) == kRankBits && (1 << pass_bits(0)) == kHistBins);

// ---------------------------------------------------------------------------------------------------------
// Stage 2a (§2.3, level 1): the pooled logits σ q̄·k̄ as a register-tiled f32 GEMM. A CTA of kGemmThreads owns
// a band of kBandRows block rows and sweeps every key-block column, kBandCols at a time; each thread holds a
// 4 x 4 tile of logits (rows ty + 16 i, columns tx + 16 j), each a sum over the features in feature order
// (as the reference and the other stages), staged kGemmK features at a time through shared memory.
// `visit(c0, logit)` is called by every thread once per column tile with its 4 x 4 logits (-inf where the
// pair is not a candidate: outside the matrix, or a block without real tokens).
inline constexpr int kGemmThreads = 256, kBandRows = 64, kBandCols = 64, kGemmK = 16, kMicro = 4;
static_assert(kGemmThreads == (kBandRows / kMicro) * (kBandCols / kMicro));

template <class Cfg, class Visit>
__device__ void coarse_sweep(const Params& p, int64_t slice, int32_t row0, Visit visit) {
  constexpr int D = Cfg::dim, W = kBandRows / kMicro;
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
  for (int32_t c0 = 0; c0 < lv.nk; c0 += kBandCols) {
    float acc[kMicro][kMicro] = {};
    for (int d0 = 0; d0 < D; d0 += kGemmK) {
      for (int e = threadIdx.x; e < kBandRows * kGemmK; e += blockDim.x) {
        const int i = e / kGemmK, d = e % kGemmK;
        qs[d][i] = row0 + i < lv.nq ? qmean[int64_t(row0 + i) * D + d0 + d] : 0.f;
        ks[d][i] = c0 + i < lv.nk ? kmean[int64_t(c0 + i) * D + d0 + d] : 0.f;
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
      for (int i = 0; i < kMicro; ++i) logit[i][j] = row_real[i] && col_real ? p.scale * acc[i][j] : -INFINITY;
    }
    visit(c0, logit);
  }
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
      f(i, j, r, c, rank_value(level1_priority(p, r, c), logit[i][j] - rmax[i]));
    }
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

// Pass 0: the maximum logit of every block row (§2.4's score is relative to it). CTA 0 of each slice also
// clears the slice's histogram and selection state for the passes that follow. Grid (bands, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_max_kernel(Params p) {
  constexpr int W = kBandRows / kMicro;
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t row0 = int32_t(blockIdx.x) * kBandRows;
  if (blockIdx.x == 0) {
    uint64_t* hist = at<uint64_t>(p, lv.hist) + slice * kHistBins;
    for (int i = threadIdx.x; i < kHistBins; i += blockDim.x) hist[i] = 0;
    if (threadIdx.x == 0) at<SelectState>(p, lv.state)[slice] = SelectState{0, 0, 0, 0};
  }
  float m[kMicro];
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) m[i] = -INFINITY;
  coarse_sweep<Cfg>(p, slice, row0, [&](int32_t, const float (&logit)[kMicro][kMicro]) {
    MRA_UNROLL
    for (int i = 0; i < kMicro; ++i)
      MRA_UNROLL
      for (int j = 0; j < kMicro; ++j) m[i] = logit[i][j] > m[i] ? logit[i][j] : m[i];
  });
  // The W threads of one row are W consecutive lanes of one warp.
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    for (int o = W / 2; o > 0; o /= 2) {
      const float x = __shfl_xor_sync(0xffffffffu, m[i], o);
      m[i] = x > m[i] ? x : m[i];
    }
    const int32_t r = row0 + int(threadIdx.x) / W + W * i;
    if (int(threadIdx.x) % W == 0 && r < lv.nq) at<float>(p, lv.rowmax)[slice * lv.nq + r] = m[i];
  }
}

// Radix pass `pass`: the histogram of the next digit of the rank values that match the digits found so far.
// Counts are integers, so the order of the atomic additions does not matter. Grid (bands, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_hist_kernel(Params p, int pass) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const SelectState st = at<SelectState>(p, lv.state)[slice];
  if (st.done) return;  // uniform over the CTA
  const int32_t row0 = int32_t(blockIdx.x) * kBandRows;
  __shared__ uint32_t hist[kHistBins];
  for (int i = threadIdx.x; i < kHistBins; i += blockDim.x) hist[i] = 0;
  float rmax[kMicro];
  load_row_max(p, slice, row0, rmax);
  const int shift = pass_shift(pass), high = shift + pass_bits(pass);
  const uint64_t digit_mask = (uint64_t(1) << pass_bits(pass)) - 1;
  __syncthreads();
  coarse_sweep<Cfg>(p, slice, row0, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    for_each_candidate(p, row0, c0, logit, rmax, [&](int, int, int32_t, int32_t, uint64_t v) {
      if ((v >> high) == (st.threshold >> high)) atomicAdd(&hist[(v >> shift) & digit_mask], 1u);
    });
  });
  __syncthreads();
  uint64_t* global = at<uint64_t>(p, lv.hist) + slice * kHistBins;
  for (int i = threadIdx.x; i < (1 << pass_bits(pass)); i += blockDim.x)
    if (hist[i]) atomicAdd(reinterpret_cast<unsigned long long*>(&global[i]), (unsigned long long)hist[i]);
}

// After radix pass `pass`: the digit of the budget-th largest rank value (one CTA of kScanThreads per slice,
// grid (1, slices)). Pass 0 also folds pool_kernel's block flags into the slice's non-finite flag (a poisoned
// slice refines nothing, §2.7), counts the candidates and settles the cases that need no search (budget 0,
// budget >= candidates). A digit whose whole bin is wanted settles the threshold early, and the remaining passes
// return at once. Clears the histogram for the next pass.
inline constexpr int kScanThreads = 256;
template <class Cfg>
__global__ void __launch_bounds__(kScanThreads) select_pick_kernel(Params p, int pass) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int tid = threadIdx.x;
  constexpr int per = kHistBins / kScanThreads;
  uint64_t* hist = at<uint64_t>(p, lv.hist) + slice * kHistBins;
  SelectState* state = at<SelectState>(p, lv.state) + slice;
  __shared__ uint64_t part[kScanThreads];
  __shared__ int any_bad;
  const SelectState st = *state;
  if (st.done) return;
  if (pass == 0) {
    if (tid == 0) any_bad = 0;
    __syncthreads();
    const int32_t blocks = lv.nq + lv.nk;
    const int32_t* block_bad = at<int32_t>(p, p.layout.block_bad) + slice * blocks;
    for (int32_t i = tid; i < blocks; i += blockDim.x)
      if (block_bad[i]) any_bad = 1;
  }
  uint64_t mine = 0;
  for (int i = 0; i < per; ++i) mine += hist[tid * per + i];
  part[tid] = mine;
  __syncthreads();
  if (tid == 0) {
    SelectState s = st;
    bool search = true;
    if (pass == 0) {
      uint64_t total = 0;
      for (int t = 0; t < kScanThreads; ++t) total += part[t];
      s.candidates = total;
      at<int32_t>(p, p.layout.slice_bad)[slice] = any_bad;
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
    *state = s;
  }
  __syncthreads();
  for (int i = tid; i < kHistBins; i += blockDim.x) hist[i] = 0;
}

// The refined pairs of one band: rank value above the threshold, or equal to it within the tie quota.
// Pass 1 (`count`): per row, how many are above and how many tie. Grid (bands, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_count_kernel(Params p) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const SelectState st = at<SelectState>(p, lv.state)[slice];
  const int32_t row0 = int32_t(blockIdx.x) * kBandRows;
  __shared__ uint32_t above[kBandRows], ties[kBandRows];
  for (int i = threadIdx.x; i < kBandRows; i += blockDim.x) above[i] = ties[i] = 0;
  float rmax[kMicro];
  load_row_max(p, slice, row0, rmax);
  __syncthreads();
  coarse_sweep<Cfg>(p, slice, row0, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    for_each_candidate(p, row0, c0, logit, rmax, [&](int, int, int32_t r, int32_t, uint64_t v) {
      if (v > st.threshold) atomicAdd(&above[r - row0], 1u);
      else if (v == st.threshold) atomicAdd(&ties[r - row0], 1u);
    });
  });
  __syncthreads();
  uint32_t* rowcount = at<uint32_t>(p, lv.rowcount) + slice * lv.nq * 2;
  for (int i = threadIdx.x; i < kBandRows && row0 + i < lv.nq; i += blockDim.x) {
    rowcount[2 * (row0 + i)] = above[i];
    rowcount[2 * (row0 + i) + 1] = ties[i];
  }
}

// Exclusive prefix sum over the CTA (kScanThreads values), in a fixed order; returns the CTA total too.
__device__ inline uint64_t block_exclusive_scan(uint64_t x, uint64_t* buf, uint64_t* total) {
  const int tid = threadIdx.x;
  buf[tid] = x;
  __syncthreads();
  for (int o = 1; o < kScanThreads; o *= 2) {
    const uint64_t add = tid >= o ? buf[tid - o] : 0;
    __syncthreads();
    buf[tid] += add;
    __syncthreads();
  }
  const uint64_t inclusive = buf[tid];
  *total = buf[kScanThreads - 1];
  __syncthreads();
  return inclusive - x;
}

// The CSR row offsets of T_1 and each row's tie base (ties in the rows before it), from the counts.
// One CTA per slice, grid (1, slices).
template <class Cfg>
__global__ void __launch_bounds__(kScanThreads) select_rows_kernel(Params p) {
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const SelectState st = at<SelectState>(p, lv.state)[slice];
  const uint32_t* rowcount = at<uint32_t>(p, lv.rowcount) + slice * lv.nq * 2;
  uint64_t* tiebase = at<uint64_t>(p, lv.tiebase) + slice * lv.nq;
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  __shared__ uint64_t buf[kScanThreads];
  uint64_t ties_before = 0, taken_before = 0;
  for (int32_t r0 = 0; r0 < lv.nq; r0 += kScanThreads) {
    const int32_t r = r0 + int32_t(threadIdx.x);
    const uint64_t above = r < lv.nq ? rowcount[2 * r] : 0, ties = r < lv.nq ? rowcount[2 * r + 1] : 0;
    uint64_t tie_total, taken_total;
    const uint64_t tb = ties_before + block_exclusive_scan(ties, buf, &tie_total);
    const uint64_t quota = tb < st.ties ? st.ties - tb : 0;
    const uint64_t taken = above + (ties < quota ? ties : quota);
    const uint64_t before = taken_before + block_exclusive_scan(taken, buf, &taken_total);
    if (r < lv.nq) {
      tiebase[r] = tb;
      rowptr[r] = int32_t(before);
    }
    ties_before += tie_total;
    taken_before += taken_total;
  }
  if (threadIdx.x == 0) rowptr[lv.nq] = int32_t(taken_before);
}

// Pass 2 (`write`): the columns of the refined pairs, row by row in column order, at their CSR positions.
// A column tile's verdicts go through shared memory; then warp w writes rows w, w + 8, ... of the band, its
// lanes covering 32 columns at a time, with ballots for the positions. Grid (bands, slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_write_kernel(Params p) {
  constexpr int W = kBandRows / kMicro, kWarps = kGemmThreads / 32, kRowsPerWarp = kBandRows / kWarps;
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const SelectState st = at<SelectState>(p, lv.state)[slice];
  const int32_t row0 = int32_t(blockIdx.x) * kBandRows;
  const int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  const uint64_t* tiebase = at<uint64_t>(p, lv.tiebase) + slice * lv.nq;
  int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  __shared__ uint8_t verdict[kBandRows][kBandCols];  // 0: not refined, 1: above the threshold, 2: a tie
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  uint64_t written[kRowsPerWarp] = {}, seen_ties[kRowsPerWarp] = {};  // the same in every lane of the warp
  float rmax[kMicro];
  load_row_max(p, slice, row0, rmax);
  coarse_sweep<Cfg>(p, slice, row0, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    const int tx = int(threadIdx.x) % W, ty = int(threadIdx.x) / W;
    MRA_UNROLL
    for (int i = 0; i < kMicro; ++i)
      MRA_UNROLL
      for (int j = 0; j < kMicro; ++j) verdict[ty + W * i][tx + W * j] = 0;
    for_each_candidate(p, row0, c0, logit, rmax, [&](int i, int j, int32_t, int32_t, uint64_t v) {
      verdict[ty + W * i][tx + W * j] = v > st.threshold ? 1 : v == st.threshold ? 2 : 0;
    });
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
        const uint64_t tie_rank = tiebase[r] + seen_ties[k] + uint64_t(__popc(tie_mask & lower));
        const bool take = v == 1 || (v == 2 && tie_rank < st.ties);
        const unsigned take_mask = __ballot_sync(0xffffffffu, take);
        if (take) col[rowptr[r] + int64_t(written[k]) + __popc(take_mask & lower)] = c0 + h + lane;
        seen_ties[k] += uint64_t(__popc(tie_mask));
        written[k] += uint64_t(__popc(take_mask));
      }
    }
    __syncthreads();
  });
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
  auto column = [&](int32_t u) {
    const int32_t c = up_col[start + u / rho] * rho + u % rho;
    return c < lv.nk && kcount[c] > 0.f ? c : -1;
  };
  if (row_real)
    for (int d = threadIdx.x; d < D; d += blockDim.x) qbar[d] = at<float>(p, lv.qmean)[(slice * lv.nq + r) * D + d];
  __syncthreads();
  float row_max = -INFINITY;
  for (int32_t u = threadIdx.x; u < count; u += blockDim.x) {
    const int32_t c = column(u);
    const float logit = row_real && c >= 0 ? p.scale * dot<D>(qbar, kmean + int64_t(c) * D) : -INFINITY;
    keys[u] = bits_of(logit);
    row_max = logit > row_max ? logit : row_max;
  }
  row_max = block_max(row_max, scratch);
  for (int32_t u = threadIdx.x; u < count; u += blockDim.x)
    keys[u] = row_real && column(u) >= 0 ? slot_key(float_of(uint32_t(keys[u])) - row_max, base + u) : 0;
}

// Stage 2c (§2.4, level l >= 2): T_l = the top min(budget_l, candidates) keys of the slice. Grid (slices), one
// CTA per slice over the rho^2 * |T_{l-1}| keys. A radix select, 8 bits per pass from the top, finds the k-th
// largest key K; the selected slots (key >= K, exactly k of them since keys are distinct) are compacted in slot
// order (= flat order), then turned into CSR row offsets and columns.
inline constexpr int kSelectThreads = 256;
template <class Cfg>
__global__ void __launch_bounds__(kSelectThreads) select_kernel(Params p, int li) {
  const Level& lv = p.layout.level[li];
  const Level& up = p.layout.level[li - 1];
  const int32_t rho = up.side / lv.side;
  const int64_t slice = blockIdx.x;
  const int tid = threadIdx.x;
  const uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots;
  int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  const int32_t* up_row = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
  const int32_t* up_col = at<int32_t>(p, up.col) + slice * up.cap;
  __shared__ uint32_t hist[256];
  __shared__ uint32_t pick_digit, pick_rest;
  __shared__ int32_t warp_total[kSelectThreads / 32];

  const int64_t slots = int64_t(rho) * rho * up_row[up.nq];
  const uint32_t want = uint32_t(lv.budget < slots ? lv.budget : slots);
  uint64_t prefix = 0, prefix_mask = 0;
  uint32_t rest = want;
  for (int shift = 56; shift >= 0 && want > 0; shift -= 8) {
    for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t s = tid; s < slots; s += blockDim.x) {
      const uint64_t key = keys[s];
      if ((key & prefix_mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      uint32_t above = 0;
      int digit = 255;
      for (; digit > 0 && above + hist[digit] < rest; --digit) above += hist[digit];
      pick_digit = uint32_t(digit);
      pick_rest = rest - above;
    }
    __syncthreads();
    prefix |= uint64_t(pick_digit) << shift;
    prefix_mask |= uint64_t(255) << shift;
    rest = pick_rest;
    __syncthreads();
  }
  // prefix is now the want-th largest key; 0 when there are fewer candidates than the budget.

  int32_t written = 0;
  const int lane = tid % 32, warp = tid / 32;
  for (int64_t s0 = 0; s0 < slots; s0 += blockDim.x) {
    const int64_t s = s0 + tid;
    const uint64_t key = s < slots ? keys[s] : 0;
    const bool chosen = want > 0 && key != 0 && key >= prefix;
    const uint32_t ballot = __ballot_sync(0xffffffffu, chosen);
    if (lane == 0) warp_total[warp] = __popc(ballot);
    __syncthreads();
    int32_t pos = written + __popc(ballot & ((1u << lane) - 1u));
    int32_t chunk = 0;
    for (int w = 0; w < int(blockDim.x / 32); ++w) {
      if (w < warp) pos += warp_total[w];
      chunk += warp_total[w];
    }
    if (chosen) col[pos] = int32_t(slot_of_key(key));
    written += chunk;
    __syncthreads();
  }
  __syncthreads();
  // Row r = parent * rho + t_r starts at slot rho^2 start_parent + t_r rho count_parent (see refine_keys_kernel).
  for (int32_t r = tid; r <= lv.nq; r += blockDim.x) {
    int64_t first = int64_t(rho) * rho * up_row[up.nq];
    if (r < lv.nq) {
      const int32_t parent = r / rho, start = up_row[parent], n = up_row[parent + 1] - start;
      first = int64_t(rho) * rho * start + int64_t(r % rho) * rho * n;
    }
    int32_t lo = 0, hi = written;  // first selected slot >= first
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (col[mid] < first) lo = mid + 1; else hi = mid;
    }
    rowptr[r] = lo;
  }
  __syncthreads();
  // Slot -> key-block column: the parent row is the one whose slot range holds the slot.
  for (int32_t t = tid; t < written; t += blockDim.x) {
    const int64_t s = col[t];
    int32_t lo = 0, hi = up.nq;  // last parent with rho^2 * start <= s
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo + 1) / 2;
      if (int64_t(rho) * rho * up_row[mid] <= s) lo = mid; else hi = mid - 1;
    }
    const int32_t start = up_row[lo], n = up_row[lo + 1] - start;
    const int64_t u = (s - int64_t(rho) * rho * start) % (int64_t(rho) * n);
    col[t] = up_col[start + int32_t(u / rho)] * rho + int32_t(u % rho);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Stage 3 (§2.6): the fused attention kernel. Grid (ceil(Nq / rows), slices); a CTA owns `rows` query rows
// inside one finest block R (side s_{L-1}). It first folds the coarse components of R's block row at every
// level into one running (max, denominator, numerator[D]), shared by its rows; then it streams the keys of
// the refined blocks of R in tiles of `tile` keys through shared memory, with a per-row online softmax. Each
// thread owns fixed (row, feature) accumulators, so the summation order is fixed: the output is bitwise
// reproducible, written once, without atomics.
template <class Cfg>
struct AttendSmem {
  static constexpr int D = Cfg::dim, BM = Cfg::rows, BN = Cfg::tile, NT = Cfg::threads;
  static constexpr int kstride = D + 1;  // keeps the K reads of one score row on distinct banks
  static constexpr int q = 0;
  static constexpr int k = q + BM * D;
  static constexpr int v = k + BN * kstride;
  static constexpr int s = v + BN * D;
  static constexpr int num = s + BM * BN;
  static constexpr int qbar = num + D;
  static constexpr int wgt = qbar + D;
  static constexpr int row_m = wgt + NT;
  static constexpr int row_l = row_m + BM;
  static constexpr int row_scale = row_l + BM;
  static constexpr int scratch = row_scale + BM;
  static constexpr int state = scratch + NT / 32;  // [0] coarse max, [1] coarse denominator
  static constexpr int col = state + 2;            // int32 [NT]: key-block column of a coarse candidate
  static constexpr int key = col + NT;             // int32 [BN]: key index of a tile slot, -1 if none
  static constexpr int words = key + BN;
  static constexpr size_t bytes = size_t(words) * 4;
};

template <class Cfg>
__global__ void __launch_bounds__(Cfg::threads, Cfg::min_ctas) attend_kernel(Params p) {
  using T = typename Cfg::T;
  using S = AttendSmem<Cfg>;
  constexpr int D = S::D, BM = S::BM, BN = S::BN, NT = S::NT, ACC = Cfg::acc_per_thread;
  SIMT_DYNAMIC_SHARED(float, smem);
  float* qs = smem + S::q;
  float* ks = smem + S::k;
  float* vs = smem + S::v;
  float* ss = smem + S::s;
  float* num = smem + S::num;
  float* qbar = smem + S::qbar;
  float* wgt = smem + S::wgt;
  float* row_m = smem + S::row_m;
  float* row_l = smem + S::row_l;
  float* row_scale = smem + S::row_scale;
  float* scratch = smem + S::scratch;
  float* state = smem + S::state;
  int32_t* col = reinterpret_cast<int32_t*>(smem + S::col);
  int32_t* key = reinterpret_cast<int32_t*>(smem + S::key);

  const int tid = threadIdx.x;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const int32_t row0 = int32_t(blockIdx.x) * BM;
  const int32_t R = row0 / Cfg::finest;
  const Level& fin = p.layout.level[Cfg::steps - 1];
  T* out = static_cast<T*>(p.out) + slice * int64_t(p.nq) * D;

  // Which of this thread's accumulators belong to real rows decides what is written at the end.
  __shared__ int tile_real;
  if (tid == 0) tile_real = 0;
  __syncthreads();
  for (int i = tid; i < BM; i += NT)
    if (row0 + i < p.nq && is_real(p.qmask, b, p.nq, row0 + i)) tile_real = 1;
  __syncthreads();
  const bool bad = at<int32_t>(p, p.layout.slice_bad)[slice] != 0;
  if (!tile_real || bad) {  // uniform over the CTA: nothing to compute (§1, §2.7)
    for (int e = tid; e < BM * D; e += NT) {
      const int32_t i = row0 + e / D;
      if (i < p.nq) out[int64_t(i) * D + e % D] = from_float<T>(bad && is_real(p.qmask, b, p.nq, i) ? quiet_nan() : 0.f);
    }
    return;
  }

  // Query tile -> shared memory (f32).
  const T* q = slice_rows<T>(p.q, slice, p.nq, D);
  for (int e = tid; e < BM * (D / Cfg::vec); e += NT) {
    const int i = e / (D / Cfg::vec), d = e % (D / Cfg::vec) * Cfg::vec;
    if (row0 + i < p.nq) load_widen<T, Cfg::vec>(q + int64_t(row0 + i) * D + d, qs + i * D + d);
    else for (int t = 0; t < Cfg::vec; ++t) qs[i * D + d + t] = 0.f;
  }
  for (int d = tid; d < D; d += NT) num[d] = 0.f;
  if (tid == 0) {
    state[0] = -INFINITY;
    state[1] = 0.f;
  }
  __syncthreads();

  // Coarse components (§2.5-2.6, mode full): at each level, the candidates of the tile's block row that were
  // not refined, in chunks of NT, folded into (state[0] = max, state[1] = denominator, num[] = numerator).
  for (int li = 0; p.full && li < Cfg::steps; ++li) {
    const Level& lv = p.layout.level[li];
    const int32_t r = row0 / lv.side;
    const float* kmean = at<float>(p, lv.kmean) + slice * lv.nk * D;
    const float* vsum = at<float>(p, lv.vsum) + slice * lv.nk * D;
    const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
    const int32_t* sel = at<int32_t>(p, lv.col) + slice * lv.cap;
    const int32_t* selrow = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
    const int32_t sel_lo = selrow[r], sel_hi = selrow[r + 1];
    for (int d = tid; d < D; d += NT) qbar[d] = at<float>(p, lv.qmean)[(slice * lv.nq + r) * D + d];
    int32_t rho = 1, parent = 0, start = 0, count = lv.nk;
    const int32_t* up_col = nullptr;
    if (li > 0) {
      const Level& up = p.layout.level[li - 1];
      rho = up.side / lv.side;
      parent = r / rho;
      const int32_t* up_row = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
      up_col = at<int32_t>(p, up.col) + slice * up.cap;
      start = up_row[parent];
      count = (up_row[parent + 1] - start) * rho;
    }
    __syncthreads();
    for (int32_t u0 = 0; u0 < count; u0 += NT) {
      const int32_t u = u0 + tid;
      float logit = -INFINITY;
      int32_t c = -1;
      if (u < count) {
        c = li == 0 ? u : up_col[start + u / rho] * rho + u % rho;
        const int32_t at_c = lower_bound(sel, sel_lo, sel_hi, c);
        const bool refined = at_c < sel_hi && sel[at_c] == c;
        if (c < lv.nk && kcount[c] > 0.f && !refined) logit = p.scale * dot<D>(qbar, kmean + int64_t(c) * D);
      }
      col[tid] = c;
      const float chunk_max = block_max(logit, scratch);
      const float m_old = state[0];
      const float m_new = chunk_max > m_old ? chunk_max : m_old;
      wgt[tid] = logit == -INFINITY ? 0.f : expf(logit - m_new);
      __syncthreads();
      const float rescale = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
      for (int d = tid; d < D; d += NT) {
        float a = num[d] * rescale;
        for (int t = 0; t < NT; ++t)
          if (wgt[t] != 0.f) a += wgt[t] * vsum[int64_t(col[t]) * D + d];
        num[d] = a;
      }
      if (tid == 0) {
        float den = state[1] * rescale;
        for (int t = 0; t < NT; ++t)
          if (wgt[t] != 0.f) den += wgt[t] * kcount[col[t]];
        state[1] = den;
      }
      __syncthreads();
      if (tid == 0) state[0] = m_new;
      __syncthreads();
    }
  }

  float acc[ACC];
  MRA_UNROLL
  for (int a = 0; a < ACC; ++a) acc[a] = num[(tid + a * NT) % D];
  for (int i = tid; i < BM; i += NT) {
    row_m[i] = state[0];
    row_l[i] = state[1];
  }
  __syncthreads();  // the row state is read by other threads, possibly with no key tile in between

  // Exact entries (§2.5): the keys of the refined blocks of R, tile by tile.
  const int32_t* fin_row = at<int32_t>(p, fin.rowptr) + slice * (fin.nq + 1);
  const int32_t* fin_col = at<int32_t>(p, fin.col) + slice * fin.cap;
  const int32_t first = fin_row[R], keys_total = (fin_row[R + 1] - first) * Cfg::finest;
  const T* k = slice_rows<T>(p.k, slice, p.nk, D);
  const T* v = slice_rows<T>(p.v, slice, p.nk, D);
  for (int32_t u0 = 0; u0 < keys_total; u0 += BN) {
    for (int e = tid; e < BN; e += NT) {
      const int32_t u = u0 + e;
      int32_t j = -1;
      if (u < keys_total) {
        const int32_t cb = fin_col[first + u / Cfg::finest];
        const int32_t jj = cb * Cfg::finest + u % Cfg::finest;
        if (jj < p.nk && is_real(p.kmask, b, p.nk, jj)) j = jj;
      }
      key[e] = j;
    }
    __syncthreads();
    for (int e = tid; e < BN * (D / Cfg::vec); e += NT) {
      const int n = e / (D / Cfg::vec), d = e % (D / Cfg::vec) * Cfg::vec;
      if (key[n] >= 0) {
        load_widen<T, Cfg::vec>(k + int64_t(key[n]) * D + d, ks + n * S::kstride + d);
        load_widen<T, Cfg::vec>(v + int64_t(key[n]) * D + d, vs + n * D + d);
      } else {
        for (int t = 0; t < Cfg::vec; ++t) {
          ks[n * S::kstride + d + t] = 0.f;
          vs[n * D + d + t] = 0.f;
        }
      }
    }
    __syncthreads();
    for (int e = tid; e < BM * BN; e += NT) {
      const int i = e / BN, n = e % BN;
      ss[e] = key[n] >= 0 ? p.scale * dot<D>(qs + i * D, ks + n * S::kstride) : -INFINITY;
    }
    __syncthreads();
    for (int i = tid; i < BM; i += NT) {
      const float m_old = row_m[i];
      float m_new = m_old;
      for (int n = 0; n < BN; ++n) m_new = ss[i * BN + n] > m_new ? ss[i * BN + n] : m_new;
      float sum = 0.f;
      for (int n = 0; n < BN; ++n) {
        const float x = ss[i * BN + n];
        const float w = x == -INFINITY ? 0.f : expf(x - m_new);
        ss[i * BN + n] = w;
        sum += w;
      }
      const float rescale = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
      row_scale[i] = rescale;
      row_l[i] = row_l[i] * rescale + sum;
      row_m[i] = m_new;
    }
    __syncthreads();
    MRA_UNROLL
    for (int a = 0; a < ACC; ++a) {
      const int e = tid + a * NT, i = e / D, d = e % D;
      float x = acc[a] * row_scale[i];
      for (int n = 0; n < BN; ++n) x += ss[i * BN + n] * vs[n * D + d];
      acc[a] = x;
    }
    __syncthreads();
  }

  MRA_UNROLL
  for (int a = 0; a < ACC; ++a) {
    const int e = tid + a * NT, i = e / D, d = e % D;
    const int32_t row = row0 + i;
    if (row >= p.nq) continue;
    const float l = row_l[i];
    const float y = is_real(p.qmask, b, p.nq, row) && l > 0.f ? acc[a] / l : 0.f;
    out[int64_t(row) * D + d] = from_float<T>(y);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Host side: launches the stages of one configuration.

inline mra_status launched(cudaError_t e) { return e == cudaSuccess ? MRA_SUCCESS : MRA_ERROR_LAUNCH_FAILED; }

template <class Cfg>
mra_status forward(const KernelArgs& a) {
  const mra_problem& pr = a.problem;
  Params p{};
  p.batch = int32_t(pr.batch);
  p.heads = int32_t(pr.heads);
  p.nq = int32_t(pr.nq);
  p.nk = int32_t(pr.nk);
  p.scale = float(pr.scale > 0.0 ? pr.scale : 1.0 / std::sqrt(double(pr.dim)));
  p.full = pr.mode == MRA_MODE_FULL;
  const Level& l1 = a.layout.level[0];
  p.prior_first = int32_t(pr.prior_first < l1.nq + l1.nk ? pr.prior_first : l1.nq + l1.nk);
  p.prior_diagonal = int32_t(pr.prior_diagonal < 2 * (l1.nq + l1.nk) ? pr.prior_diagonal : 2 * (l1.nq + l1.nk));
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.qmask = a.query_mask;
  p.kmask = a.key_mask;
  p.out = a.out;
  p.ws = static_cast<unsigned char*>(a.workspace);
  p.layout = a.layout;
  const unsigned slices = unsigned(pr.batch * pr.heads);
  // Launches `kernel` with grid (x, slices), in parts of at most kMaxGridY slices.
  auto per_slice = [&](auto kernel, unsigned x, unsigned threads, size_t smem, auto... extra) {
    cudaError_t e = cudaSuccess;
    for (unsigned first = 0; first < slices && e == cudaSuccess; first += kMaxGridY) {
      p.slice0 = int32_t(first);
      e = simt::launch(kernel, dim3(x, slices - first < kMaxGridY ? slices - first : kMaxGridY), dim3(threads), smem,
                       a.stream, p, extra...);
    }
    return e;
  };

  if (a.stages & kStagePrepare) {
    for (int li = 0; li < Cfg::steps; ++li) {
      const Level& lv = a.layout.level[li];
      if (auto s = launched(per_slice(pool_kernel<Cfg>, unsigned(lv.nq + lv.nk), unsigned(Cfg::dim), 0, li))) return s;
    }
    // Level 1: the row maxima, the radix passes (each a histogram, then the digit), the per-row counts, the
    // CSR offsets and the columns; every pass over the pairs recomputes their logits (docs/kernels.md).
    const unsigned bands = unsigned((a.layout.level[0].nq + kBandRows - 1) / kBandRows);
    cudaError_t e = per_slice(coarse_max_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
    for (int pass = 0; pass < kPasses && e == cudaSuccess; ++pass) {
      e = per_slice(coarse_hist_kernel<Cfg>, bands, unsigned(kGemmThreads), 0, pass);
      if (e == cudaSuccess) e = per_slice(select_pick_kernel<Cfg>, 1u, unsigned(kScanThreads), 0, pass);
    }
    if (e == cudaSuccess) e = per_slice(coarse_count_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
    if (e == cudaSuccess) e = per_slice(select_rows_kernel<Cfg>, 1u, unsigned(kScanThreads), 0);
    if (e == cudaSuccess) e = per_slice(coarse_write_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
    if (auto s = launched(e)) return s;
    for (int li = 1; li < Cfg::steps; ++li) {
      const Level& up = a.layout.level[li - 1];
      e = per_slice(refine_keys_kernel<Cfg>, unsigned(up.nq * (up.side / a.layout.level[li].side)),
                    unsigned(kRowThreads), 0, li);
      if (e == cudaSuccess) e = simt::launch(select_kernel<Cfg>, dim3(slices), dim3(kSelectThreads), 0, a.stream, p, li);
      if (auto s = launched(e)) return s;
    }
  }
  if (a.stages & kStageAttend) {
    constexpr size_t smem = AttendSmem<Cfg>::bytes;
    if (auto s = launched(simt::set_max_dynamic_shared(attend_kernel<Cfg>, int(smem)))) return s;
    const unsigned tiles = unsigned((pr.nq + Cfg::rows - 1) / Cfg::rows);
    if (auto s = launched(per_slice(attend_kernel<Cfg>, tiles, unsigned(Cfg::threads), smem))) return s;
  }
  return MRA_SUCCESS;
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
