// runtime/kernels/common.cuh: what every stage of the MRA forward kernels shares: the configuration types,
// the kernel parameters, the scalar and load helpers, and the namespace and unroll macros of the two builds.
// The stages are in pool.cuh, select.cuh and attend.cuh; forward.cuh includes them and launches them.
#pragma once

#include "simt/simt.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

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
// MRA_NO_UNROLL keeps a long loop (one whole sweep per iteration) rolled, where nvcc would otherwise unroll it
// and run out of registers.
#if defined(__CUDACC__)
#define MRA_UNROLL _Pragma("unroll")
#define MRA_NO_UNROLL _Pragma("unroll 1")
#else
#define MRA_UNROLL _Pragma("GCC unroll 16")
#define MRA_NO_UNROLL
#endif

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

template <int... Sides>
struct Resolutions {
  static constexpr int levels = sizeof...(Sides);
  static constexpr int side[levels] = {Sides...};
};

template <int Threads, int QueryRows, int KeyTile, int VectorWidth, int MinCtasPerSm, int Stages>
struct Tuning {
  static constexpr int threads = Threads;
  static constexpr int query_rows = QueryRows;
  static constexpr int key_tile = KeyTile;
  static constexpr int vector_width = VectorWidth;
  static constexpr int min_ctas_per_sm = MinCtasPerSm;
  static constexpr int stages = Stages;
};

// The largest ratio rho = s_{l-1} / s_l over the levels l >= 2 (1 with two levels): the child rows of a parent row.
template <class Res>
constexpr int largest_rho() {
  int m = 1;
  for (int l = 2; l < Res::levels; ++l) {
    const int rho = Res::side[l - 2] / Res::side[l - 1];
    m = rho > m ? rho : m;
  }
  return m;
}

