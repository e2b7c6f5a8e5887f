// runtime/kernels/backward.cuh: the MRA backward pass (docs/semantics.md §7) as kernels, run after the forward on
// its saved state: the workspace the forward left (pooled means, V sums, counts, the refined lists of every level,
// and per query row its stabilizer m_i and denominator Z_i), held fixed, so the selection is the forward's.
//
// The stages, per (batch, head) slice (docs/kernels.md, "Backward"):
//   grad_delta_kernel        δ_i = dout_i · out_i per real query; flags a slice whose dout is not finite (§7.5)
//   grad_block_kernel        mode full, per coarse level: per query block r, the smallest stabilizer mmin(r) of its
//                            rows and Ū(r) = Σ_i e_i dout_i, δ̄(r) = Σ_i e_i δ_i with e_i = exp(mmin − m_i) / Z_i
//   grad_coarse_rows_kernel  ... per query block: what its queries receive through q̄ from every coarse pair of the row
//   grad_coarse_cols_kernel  ... per key block: what its keys receive through k̄ and V from every coarse pair of the column
//   grad_dq_kernel           per query tile: the exact entries of its refined key blocks, plus the coarse part -> dq
//   grad_dkv_kernel          per key tile of a K/V head: for each query head of its group in head order, the exact
//                            entries of the query blocks that refined it, plus the coarse part -> dk, dv
// A coarse pair (l, r, c) weighs exp(λ − m_i) / Z_i in row i; since λ ≤ mmin(r) ≤ m_i, that is exp(λ − mmin)·e_i,
// so its dλ = exp(λ − mmin) (Ū·V(c) − ck(c) δ̄) and its dV = exp(λ − mmin) Ū need O(D) per pair, not O(s D).
// Every gradient element is written once, by one thread, as a sum in a fixed order: no atomics on floats, and the
// result is bitwise reproducible; a K/V head shared by a group of query heads (§8) sums their gradients in one
// thread, in head order. Every tensor is read and written through its strides: dout with out's, dq, dk and dv
// with those of q, k and v (§8). Every configuration has it (codegen renders backward<Cfg> into each generated file).
// f32 storage: every stage on CUDA cores in f32. f16/bf16 storage: stages 5 and 6 run on tensor cores
// (backward_mma.cuh: grad_dq_mma_kernel, grad_dkv_mma_kernel, P and dS rounded to the storage type as the A operand
// of their products), stages 1-4 and the coarse terms are these f32 CUDA-core kernels on the widened 16-bit inputs;
// the gradients are rounded to the storage type once, at their store (docs/kernels.md, "Backward").
#pragma once

#include "kernels/forward.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

template <class T>
__device__ inline T* in_grad_ws(const GradArgs& g, size_t offset) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(g.workspace) + offset);
}

// dout (or out) of slice (b, h): read with out's strides (§8).
template <class T>
__device__ inline Rows<const T> dout_rows(const Params& p, const void* base, int64_t slice) {
  return rows_of<const T>(base, p.out_strides, slice / p.heads, slice % p.heads);
}

// The saved state of query row i: (m_i, Z_i), Z_i = 0 when the row has no term (§7.4).
__device__ inline const float* row_stats(const Params& p, int64_t slice, int32_t i) {
  return at<float>(p, p.layout.rowstats) + (slice * p.nq + i) * 2;
}

// §7.5: the slice is poisoned (a non-finite q, k, v in a real token, or dout in a real query; under causal attention
// grad_delta_kernel folds the forward's per-block flags into the dout flag, §9.7).
__device__ inline bool grad_poisoned(const Params& p, const GradArgs& g, int64_t slice) {
  return at<int32_t>(p, p.layout.slice_bad)[slice] != 0 || in_grad_ws<int32_t>(g, g.layout.dout_bad)[slice] != 0;
}

// §9.7: the entry (i, j) is a term of row i: j <= i + Nk − Nq under causal attention, always without it.
__device__ inline bool sees(const Params& p, int32_t i, int32_t j) {
  return !p.layout.causal || j <= i + (p.nk - p.nq);
}

