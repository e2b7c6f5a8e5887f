// runtime/kernels/forward.cuh: the MRA forward kernels (docs/semantics.md §2), one template per stage.
//
// Every generated file generated/<name>.cu includes this header, names its Config and defines its entry; it is
// compiled by nvcc for the CUDA backend and, unchanged, as C++ against runtime/simt/simt.h for the emulated
// backend (both in generated/CMakeLists.txt). The pipeline, per (batch, head) slice:
//   pool_kernel         masked means of q and k, sums of v, token counts, per block at every coarse level
//   coarse_keys_kernel  level-1 pooled logits of every active pair -> 64-bit selection keys
//   select_kernel       the top budget_l keys by radix select -> sorted refined list T_l + CSR row offsets
//   refine_keys_kernel  level-l pooled logits of the children of T_{l-1} -> keys (then select again)
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
#include "kernels/order.h"

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

inline constexpr int kRowThreads = 128;     // coarse_keys_kernel and refine_keys_kernel
inline constexpr int kSelectThreads = 256;  // select_kernel
inline constexpr uint64_t kFlatMask = (uint64_t(1) << kFlatBits) - 1;

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

// The selection key of a candidate pair (docs/kernels.md, "Selection"): bit 63 marks a candidate, bits 61-62
// hold the priority, bits 29-60 the score in an order-preserving unsigned form, bits 0-28 the complement of
// the flat index. Unsigned comparison then ranks exactly as §2.4: priority desc, score desc, flat index asc.
// Non-candidates are 0, below every candidate. (The rule itself: kernels/order.h.)
__host__ __device__ inline uint64_t selection_key(int priority, float score, int32_t flat) {
  const uint32_t u = bits_of(score);
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t(1) << 63) | (uint64_t(priority) << 61) | (uint64_t(ordered) << kFlatBits) |
         (kFlatMask - uint64_t(flat));
}
__host__ __device__ inline int32_t flat_of_key(uint64_t key) { return int32_t(kFlatMask - (key & kFlatMask)); }

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

// Writes the keys of one block row `r` of level `li`: `count` candidates, candidate u at key slot
// base + u with key-block column col(u) (or -1 when the child does not exist). Two passes: the pooled
// logits (kept in the key slots meanwhile), then, knowing the row maximum, the keys (§2.4).
// `qbar` (Cfg::dim floats) and `scratch` (kRowThreads / 32 floats) are the caller's shared memory.
template <class Cfg, class ColumnOf>
__device__ void write_row_keys(const Params& p, int li, int32_t r, bool row_real, int64_t base, int32_t count,
                               ColumnOf col, float* qbar, float* scratch) {
  constexpr int D = Cfg::dim;
  const Level& lv = p.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  const float* kmean = at<float>(p, lv.kmean) + slice * lv.nk * D;
  uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots + base;
  if (row_real)
    for (int d = threadIdx.x; d < D; d += blockDim.x) qbar[d] = at<float>(p, lv.qmean)[(slice * lv.nq + r) * D + d];
  __syncthreads();
  float row_max = -INFINITY;
  for (int32_t u = threadIdx.x; u < count; u += blockDim.x) {
    const int32_t c = col(u);
    float logit = -INFINITY;
    if (row_real && c >= 0 && kcount[c] > 0.f) logit = p.scale * dot<D>(qbar, kmean + int64_t(c) * D);
    keys[u] = bits_of(logit);
    row_max = logit > row_max ? logit : row_max;
  }
  row_max = block_max(row_max, scratch);
  for (int32_t u = threadIdx.x; u < count; u += blockDim.x) {
    const int32_t c = col(u);
    if (!row_real || c < 0 || !(kcount[c] > 0.f)) {
      keys[u] = 0;
      continue;
    }
    const float score = float_of(uint32_t(keys[u])) - row_max;
    const int priority = li == 0 ? order::level1_priority(r, c, p.prior_first, p.prior_diagonal) : 0;
    keys[u] = selection_key(priority, score, r * lv.nk + c);
  }
}