template <class Res, int Dim, class Storage, class Tune>
struct Config {
  using T = Storage;
  static constexpr int dim = Dim;
  static constexpr int levels = Res::levels;
  static constexpr int steps = levels - 1;
  static constexpr int finest = Res::side[levels - 2];  // s_{L-1}: the side of the exact blocks
  static constexpr int rho = largest_rho<Res>();
  static constexpr int threads = Tune::threads;
  static constexpr int rows = Tune::query_rows;
  static constexpr int tile = Tune::key_tile;
  static constexpr int vec = Tune::vector_width;
  static constexpr int min_ctas = Tune::min_ctas_per_sm;
  // f16/bf16: the exact part runs on tensor cores (attend_mma_kernel), one warp per 16 query rows (the m16 slab
  // of mma.m16n8k16), so the tuning's thread count is fixed by the rows; f32: attend_kernel on CUDA cores.
  static constexpr bool tensor_cores = !std::is_same_v<Storage, float>;
  static constexpr int slabs = (rows + 15) / 16;
  static constexpr int stages = Tune::stages;  // cp.async ring depth of the K/V tiles (attend_mma_kernel)
  static_assert(levels >= 2 && levels <= MRA_MAX_LEVELS && Res::side[levels - 1] == 1);
  static_assert(finest % rows == 0, "a query tile lies inside one finest block");
  static_assert(threads % 32 == 0 && dim % vec == 0);
  static_assert(!tensor_cores || (threads == 32 * slabs && tile % 16 == 0 && dim % 16 == 0 && stages >= 2),
                "tensor cores: one warp per 16 query rows, keys and features in steps of 16");
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
  // §8: query heads per K/V head (slice (b, h) reads K/V head h / group), and the element strides of every
  // tensor (the D stride is 1); k and v index the K/V heads.
  int32_t group;
  RowStrides q_strides, k_strides, v_strides, out_strides;
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

// The rows of one slice's tensor (§8): row i starts at row0 + i * stride, its D elements contiguous.
template <class T>
struct Rows {
  T* row0;
  int64_t stride;
  __device__ T* row(int64_t i) const { return row0 + i * stride; }
};

// T is const for the inputs; Void is `const void` or `void` alike.
template <class T, class Void>
__device__ inline Rows<T> rows_of(Void* base, const RowStrides& s, int64_t b, int64_t h) {
  return {static_cast<T*>(base) + b * s.batch + h * s.head, s.row};
}
// q and out of slice (b, h); k and v of its K/V head.
template <class T>
__device__ inline Rows<const T> q_rows(const Params& p, int64_t slice) {
  return rows_of<const T>(p.q, p.q_strides, slice / p.heads, slice % p.heads);
}
template <class T>
__device__ inline Rows<const T> k_rows(const Params& p, int64_t slice) {
  return rows_of<const T>(p.k, p.k_strides, slice / p.heads, slice % p.heads / p.group);
}
template <class T>
__device__ inline Rows<const T> v_rows(const Params& p, int64_t slice) {
  return rows_of<const T>(p.v, p.v_strides, slice / p.heads, slice % p.heads / p.group);
}
template <class T>
__device__ inline Rows<T> out_rows(const Params& p, int64_t slice) {
  return rows_of<T>(p.out, p.out_strides, slice / p.heads, slice % p.heads);
}

template <class T>
__device__ inline T* at(const Params& p, size_t offset) {
  return reinterpret_cast<T*>(p.ws + offset);
}

__device__ inline bool is_real(const uint8_t* mask, int32_t b, int32_t n, int32_t i) {
  return mask == nullptr || mask[int64_t(b) * n + i] != 0;
}

// §9.5 (causal attention): the first query row that is NaN among the rows of the level-1 query block holding
// query i0: 0 when a real query of that block has a non-finite q, else the first row that sees `first_bad`, the
// slice's first real key with a non-finite k or v (nk when none: no row sees it). INT32_MAX without causal
// attention, where a poisoned slice is handled whole (§2.7, slice_bad).
__device__ inline int32_t poisoned_from(const Params& p, int64_t slice, int32_t i0, int32_t first_bad) {
  if (!p.layout.causal) return INT32_MAX;
  const Level& l1 = p.layout.level[0];
  if (at<int32_t>(p, p.layout.block_bad)[slice * (l1.nq + l1.nk) + i0 / l1.side] != 0) return 0;
  return first_bad - (p.nk - p.nq);
}
__device__ inline int32_t first_bad_key(const Params& p, int64_t slice) {
  return p.layout.causal ? at<int32_t>(p, p.layout.first_bad)[slice] : p.nk;
}

// §9.2: the place of pair (r, c) of block side `side` against the causal diagonal (order.h); every pair is
// visible without causal attention.
__device__ inline int pair_place(const Params& p, int32_t side, int32_t r, int32_t c) {
  return p.layout.causal ? order::causal_place(r, c, side, p.nq, p.nk) : int(order::kVisible);
}

// First position in sorted a[lo, hi) holding a value >= x.
__device__ inline int32_t lower_bound(const int32_t* a, int32_t lo, int32_t hi, int32_t x) {
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// The candidates of block row r at level li (§2.5): every key block at level 1; below, the rho children of each
// refined pair of the parent row, in flat order. Slot u < count is key block column(u), which may lie past the
// last block.
struct RowCandidates {
  int32_t rho = 1, start = 0, count = 0;
  const int32_t* up_col = nullptr;
  __device__ RowCandidates(const Params& p, int64_t slice, int li, int32_t r) {
    count = p.layout.level[li].nk;
    if (li == 0) return;
    const Level& up = p.layout.level[li - 1];
    rho = up.side / p.layout.level[li].side;
    const int32_t* up_row = at<int32_t>(p, up.rowptr) + slice * (up.nq + 1);
    up_col = at<int32_t>(p, up.col) + slice * up.cap;
    const int32_t parent = r / rho;
    start = up_row[parent];
    count = (up_row[parent + 1] - start) * rho;
  }
  __device__ int32_t column(int32_t u) const { return up_col == nullptr ? u : up_col[start + u / rho] * rho + u % rho; }
};

// Whether pair (r, c) of level li is in T_l: a binary search of the sorted columns of row r.
__device__ inline bool refined(const Params& p, int64_t slice, int li, int32_t r, int32_t c) {
  const Level& lv = p.layout.level[li];
  const int32_t* row = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  const int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
  const int32_t at_c = lower_bound(col, row[r], row[r + 1], c);
  return at_c < row[r + 1] && col[at_c] == c;
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

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