// Stage 1: δ_i per row, in feature order, and the slice's dout flag; under causal attention, where the forward
// poisons rows and not slices (§9.5), the flag also takes the forward's level-1 block flags: the backward poisons
// the slice (§9.7). Grid (1, slices).
inline constexpr int kDeltaThreads = 256;
template <class Cfg>
__global__ void __launch_bounds__(kDeltaThreads) grad_delta_kernel(Params p, GradArgs g) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::dim;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const Rows<const T> out = dout_rows<T>(p, g.out, slice), dout = dout_rows<T>(p, g.dout, slice);
  float* delta = in_grad_ws<float>(g, g.layout.delta) + slice * p.nq;
  int bad = 0;
  for (int32_t i = threadIdx.x; i < p.nq; i += blockDim.x) {
    float d = 0.f;
    if (is_real(p.qmask, b, p.nq, i))
      for (int e = 0; e < D; ++e) {
        const float x = to_float(dout.row(i)[e]);
        bad |= !finite(x);
        d += x * to_float(out.row(i)[e]);
      }
    delta[i] = d;
  }
  if (p.layout.causal) {
    const Level& l1 = p.layout.level[0];
    const int32_t* block_bad = at<int32_t>(p, p.layout.block_bad) + slice * (l1.nq + l1.nk);
    for (int32_t x = threadIdx.x; x < l1.nq + l1.nk; x += blockDim.x) bad |= block_bad[x] != 0;
  }
  bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) in_grad_ws<int32_t>(g, g.layout.dout_bad)[slice] = bad;
}

// Stage 2 (mode full, level li): per query block r, mmin, Ū and δ̄ over its real rows with terms. Grid (nq_l,
// slices), one thread per feature; every thread finds the same mmin.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::dim) grad_block_kernel(Params p, GradArgs g, int li) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::dim;
  const Level& lv = p.layout.level[li];
  const BackLevel& bl = g.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), r = int32_t(blockIdx.x), d = int(threadIdx.x);
  const int32_t i0 = r * lv.side, i1 = i0 + lv.side < p.nq ? i0 + lv.side : p.nq;
  const Rows<const T> dout = dout_rows<T>(p, g.dout, slice);
  const float* delta = in_grad_ws<float>(g, g.layout.delta) + slice * p.nq;
  float mmin = INFINITY;
  for (int32_t i = i0; i < i1; ++i) {
    const float* rs = row_stats(p, slice, i);
    if (is_real(p.qmask, b, p.nq, i) && rs[1] > 0.f) mmin = rs[0] < mmin ? rs[0] : mmin;
  }
  float u = 0.f, db = 0.f;
  for (int32_t i = i0; i < i1; ++i) {
    const float* rs = row_stats(p, slice, i);
    if (!is_real(p.qmask, b, p.nq, i) || !(rs[1] > 0.f)) continue;
    const float e = expf(mmin - rs[0]) / rs[1];
    u += e * to_float(dout.row(i)[d]);
    db += e * delta[i];
  }
  const int64_t at_r = slice * lv.nq + r;
  in_grad_ws<float>(g, bl.ubar)[at_r * D + d] = u;
  if (d == 0) {
    in_grad_ws<float>(g, bl.mmin)[at_r] = mmin;
    in_grad_ws<float>(g, bl.dbar)[at_r] = db;
  }
}

// dλ of coarse pair (r, c) at level li and its weight f = exp(λ − mmin(r)) (§7.3 with the factorization above);
// qbar, ubar: the block row's q̄ and Ū; kbar, vsum: the block column's k̄ and V.
struct CoarseGrad {
  float f, dlambda;
};
template <int D>
__device__ inline CoarseGrad coarse_grad(const Params& p, const float* qbar, const float* ubar, float mmin, float dbar,
                                         const float* kbar, const float* vsum, float keys) {
  const float f = expf(p.scale * dot<D>(qbar, kbar) - mmin);
  return {f, f * (dot<D>(ubar, vsum) - keys * dbar)};
}