// Stage 2a (§2.3-2.5, level 1): every active pair is a candidate. Grid (nq_1, slices).
template <class Cfg>
__global__ void __launch_bounds__(kRowThreads) coarse_keys_kernel(Params p) {
  const Level& lv = p.layout.level[0];
  const int32_t r = blockIdx.x;
  const int32_t b = int32_t((p.slice0 + int64_t(blockIdx.y)) / p.heads);
  const bool row_real = at<float>(p, lv.qcount)[int64_t(b) * lv.nq + r] > 0.f;
  __shared__ float qbar[Cfg::dim];
  __shared__ float scratch[kRowThreads / 32];
  write_row_keys<Cfg>(p, 0, r, row_real, int64_t(r) * lv.nk, lv.nk, [](int32_t u) { return u; }, qbar, scratch);
}

// Stage 2b (§2.5, level l >= 2): the candidates of level-l row r are the children, in row r, of the refined
// pairs of its parent row. Their key slots are laid out so that slot order is flat-index order (docs/kernels.md,
// "Selection"). Grid (nq_{l-1} * rho, slices): every slot of the level is written.
template <class Cfg>
__global__ void __launch_bounds__(kRowThreads) refine_keys_kernel(Params p, int li) {
  const Level& lv = p.layout.level[li];
  const Level& up = p.layout.level[li - 1];
  const int32_t rho = up.side / lv.side;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const int32_t r = blockIdx.x, parent = r / rho, tr = r % rho;
  const int32_t* rowptr = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
  const int32_t* flat = at<int32_t>(p, up.flat) + slice * up.cap;
  const int32_t start = rowptr[parent], n = rowptr[parent + 1] - start;
  const bool row_real = r < lv.nq && at<float>(p, lv.qcount)[int64_t(b) * lv.nq + r] > 0.f;
  const int64_t base = int64_t(rho) * rho * start + int64_t(tr) * rho * n;
  __shared__ float qbar[Cfg::dim];
  __shared__ float scratch[kRowThreads / 32];
  auto column = [&](int32_t u) {
    const int32_t c = (flat[start + u / rho] - parent * up.nk) * rho + u % rho;
    return c < lv.nk ? c : -1;
  };
  write_row_keys<Cfg>(p, li, r, row_real, base, rho * n, column, qbar, scratch);
}