// Stage 3 (mode full, level li): per query block r, gq(r) = σ / cq(r) Σ_c dλ(r, c) k̄(c) over the coarse pairs of
// its row (under causal attention visible ones only, §9.7), taken NT candidates at a time in slot order. Grid
// (nq_l, slices).
inline constexpr int kCoarseThreads = 128;
template <class Cfg>
__global__ void __launch_bounds__(kCoarseThreads) grad_coarse_rows_kernel(Params p, GradArgs g, int li) {
  constexpr int D = Cfg::dim, NT = kCoarseThreads;
  const Level& lv = p.layout.level[li];
  const BackLevel& bl = g.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), r = int32_t(blockIdx.x);
  const int tid = threadIdx.x;
  __shared__ float qbar[D], ubar[D], acc[D], wgt[NT];
  __shared__ int32_t col[NT];
  const int64_t at_r = slice * lv.nq + r;
  const float queries = at<float>(p, lv.qcount)[int64_t(b) * lv.nq + r];
  const float* kmean = at<float>(p, lv.kmean) + slice * lv.nk * D;
  const float* vsum = at<float>(p, lv.vsum) + slice * lv.nk * D;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  const float mmin = in_grad_ws<float>(g, bl.mmin)[at_r], dbar = in_grad_ws<float>(g, bl.dbar)[at_r];
  for (int d = tid; d < D; d += NT) {
    qbar[d] = at<float>(p, lv.qmean)[at_r * D + d];
    ubar[d] = in_grad_ws<float>(g, bl.ubar)[at_r * D + d];
    acc[d] = 0.f;
  }
  const RowCandidates cand(p, slice, li, r);
  const bool row_real = queries > 0.f;
  __syncthreads();
  for (int32_t u0 = 0; row_real && u0 < cand.count; u0 += NT) {
    const int32_t u = u0 + tid;
    float w = 0.f;
    int32_t c = 0;
    if (u < cand.count) {
      c = cand.column(u);
      if (c < lv.nk && kcount[c] > 0.f && pair_place(p, lv.side, r, c) == order::kVisible &&
          !refined(p, slice, li, r, c))
        w = coarse_grad<D>(p, qbar, ubar, mmin, dbar, kmean + int64_t(c) * D, vsum + int64_t(c) * D, kcount[c]).dlambda;
      else
        c = 0;
    }
    wgt[tid] = w;
    col[tid] = c;
    __syncthreads();
    for (int d = tid; d < D; d += NT) {
      float a = acc[d];
      for (int t = 0; t < NT; ++t)
        if (wgt[t] != 0.f) a += wgt[t] * kmean[int64_t(col[t]) * D + d];
      acc[d] = a;
    }
    __syncthreads();
  }
  for (int d = tid; d < D; d += NT)
    in_grad_ws<float>(g, bl.gq)[at_r * D + d] = row_real ? p.scale / queries * acc[d] : 0.f;
}

// Stage 4 (mode full, level li): per key block c, gk(c) = σ / ck(c) Σ_r dλ(r, c) q̄(r) and gv(c) = Σ_r f(r, c) Ū(r)
// over the coarse pairs of its column: (r, c) active, visible under causal attention (§9.7), not refined at li, and
// below level 1 inside a pair refined at li - 1. NT query blocks at a time, in block order. Grid (nk_l, slices).
template <class Cfg>
__global__ void __launch_bounds__(kCoarseThreads) grad_coarse_cols_kernel(Params p, GradArgs g, int li) {
  constexpr int D = Cfg::dim, NT = kCoarseThreads;
  const Level& lv = p.layout.level[li];
  const BackLevel& bl = g.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), c = int32_t(blockIdx.x);
  const int tid = threadIdx.x;
  const int32_t rho = li == 0 ? 1 : p.layout.level[li - 1].side / lv.side;
  __shared__ float kbar[D], vs[D], acck[D], accv[D], wk[NT], wv[NT];
  __shared__ int32_t row[NT];
  const int64_t at_c = slice * lv.nk + c;
  const float keys = at<float>(p, lv.kcount)[int64_t(b) * lv.nk + c];
  const float* qmean = at<float>(p, lv.qmean) + slice * lv.nq * D;
  const float* qcount = at<float>(p, lv.qcount) + int64_t(b) * lv.nq;
  const float* ubar = in_grad_ws<float>(g, bl.ubar) + slice * lv.nq * D;
  const float* mmin = in_grad_ws<float>(g, bl.mmin) + slice * lv.nq;
  const float* dbar = in_grad_ws<float>(g, bl.dbar) + slice * lv.nq;
  for (int d = tid; d < D; d += NT) {
    kbar[d] = at<float>(p, lv.kmean)[at_c * D + d];
    vs[d] = at<float>(p, lv.vsum)[at_c * D + d];
    acck[d] = accv[d] = 0.f;
  }
  const bool col_real = keys > 0.f;
  __syncthreads();
  for (int32_t r0 = 0; col_real && r0 < lv.nq; r0 += NT) {
    const int32_t r = r0 + tid;
    CoarseGrad cg{0.f, 0.f};
    if (r < lv.nq && qcount[r] > 0.f && pair_place(p, lv.side, r, c) == order::kVisible &&
        (li == 0 || refined(p, slice, li - 1, r / rho, c / rho)) && !refined(p, slice, li, r, c))
      cg = coarse_grad<D>(p, qmean + int64_t(r) * D, ubar + int64_t(r) * D, mmin[r], dbar[r], kbar, vs, keys);
    wk[tid] = cg.dlambda;
    wv[tid] = cg.f;
    row[tid] = r < lv.nq ? r : 0;
    __syncthreads();
    for (int d = tid; d < D; d += NT) {
      float ak = acck[d], av = accv[d];
      for (int t = 0; t < NT; ++t) {
        if (wv[t] == 0.f) continue;
        ak += wk[t] * qmean[int64_t(row[t]) * D + d];
        av += wv[t] * ubar[int64_t(row[t]) * D + d];
      }
      acck[d] = ak;
      accv[d] = av;
    }
    __syncthreads();
  }
  for (int d = tid; d < D; d += NT) {
    in_grad_ws<float>(g, bl.gk)[at_c * D + d] = col_real ? p.scale / keys * acck[d] : 0.f;
    in_grad_ws<float>(g, bl.gv)[at_c * D + d] = col_real ? accv[d] : 0.f;
  }
}

// What the coarse levels send to token n's row of dq (query side) or dk / dv (key side), summed over the levels.
__device__ inline float coarse_sum(const Params& p, const GradArgs& g, int64_t slice, int32_t n, int d, int dim,
                                   size_t BackLevel::*which, bool query_side) {
  float s = 0.f;
  for (int li = 0; p.full && li < p.layout.steps; ++li) {
    const Level& lv = p.layout.level[li];
    const int32_t blocks = query_side ? lv.nq : lv.nk;
    s += in_grad_ws<float>(g, g.layout.level[li].*which)[(slice * blocks + n / lv.side) * dim + d];
  }
  return s;
}

// The shared memory of the exact-entry stages: the CTA's own tokens (A) and the tokens streamed past them (B), each
// row with two D-vectors, the pair weights of one step, the query rows' state and the token indices of both sets.
template <int RowsA, int RowsB, int D>
struct GradSmem {
  static constexpr int pitch = D + 1;  // rows read by different threads of a step fall on distinct banks
  static constexpr int a0 = 0, a1 = a0 + RowsA * pitch;  // own: q and dout (dq), or k and v (dk, dv)
  static constexpr int b0 = a1 + RowsA * pitch, b1 = b0 + RowsB * pitch;
  static constexpr int w0 = b1 + RowsB * pitch;   // [RowsA][RowsB]: ds (dq), or P (dk, dv)
  static constexpr int w1 = w0 + RowsA * RowsB;   // [RowsA][RowsB]: ds (dk, dv)
  static constexpr int row = w1 + RowsA * RowsB;  // [RowsA + RowsB][3]: m, Z, δ of the query rows (Z 0: none)
  static constexpr int id = row + 3 * (RowsA + RowsB);  // int32 [RowsA + RowsB]: A's token indices, then B's; -1: none
  static constexpr int words = id + RowsA + RowsB;
  static constexpr size_t bytes = size_t(words) * 4;
};

// Loads rows id[t] (t < n; zeros where id[t] < 0) of x and y into the pitched tiles xs, ys.
template <class T, int D>
__device__ inline void load_rows(const Rows<const T>& x, const Rows<const T>& y, const int32_t* id, int n, float* xs,
                                 float* ys) {
  for (int e = threadIdx.x; e < n * D; e += blockDim.x) {
    const int t = e / D, d = e % D;
    const bool real = id[t] >= 0;
    xs[t * (D + 1) + d] = real ? to_float(x.row(id[t])[d]) : 0.f;
    ys[t * (D + 1) + d] = real ? to_float(y.row(id[t])[d]) : 0.f;
  }
}

// The query rows' saved state into rs[3 t ..]: (m, Z, δ), Z = 0 for a row that is absent, masked or has no term.
__device__ inline void load_row_state(const Params& p, const GradArgs& g, int64_t slice, const int32_t* id, int n,
                                      float* rs) {
  const float* delta = in_grad_ws<float>(g, g.layout.delta) + slice * p.nq;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    const float* st = id[t] >= 0 ? row_stats(p, slice, id[t]) : nullptr;
    rs[3 * t] = st ? st[0] : 0.f;
    rs[3 * t + 1] = st ? st[1] : 0.f;
    rs[3 * t + 2] = st ? delta[id[t]] : 0.f;
  }
}

// P_ij = exp(s_ij − m_i) / Z_i of query row state rs and the exact logit σ q·k; 0 when the row has no term.
template <int D>
__device__ inline float exact_weight(const Params& p, const float* rs, const float* q, const float* k) {
  return rs[1] > 0.f ? expf(p.scale * dot<D>(q, k) - rs[0]) / rs[1] : 0.f;
}