// Stage 2c (§2.4): T_l = the top min(budget_l, candidates) keys of the slice. Grid (slices), one CTA per slice.
// A radix select over the 64-bit keys, 8 bits per pass from the top, finds the k-th largest key K; the
// selected pairs are the candidates with key >= K, compacted in slot order (= flat order). At level 1 the CTA
// also folds the block flags of pool_kernel into the slice's non-finite flag; a poisoned slice selects nothing.
template <class Cfg>
__global__ void __launch_bounds__(kSelectThreads) select_kernel(Params p, int li) {
  const Level& lv = p.layout.level[li];
  const int64_t slice = blockIdx.x;
  const int tid = threadIdx.x;
  const uint64_t* keys = at<uint64_t>(p, lv.keys) + slice * lv.slots;
  int32_t* flat = at<int32_t>(p, lv.flat) + slice * lv.cap;
  int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  __shared__ uint32_t hist[256];
  __shared__ uint32_t pick_digit, pick_rest;
  __shared__ int32_t warp_total[kSelectThreads / 32];
  __shared__ int any_bad;

  int32_t slots = lv.slots;
  if (li > 0) {
    const Level& up = p.layout.level[li - 1];
    const int32_t rho = up.side / lv.side;
    slots = rho * rho * at<int32_t>(p, up.rowptr)[slice * (up.nq + 1) + up.nq];
  }
  if (li == 0) {
    if (tid == 0) any_bad = 0;
    __syncthreads();
    const int32_t blocks = lv.nq + lv.nk;
    const int32_t* block_bad = at<int32_t>(p, p.layout.block_bad) + slice * blocks;
    for (int32_t i = tid; i < blocks; i += blockDim.x)
      if (block_bad[i]) any_bad = 1;
    __syncthreads();
    if (tid == 0) at<int32_t>(p, p.layout.slice_bad)[slice] = any_bad;
  }

  // §2.7: a poisoned slice ranks nothing; its deeper levels then have no candidates either.
  const bool poisoned = li == 0 && any_bad != 0;
  const uint32_t want = poisoned ? 0u : uint32_t(lv.budget < slots ? lv.budget : slots);
  uint64_t prefix = 0, prefix_mask = 0;
  uint32_t rest = want;
  for (int shift = 56; shift >= 0 && want > 0; shift -= 8) {
    for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int32_t s = tid; s < slots; s += blockDim.x) {
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
  for (int32_t s0 = 0; s0 < slots; s0 += blockDim.x) {
    const int32_t s = s0 + tid;
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
    if (chosen) flat[pos] = flat_of_key(key);
    written += chunk;
    __syncthreads();
  }
  __syncthreads();
  for (int32_t r = tid; r <= lv.nq; r += blockDim.x) rowptr[r] = lower_bound(flat, 0, written, r * lv.nk);
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
    const int32_t* sel = at<int32_t>(p, lv.flat) + slice * lv.cap;
    const int32_t* selrow = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
    const int32_t sel_lo = selrow[r], sel_hi = selrow[r + 1];
    for (int d = tid; d < D; d += NT) qbar[d] = at<float>(p, lv.qmean)[(slice * lv.nq + r) * D + d];
    int32_t rho = 1, parent = 0, start = 0, count = lv.nk;
    const int32_t* up_flat = nullptr;
    int32_t up_nk = 0;
    if (li > 0) {
      const Level& up = p.layout.level[li - 1];
      rho = up.side / lv.side;
      parent = r / rho;
      const int32_t* up_row = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
      up_flat = at<int32_t>(p, up.flat) + slice * up.cap;
      up_nk = up.nk;
      start = up_row[parent];
      count = (up_row[parent + 1] - start) * rho;
    }
    __syncthreads();
    for (int32_t u0 = 0; u0 < count; u0 += NT) {
      const int32_t u = u0 + tid;
      float logit = -INFINITY;
      int32_t c = -1;
      if (u < count) {
        c = li == 0 ? u : (up_flat[start + u / rho] - parent * up_nk) * rho + u % rho;
        const int32_t f = r * lv.nk + c;
        const int32_t at_f = lower_bound(sel, sel_lo, sel_hi, f);
        const bool refined = at_f < sel_hi && sel[at_f] == f;
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
  const int32_t* fin_flat = at<int32_t>(p, fin.flat) + slice * fin.cap;
  const int32_t first = fin_row[R], keys_total = (fin_row[R + 1] - first) * Cfg::finest;
  const T* k = slice_rows<T>(p.k, slice, p.nk, D);
  const T* v = slice_rows<T>(p.v, slice, p.nk, D);
  for (int32_t u0 = 0; u0 < keys_total; u0 += BN) {
    for (int e = tid; e < BN; e += NT) {
      const int32_t u = u0 + e;
      int32_t j = -1;
      if (u < keys_total) {
        const int32_t cb = fin_flat[first + u / Cfg::finest] - R * fin.nk;
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
  // Launches `kernel` with grid (x, slices), in parts of at most `part` (kMaxGridY) slices.
  const unsigned part = a.layout.slices_per_launch;
  auto per_slice = [&](auto kernel, unsigned x, unsigned threads, size_t smem, auto... extra) {
    cudaError_t e = cudaSuccess;
    for (unsigned first = 0; first < slices && e == cudaSuccess; first += part) {
      p.slice0 = int32_t(first);
      e = simt::launch(kernel, dim3(x, slices - first < part ? slices - first : part), dim3(threads), smem,
                       a.stream, p, extra...);
    }
    return e;
  };

  if (a.stages & kStagePrepare) {
    for (int li = 0; li < Cfg::steps; ++li) {
      const Level& lv = a.layout.level[li];
      if (auto s = launched(per_slice(pool_kernel<Cfg>, unsigned(lv.nq + lv.nk), unsigned(Cfg::dim), 0, li))) return s;
    }
    for (int li = 0; li < Cfg::steps; ++li) {
      const Level& lv = a.layout.level[li];
      cudaError_t e = li == 0 ? per_slice(coarse_keys_kernel<Cfg>, unsigned(lv.nq), unsigned(kRowThreads), 0)
                              : per_slice(refine_keys_kernel<Cfg>,
                                          unsigned(a.layout.level[li - 1].nq * (a.layout.level[li - 1].side / lv.side)),
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