// Stage 5: dq of a tile of BM query rows inside one finest block R: Σ over the keys j of R's refined blocks of
// ds_ij k_j (ds_ij = P_ij (dout_i·v_j − δ_i)), key tile by key tile in list order, times σ, plus the coarse levels'
// gq. Grid (ceil(Nq / BM), slices). A masked row gets 0, a real row of a poisoned slice NaN.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::threads, Cfg::min_ctas) grad_dq_kernel(Params p, GradArgs g) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::dim, BM = Cfg::rows, BN = Cfg::tile, NT = Cfg::threads, P = D + 1;
  constexpr int E = (BM * D + NT - 1) / NT;
  using S = GradSmem<BM, BN, D>;
  SIMT_DYNAMIC_SHARED(float, smem);
  float *qs = smem + S::a0, *gs = smem + S::a1, *ks = smem + S::b0, *vs = smem + S::b1, *ds = smem + S::w0;
  float* rs = smem + S::row;
  int32_t* id = reinterpret_cast<int32_t*>(smem + S::id);
  const int tid = threadIdx.x;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), row0 = int32_t(blockIdx.x) * BM;
  const bool bad = grad_poisoned(p, g, slice);
  const Rows<T> dq = rows_of<T>(g.dq, p.q_strides, slice / p.heads, slice % p.heads);

  // Load: the tile's query rows (id -1: past Nq or masked), their dout and saved state.
  for (int t = tid; t < BM; t += NT) {
    const int32_t i = row0 + t;
    id[t] = i < p.nq && is_real(p.qmask, b, p.nq, i) ? i : -1;
  }
  __syncthreads();
  load_rows<T, D>(q_rows<T>(p, slice), dout_rows<T>(p, g.dout, slice), id, BM, qs, gs);
  load_row_state(p, g, slice, id, BM, rs);
  float acc[E];
  MRA_UNROLL
  for (int e = 0; e < E; ++e) acc[e] = 0.f;

  // Exact entries: the keys of R's refined blocks, BN at a time.
  const Level& fin = p.layout.level[Cfg::steps - 1];
  const int32_t R = row0 / Cfg::finest;
  const int32_t* fin_row = at<int32_t>(p, fin.rowptr) + slice * (fin.nq + 1);
  const int32_t* fin_col = at<int32_t>(p, fin.col) + slice * fin.cap;
  const int32_t first = fin_row[R], keys_total = bad ? 0 : (fin_row[R + 1] - first) * Cfg::finest;
  const Rows<const T> k = k_rows<T>(p, slice), v = v_rows<T>(p, slice);
  int32_t* key = id + BM;
  for (int32_t u0 = 0; u0 < keys_total; u0 += BN) {
    __syncthreads();  // the previous tile's ds and K are consumed
    for (int n = tid; n < BN; n += NT) {
      const int32_t u = u0 + n;
      int32_t j = -1;
      if (u < keys_total) {
        const int32_t jj = fin_col[first + u / Cfg::finest] * Cfg::finest + u % Cfg::finest;
        if (jj < p.nk && is_real(p.kmask, b, p.nk, jj)) j = jj;
      }
      key[n] = j;
    }
    __syncthreads();
    load_rows<T, D>(k, v, key, BN, ks, vs);
    __syncthreads();
    for (int e = tid; e < BM * BN; e += NT) {
      const int t = e / BN, n = e % BN;
      float w = 0.f;
      if (key[n] >= 0 && sees(p, row0 + t, key[n])) {  // §9.7: a crossing pair's future entries are no terms
        const float pw = exact_weight<D>(p, rs + 3 * t, qs + t * P, ks + n * P);
        w = pw * (dot<D>(gs + t * P, vs + n * P) - rs[3 * t + 2]);
      }
      ds[t * BN + n] = w;
    }
    __syncthreads();
    MRA_UNROLL
    for (int e = 0; e < E; ++e) {
      const int x = tid + NT * e, t = x / D, d = x % D;
      if (x >= BM * D) continue;
      float a = acc[e];
      for (int n = 0; n < BN; ++n) a += ds[t * BN + n] * ks[n * P + d];
      acc[e] = a;
    }
  }

  // Output: σ times the exact part, plus the coarse part of every level.
  MRA_UNROLL
  for (int e = 0; e < E; ++e) {
    const int x = tid + NT * e, t = x / D, d = x % D;
    const int32_t i = row0 + t;
    if (x >= BM * D || i >= p.nq) continue;
    const bool real = is_real(p.qmask, b, p.nq, i);
    float value = 0.f;
    if (real && bad) value = quiet_nan();
    else if (real) value = p.scale * acc[e] + coarse_sum(p, g, slice, i, d, D, &BackLevel::gq, true);
    dq.row(i)[d] = from_float<T>(value);
  }
}

// Stage 6's grid row, shared by grad_dkv_kernel and grad_dkv_mma_kernel: the CTA's batch b and K/V head hkv (grid
// row blockIdx.y), the first of its KB keys j0 and their finest key block C, and the slice of the first query head of
// its group (its group's query heads are the slices first .. first + group - 1).
struct KeyTile {
  int32_t b, hkv, j0, C;
  int64_t first;
};

template <int KB, int F>
__device__ inline KeyTile key_tile(const Params& p) {
  const int32_t heads_kv = p.heads / p.group, kv = p.slice0 + int32_t(blockIdx.y);
  const int32_t b = kv / heads_kv, hkv = kv % heads_kv, j0 = int32_t(blockIdx.x) * KB;
  return KeyTile{b, hkv, j0, j0 / F, int64_t(b) * p.heads + int64_t(hkv) * p.group};
}

// Stage 6's walk, shared by grad_dkv_kernel and grad_dkv_mma_kernel (NT threads): for each query head of the group
// in head order, the query blocks R with (R, C) refined at the last step, found NT at a time in block order (flag:
// NT words); each one's rows Step at a time. qid[0, Slots) gets the step's rows (-1 past Step slots, the block's end,
// Nq or a masked query), then, after a barrier, step(slice, q, dout, i0) runs on them. Stops at the first poisoned
// query head of the group and returns whether there was one (§7.5: the tile's real keys then get NaN).
template <class Cfg, int NT, int Step, int Slots, class StepFn>
__device__ inline bool for_refined_query_steps(const Params& p, const GradArgs& g, const KeyTile& kt, int32_t* qid,
                                               int32_t* flag, StepFn&& step) {
  using T = typename Cfg::T;
  constexpr int F = Cfg::finest;
  const int tid = threadIdx.x;
  const Level& fin = p.layout.level[Cfg::steps - 1];
  bool bad = false;  // uniform: every thread reads the same flags
  for (int32_t m = 0; m < p.group; ++m) {
    const int64_t slice = kt.first + m;
    bad = bad || grad_poisoned(p, g, slice);
    const Rows<const T> q = q_rows<T>(p, slice), dout = dout_rows<T>(p, g.dout, slice);
    for (int32_t R0 = 0; !bad && R0 < fin.nq; R0 += NT) {
      flag[tid] = R0 + tid < fin.nq && refined(p, slice, Cfg::steps - 1, R0 + tid, kt.C);
      __syncthreads();
      for (int t = 0; t < NT && R0 + t < fin.nq; ++t) {
        if (!flag[t]) continue;  // uniform: every thread reads the same flag
        const int32_t rfirst = (R0 + t) * F;
        for (int32_t i0 = rfirst; i0 < rfirst + F && i0 < p.nq; i0 += Step) {
          for (int x = tid; x < Slots; x += NT) {
            const int32_t i = i0 + x;
            qid[x] = x < Step && i < p.nq && i < rfirst + F && is_real(p.qmask, kt.b, p.nq, i) ? i : -1;
          }
          __syncthreads();
          step(slice, q, dout, i0);
        }
      }
      __syncthreads();  // flags are rewritten by the next chunk
    }
  }
  return bad;
}

// Stage 6's output of key j (real: not masked), feature d: σ times the exact part ak of dk and the exact part av of
// dv, plus the coarse levels' gk and gv of every query head of the group, in head order; NaN when a query head of
// the group is poisoned (bad), 0 for a masked key.
struct KeyGrad {
  float k, v;
};

__device__ inline KeyGrad key_grad(const Params& p, const GradArgs& g, const KeyTile& kt, int32_t j, int d, int dim,
                                   bool real, bool bad, float ak, float av) {
  KeyGrad r{0.f, 0.f};
  if (real && bad) {
    r.k = r.v = quiet_nan();
  } else if (real) {
    r.k = p.scale * ak;
    r.v = av;
    for (int32_t m = 0; m < p.group; ++m) {
      r.k += coarse_sum(p, g, kt.first + m, j, d, dim, &BackLevel::gk, false);
      r.v += coarse_sum(p, g, kt.first + m, j, d, dim, &BackLevel::gv, false);
    }
  }
  return r;
}

// Stage 6: dk and dv of a tile of KB keys of one K/V head, inside one finest key block C. For each query head of the
// head's group in head order (§8: a shared K/V head's gradients are the sums over its group), the query blocks R
// with (R, C) refined at the last step are found NT at a time in block order; each one's rows, QB at a time, give
// P_ij and ds_ij, and dv_j += Σ_i P_ij dout_i, dk_j += Σ_i ds_ij q_i, in row order. Then σ dk, plus the coarse
// levels' gk and gv of every head of the group, in head order. Grid (ceil(Nk / KB), batch * K/V heads). A masked
// key gets 0, a real key NaN when a query head of the group has a poisoned slice.
template <class Cfg>
struct DkvShape {
  static constexpr int KB = Cfg::finest < 32 ? Cfg::finest : 32;  // keys per CTA (divides the finest side)
  static constexpr int QB = Cfg::finest < 32 ? Cfg::finest : 32;  // query rows per step
  using S = GradSmem<KB, QB, Cfg::dim>;
  static constexpr size_t bytes = S::bytes + size_t(Cfg::threads) * 4;  // + the refined flags of NT query blocks
};

template <class Cfg>
__global__ void __launch_bounds__(Cfg::threads, Cfg::min_ctas) grad_dkv_kernel(Params p, GradArgs g) {
  using T = typename Cfg::T;
  using Shape = DkvShape<Cfg>;
  using S = typename Shape::S;
  constexpr int D = Cfg::dim, KB = Shape::KB, QB = Shape::QB, NT = Cfg::threads, P = D + 1, F = Cfg::finest;
  constexpr int E = (KB * D + NT - 1) / NT;
  SIMT_DYNAMIC_SHARED(float, smem);
  float *ks = smem + S::a0, *vs = smem + S::a1, *qs = smem + S::b0, *gs = smem + S::b1;
  float *pw = smem + S::w0, *ds = smem + S::w1, *rs = smem + S::row;
  int32_t* id = reinterpret_cast<int32_t*>(smem + S::id);
  int32_t* flag = reinterpret_cast<int32_t*>(smem + S::words);
  const int tid = threadIdx.x;
  const KeyTile kt = key_tile<KB, F>(p);
  const int32_t j0 = kt.j0;

  int32_t* key = id;        // [KB]
  int32_t* qid = id + KB;   // [QB]
  for (int t = tid; t < KB; t += NT) {
    const int32_t j = j0 + t;
    key[t] = j < p.nk && is_real(p.kmask, kt.b, p.nk, j) ? j : -1;
  }
  __syncthreads();
  load_rows<T, D>(k_rows<T>(p, kt.first), v_rows<T>(p, kt.first), key, KB, ks, vs);
  __syncthreads();
  float acck[E], accv[E];
  MRA_UNROLL
  for (int e = 0; e < E; ++e) acck[e] = accv[e] = 0.f;
  const bool bad = for_refined_query_steps<Cfg, NT, QB, QB>(
      p, g, kt, qid, flag, [&](int64_t slice, const Rows<const T>& q, const Rows<const T>& dout, int32_t i0) {
        load_rows<T, D>(q, dout, qid, QB, qs, gs);
        load_row_state(p, g, slice, qid, QB, rs);
        __syncthreads();
        for (int e = tid; e < KB * QB; e += NT) {
          const int n = e / QB, x = e % QB;
          // §9.7: the key's entries of a crossing block that the row does not see are no terms.
          const float w = sees(p, i0 + x, j0 + n) ? exact_weight<D>(p, rs + 3 * x, qs + x * P, ks + n * P) : 0.f;
          pw[n * QB + x] = w;
          ds[n * QB + x] = w * (dot<D>(gs + x * P, vs + n * P) - rs[3 * x + 2]);
        }
        __syncthreads();
        MRA_UNROLL
        for (int e = 0; e < E; ++e) {
          const int y = tid + NT * e, n = y / D, d = y % D;
          if (y >= KB * D) continue;
          float ak = acck[e], av = accv[e];
          for (int x = 0; x < QB; ++x) {
            av += pw[n * QB + x] * gs[x * P + d];
            ak += ds[n * QB + x] * qs[x * P + d];
          }
          acck[e] = ak;
          accv[e] = av;
        }
        __syncthreads();
      });

  // Output: key_grad of every (key, feature) of the tile, written with k's and v's strides.
  const Rows<T> dk = rows_of<T>(g.dk, p.k_strides, kt.b, kt.hkv), dv = rows_of<T>(g.dv, p.v_strides, kt.b, kt.hkv);
  MRA_UNROLL
  for (int e = 0; e < E; ++e) {
    const int y = tid + NT * e, n = y / D, d = y % D;
    const int32_t j = j0 + n;
    if (y >= KB * D || j >= p.nk) continue;
    const KeyGrad r = key_grad(p, g, kt, j, d, D, is_real(p.kmask, kt.b, p.nk, j), bad, acck[e], accv[e]);
    dk.row(j)[d] = from_float<T>(r.k);
    dv.row(j)[d] = from_float<T>(r.v);
  }
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern

// The tensor-core stages 5 and 6 of f16/bf16 storage, on the helpers above.
#include "kernels/backward_mma.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// The backward's stage names for the launch observer (forward.cuh), as runtime/mra.h lists them: those of
// tools/perf-model --backward.
inline constexpr const char* kDeltaStage = "bwd: delta";
inline constexpr const char* kBackwardCoarseStage[] = {"bwd: coarse L1", "bwd: coarse L2", "bwd: coarse L3"};
inline constexpr const char* kBackwardExactStage = "bwd: exact dq, dk, dv";
static_assert(sizeof kBackwardCoarseStage / sizeof *kBackwardCoarseStage == MRA_MAX_LEVELS - 1, "a name per level");

// Host side: launches the backward stages of one configuration on the forward's saved state.
template <class Cfg>
mra_status backward(const KernelArgs& a) {
  const Params p = make_params(a);
  const GradArgs& g = *a.grad;
  auto per_slice = [&](const char* stage, auto kernel, unsigned x, unsigned threads, size_t smem, auto... extra) {
    return launched(a, launch_per_slice(a, stage, p, kernel, x, threads, smem, g, extra...));
  };
  if (auto s = per_slice(kDeltaStage, grad_delta_kernel<Cfg>, 1u, unsigned(kDeltaThreads), 0)) return s;
  for (int li = 0; p.full && li < Cfg::steps; ++li) {
    const Level& lv = a.layout.level[li];
    if (auto s = per_slice(kBackwardCoarseStage[li], grad_block_kernel<Cfg>, unsigned(lv.nq), unsigned(Cfg::dim), 0, li))
      return s;
    if (auto s = per_slice(kBackwardCoarseStage[li], grad_coarse_rows_kernel<Cfg>, unsigned(lv.nq),
                           unsigned(kCoarseThreads), 0, li))
      return s;
    if (auto s = per_slice(kBackwardCoarseStage[li], grad_coarse_cols_kernel<Cfg>, unsigned(lv.nk),
                           unsigned(kCoarseThreads), 0, li))
      return s;
  }
  const unsigned q_tiles = unsigned((a.problem.nq + Cfg::rows - 1) / Cfg::rows);
  const unsigned kv_slices = unsigned(a.problem.batch * kv_heads(a.problem));  // dk/dv grid rows: (batch, K/V head)
  if constexpr (Cfg::tensor_cores) {
    using Dkv = GradDkvMmaShape<Cfg>;
    constexpr size_t dq_bytes = GradDqMmaSmem<Cfg>::bytes;
    if (auto s = launched(a, simt::set_max_dynamic_shared(grad_dq_mma_kernel<Cfg>, int(dq_bytes)))) return s;
    if (auto s = per_slice(kBackwardExactStage, grad_dq_mma_kernel<Cfg>, q_tiles, unsigned(Cfg::threads), dq_bytes))
      return s;
    const unsigned k_tiles = unsigned((a.problem.nk + Dkv::KB - 1) / Dkv::KB);
    if (auto s = launched(a, simt::set_max_dynamic_shared(grad_dkv_mma_kernel<Cfg>, int(Dkv::bytes)))) return s;
    return launched(a, launch_in_parts(a, kBackwardExactStage, p, kv_slices, grad_dkv_mma_kernel<Cfg>, k_tiles,
                                       unsigned(Dkv::threads), Dkv::bytes, g));
  } else {
    using DqSmem = GradSmem<Cfg::rows, Cfg::tile, Cfg::dim>;
    if (auto s = launched(a, simt::set_max_dynamic_shared(grad_dq_kernel<Cfg>, int(DqSmem::bytes)))) return s;
    if (auto s = per_slice(kBackwardExactStage, grad_dq_kernel<Cfg>, q_tiles, unsigned(Cfg::threads), DqSmem::bytes))
      return s;
    constexpr int KB = DkvShape<Cfg>::KB;
    const unsigned k_tiles = unsigned((a.problem.nk + KB - 1) / KB);
    if (auto s = launched(a, simt::set_max_dynamic_shared(grad_dkv_kernel<Cfg>, int(DkvShape<Cfg>::bytes)))) return s;
    return launched(a, launch_in_parts(a, kBackwardExactStage, p, kv_slices, grad_dkv_kernel<Cfg>, k_tiles,
                                       unsigned(Cfg::threads), DkvShape<Cfg>::bytes, g));
  }
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
