// runtime/kernels/backward_mma.cuh: the exact part of the MRA backward (stages 5 and 6 of backward.cuh) for f16/bf16
// storage on tensor cores, the FlashAttention-2 backward's products on the refined blocks: S = Q Kᵀ recomputed,
// dP = dO Vᵀ, dQ += dS K (grad_dq_mma_kernel, a warp per 16 query rows) and Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, dV += Pᵀ dO,
// dK += dSᵀ Q (grad_dkv_mma_kernel, a warp per 16 keys), each with mma.sync.m16n8k16 (f32 accumulate) on fragments
// loaded by ldmatrix (.trans for the B side of the accumulating products), through runtime/simt/intrinsics.h so that
// the emulator runs this source. Precision (docs/kernels.md, "Backward", tensor cores): q, k, v, dout are the stored
// 16-bit values; S and dP are f32 sums of exact products; P = exp(σ s − m_i) / Z_i and dS = P (dP − δ_i) are f32 and
// rounded to the storage type (round to nearest even) only as the A operand of dV += Pᵀ dO, dK += dSᵀ Q and
// dQ += dS K, as FlashAttention-2 does; the gradients are rounded to the storage type once, at their store.
// Everything else (δ, the coarse levels, the order of the sums, the saved state read) is the CUDA-core kernels'.
#pragma once

#include "kernels/forward.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// C fragments (m16n8, f32) as attend_mma_kernel holds them: c[nt][r] is row g + 8 (r / 2) and column
// 8 nt + 2 t + r % 2 of the warp's 16-row tile, for lane 4 g + t.

// c = A Bᵀ for a warp: A its 16 rows, B N rows, both D features of type T in shared memory rows P elements apart.
// Fragments as the forward's S = Q Kᵀ: A by ldmatrix.x4 per 16 features, B two 8-row n-tiles per ldmatrix.x4.
template <class T, int D, int N, int P>
__device__ inline void warp_abt(float (&c)[N / 8][4], const T* a, const T* b, int lane) {
  MRA_UNROLL
  for (int nt = 0; nt < N / 8; ++nt)
    MRA_UNROLL
    for (int r = 0; r < 4; ++r) c[nt][r] = 0.f;
  MRA_UNROLL
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[4];
    simt::ldmatrix_x4(af, a + (lane % 16) * P + kk * 16 + 8 * (lane / 16));
    MRA_UNROLL
    for (int np = 0; np < N / 16; ++np) {
      uint32_t bf[4];
      simt::ldmatrix_x4(bf, b + (np * 16 + lane % 8 + 8 * (lane / 16)) * P + kk * 16 + 8 * (lane / 8 % 2));
      mma16816(c[2 * np], af, bf, T{});
      mma16816(c[2 * np + 1], af, bf + 2, T{});
    }
  }
}

// acc += W B for a warp: W its 16 x N weights in C fragments, rounded to T here as the A operand (the P / dS rounding
// of the precision contract); B N rows of FD features (T, rows P elements apart), by ldmatrix.x4.trans as the
// forward's V in O += P V.
template <class T, int N, int FD, int P>
__device__ inline void warp_wb(float (&acc)[FD / 8][4], const float (&w)[N / 8][4], const T* b, int lane) {
  MRA_UNROLL
  for (int j = 0; j < N / 16; ++j) {
    const uint32_t wa[4] = {pack2(w[2 * j][0], w[2 * j][1], T{}), pack2(w[2 * j][2], w[2 * j][3], T{}),
                            pack2(w[2 * j + 1][0], w[2 * j + 1][1], T{}),
                            pack2(w[2 * j + 1][2], w[2 * j + 1][3], T{})};
    MRA_UNROLL
    for (int dp = 0; dp < FD / 16; ++dp) {
      uint32_t bf[4];
      simt::ldmatrix_x4_trans(bf, b + (j * 16 + lane % 16) * P + dp * 16 + 8 * (lane / 16));
      mma16816(acc[2 * dp], wa, bf, T{});
      mma16816(acc[2 * dp + 1], wa, bf + 2, T{});
    }
  }
}

// Rows id[t] of x and y (zeros where t >= n or id[t] < 0, t < rows) into the T tiles xs, ys (rows P apart).
template <class T, int D, int P>
__device__ inline void load_tiles(const Rows<const T>& x, const Rows<const T>& y, const int32_t* id, int rows,
                                  T* xs, T* ys) {
  const T zero = from_float<T>(0.f);
  for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
    const int t = e / D, d = e % D;
    const bool real = id[t] >= 0;
    xs[t * P + d] = real ? x.row(id[t])[d] : zero;
    ys[t * P + d] = real ? y.row(id[t])[d] : zero;
  }
}

// The exact weight P and its gradient dS of one fragment element: row state st = (m, Z, δ) of its query, s and dp
// its S and dP entries; both 0 when the key slot is empty or the query has no term.
struct ExactGrad {
  float p, ds;
};
__device__ inline ExactGrad exact_grad(const Params& p, const float* st, bool key_real, float s, float dp) {
  const float w = key_real && st[1] > 0.f ? expf(p.scale * s - st[0]) / st[1] : 0.f;
  return {w, w * (dp - st[2])};
}

// A row of a warp's C fragments at their store: the token it is (a query of dq, a key of dk and dv), whether it is
// stored (inside the CTA's tile and below Nq or Nk) and whether that token is real (not masked).
struct FragRow {
  int32_t token;
  bool stored, real;
};

// The store of a warp's C fragments of N columns, shared by both kernels' outputs: for h = 0, 1, row(g + 8 h) gives
// the FragRow of row g + 8 h of the warp's 16-row tile; for a stored one, put(row, c, nt, r) for each of its columns
// c = 8 nt + 2 t + e, held in element r = 2 h + e of the warp's fragments [nt].
template <int N, class RowFn, class PutFn>
__device__ inline void store_c_fragments(int lane, RowFn&& row, PutFn&& put) {
  const int gr = lane / 4, t4 = lane % 4;
  MRA_UNROLL
  for (int h = 0; h < 2; ++h) {
    const FragRow fr = row(gr + 8 * h);
    if (!fr.stored) continue;
    MRA_UNROLL
    for (int nt = 0; nt < N / 8; ++nt)
      MRA_UNROLL
      for (int e = 0; e < 2; ++e) put(fr, nt * 8 + 2 * t4 + e, nt, 2 * h + e);
  }
}

// Stage 5 on tensor cores: dq of a tile of BM query rows inside one finest block R (grid and order as
// grad_dq_kernel): per key tile of R's refined keys, S = Q Kᵀ and dP = dO Vᵀ per warp, dS in registers, dQ += dS K.
template <class Cfg>
struct GradDqMmaSmem {
  using T = typename Cfg::T;
  static constexpr int D = Cfg::dim, M = 16 * Cfg::slabs, BN = Cfg::tile, P = D + 8;
  static constexpr int q = 0, g = q + M * P, k = g + M * P, v = k + BN * P, t_elems = v + BN * P;  // T elements
  static constexpr size_t row = (size_t(t_elems) * sizeof(T) + 15) / 16 * 16;  // bytes: float [M][3] (m, Z, δ)
  static constexpr size_t id = row + size_t(M) * 3 * 4;                         // bytes: int32 [M + BN]
  static constexpr size_t bytes = id + size_t(M + BN) * 4;
  static_assert(P * sizeof(T) % 16 == 0, "ldmatrix rows are 16-byte aligned");
};

template <class Cfg>
__global__ void __launch_bounds__(Cfg::threads, Cfg::min_ctas) grad_dq_mma_kernel(Params p, GradArgs g) {
  using T = typename Cfg::T;
  using S = GradDqMmaSmem<Cfg>;
  constexpr int D = Cfg::dim, BM = Cfg::rows, BN = Cfg::tile, M = S::M, P = S::P;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  T* qs = reinterpret_cast<T*>(smem) + S::q;
  T* gs = reinterpret_cast<T*>(smem) + S::g;
  T* ks = reinterpret_cast<T*>(smem) + S::k;
  T* vs = reinterpret_cast<T*>(smem) + S::v;
  float* rs = reinterpret_cast<float*>(smem + S::row);
  int32_t* id = reinterpret_cast<int32_t*>(smem + S::id);
  int32_t* key = id + M;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gr = lane / 4, t4 = lane % 4;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), row0 = int32_t(blockIdx.x) * BM;
  const bool bad = grad_poisoned(p, g, slice);

  // Load: the tile's query rows (id -1: padding of the 16-row slabs, past Nq or masked), their dout and state.
  for (int t = tid; t < M; t += blockDim.x) {
    const int32_t i = row0 + t;
    id[t] = t < BM && i < p.nq && is_real(p.qmask, b, p.nq, i) ? i : -1;
  }
  __syncthreads();
  load_tiles<T, D, P>(q_rows<T>(p, slice), dout_rows<T>(p, g.dout, slice), id, M, qs, gs);
  load_row_state(p, g, slice, id, M, rs);
  float acc[D / 8][4];
  MRA_UNROLL
  for (int nt = 0; nt < D / 8; ++nt)
    MRA_UNROLL
    for (int r = 0; r < 4; ++r) acc[nt][r] = 0.f;

  const Level& fin = p.layout.level[Cfg::steps - 1];
  const int32_t R = row0 / Cfg::finest;
  const int32_t* fin_row = at<int32_t>(p, fin.rowptr) + slice * (fin.nq + 1);
  const int32_t* fin_col = at<int32_t>(p, fin.col) + slice * fin.cap;
  const int32_t first = fin_row[R], keys_total = bad ? 0 : (fin_row[R + 1] - first) * Cfg::finest;
  const Rows<const T> k = k_rows<T>(p, slice), v = v_rows<T>(p, slice);
  for (int32_t u0 = 0; u0 < keys_total; u0 += BN) {
    __syncthreads();  // every warp is done with the previous tile's K, V and key slots
    for (int n = tid; n < BN; n += blockDim.x) {
      const int32_t u = u0 + n;
      int32_t j = -1;
      if (u < keys_total) {
        const int32_t jj = fin_col[first + u / Cfg::finest] * Cfg::finest + u % Cfg::finest;
        if (jj < p.nk && is_real(p.kmask, b, p.nk, jj)) j = jj;
      }
      key[n] = j;
    }
    __syncthreads();
    load_tiles<T, D, P>(k, v, key, BN, ks, vs);
    __syncthreads();  // the tile is in shared memory for every warp's ldmatrix
    float s[BN / 8][4], dp[BN / 8][4];
    warp_abt<T, D, BN, P>(s, qs + warp * 16 * P, ks, lane);
    warp_abt<T, D, BN, P>(dp, gs + warp * 16 * P, vs, lane);
    MRA_UNROLL
    for (int nt = 0; nt < BN / 8; ++nt)
      MRA_UNROLL
      for (int r = 0; r < 4; ++r) {
        const int x = warp * 16 + gr + 8 * (r / 2), n = nt * 8 + 2 * t4 + r % 2;
        // §9.7: a crossing pair's future entries are no terms.
        s[nt][r] = exact_grad(p, rs + 3 * x, key[n] >= 0 && sees(p, row0 + x, key[n]), s[nt][r], dp[nt][r]).ds;
      }
    warp_wb<T, BN, D, P>(acc, s, ks, lane);
  }

  // Output: σ times the exact part, plus the coarse part of every level; rows g and g + 8 of the warp's slab.
  const Rows<T> dq = rows_of<T>(g.dq, p.q_strides, slice / p.heads, slice % p.heads);
  store_c_fragments<D>(
      lane,
      [&](int y) {
        const int x = warp * 16 + y;
        const int32_t i = row0 + x;
        const bool stored = x < BM && i < p.nq;
        return FragRow{i, stored, stored && is_real(p.qmask, b, p.nq, i)};
      },
      [&](const FragRow& fr, int d, int nt, int r) {
        float value = 0.f;
        if (fr.real && bad) value = quiet_nan();
        else if (fr.real) value = p.scale * acc[nt][r] + coarse_sum(p, g, slice, fr.token, d, D, &BackLevel::gq, true);
        dq.row(fr.token)[d] = from_float<T>(value);
      });
}

// Stage 6 on tensor cores: dk and dv of KB keys of one K/V head inside one finest key block C (grid, loops and order
// as grad_dkv_kernel). The keys are the M rows of 16-key slabs; at D >= 128 FS = 2 warps share a slab, each
// accumulating half of the features of dk and dv (both compute the slab's Sᵀ and dPᵀ) to stay within the registers.
template <class Cfg>
struct GradDkvMmaShape {
  using T = typename Cfg::T;
  static constexpr int D = Cfg::dim, F = Cfg::finest, P = D + 8;
  static constexpr int KB = F < 32 ? F : 32;     // real keys per CTA (divides the finest side)
  static constexpr int M = (KB + 15) / 16 * 16;  // key rows of the tiles (slabs of 16)
  static constexpr int FS = D >= 128 ? 2 : 1, FD = D / FS;
  static constexpr int threads = 32 * (M / 16) * FS;
  static constexpr int min_ctas = (Cfg::min_ctas * Cfg::threads + threads - 1) / threads;  // the forward's cap
  // Real query rows per step, inside one query block: at most 32, 16 at D >= 64 (with 32, the Sᵀ and dPᵀ fragments
  // beside the accumulators made ptxas 13.0 spill grad_dkv_mma_kernel of r32x1_d64 and r32x1_d128 at 168 registers).
  // The accumulation order over a block's query rows is the same either way (16 rows per mma, in row order).
  static constexpr int QMAX = D >= 64 ? 16 : 32;
  static constexpr int QR = F < QMAX ? F : QMAX;
  static constexpr int QB = (QR + 15) / 16 * 16;  // query slots per step (the k extent of dV += Pᵀ dO)
  static constexpr int k = 0, v = k + M * P, q = v + M * P, g = q + QB * P, t_elems = g + QB * P;  // T elements
  static constexpr size_t row = (size_t(t_elems) * sizeof(T) + 15) / 16 * 16;  // bytes: float [QB][3]
  static constexpr size_t id = row + size_t(QB) * 3 * 4;  // bytes: int32 [M] keys, [QB] queries, [threads] flags
  static constexpr size_t bytes = id + size_t(M + QB + threads) * 4;
};

template <class Cfg>
__global__ void __launch_bounds__(GradDkvMmaShape<Cfg>::threads, GradDkvMmaShape<Cfg>::min_ctas)
    grad_dkv_mma_kernel(Params p, GradArgs g) {
  using T = typename Cfg::T;
  using S = GradDkvMmaShape<Cfg>;
  constexpr int D = Cfg::dim, KB = S::KB, M = S::M, FD = S::FD, QR = S::QR, QB = S::QB, P = S::P, F = Cfg::finest;
  constexpr int NT = S::threads;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  T* ks = reinterpret_cast<T*>(smem) + S::k;
  T* vs = reinterpret_cast<T*>(smem) + S::v;
  T* qs = reinterpret_cast<T*>(smem) + S::q;
  T* gs = reinterpret_cast<T*>(smem) + S::g;
  float* rs = reinterpret_cast<float*>(smem + S::row);
  int32_t* key = reinterpret_cast<int32_t*>(smem + S::id);
  int32_t* qid = key + M;
  int32_t* flag = qid + QB;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gr = lane / 4, t4 = lane % 4;
  const int slab = warp / S::FS, f0 = warp % S::FS * FD;
  const KeyTile kt = key_tile<KB, F>(p);
  const int32_t j0 = kt.j0;

  for (int t = tid; t < M; t += NT) {
    const int32_t j = j0 + t;
    key[t] = t < KB && j < p.nk && is_real(p.kmask, kt.b, p.nk, j) ? j : -1;
  }
  __syncthreads();
  load_tiles<T, D, P>(k_rows<T>(p, kt.first), v_rows<T>(p, kt.first), key, M, ks, vs);
  float acck[FD / 8][4], accv[FD / 8][4];
  MRA_UNROLL
  for (int nt = 0; nt < FD / 8; ++nt)
    MRA_UNROLL
    for (int r = 0; r < 4; ++r) acck[nt][r] = accv[nt][r] = 0.f;
  const bool bad = for_refined_query_steps<Cfg, NT, QR, QB>(
      p, g, kt, qid, flag, [&](int64_t slice, const Rows<const T>& q, const Rows<const T>& dout, int32_t i0) {
        load_tiles<T, D, P>(q, dout, qid, QB, qs, gs);
        load_row_state(p, g, slice, qid, QB, rs);
        __syncthreads();  // the query tile and its state are in shared memory for every warp
        float s[QB / 8][4], dp[QB / 8][4];
        warp_abt<T, D, QB, P>(s, ks + slab * 16 * P, qs, lane);
        warp_abt<T, D, QB, P>(dp, vs + slab * 16 * P, gs, lane);
        MRA_UNROLL
        for (int nt = 0; nt < QB / 8; ++nt)
          MRA_UNROLL
          for (int r = 0; r < 4; ++r) {
            const int y = slab * 16 + gr + 8 * (r / 2), x = nt * 8 + 2 * t4 + r % 2;
            // §9.7: the key's entries of a crossing block that the row does not see are no terms.
            const bool term = key[y] >= 0 && sees(p, i0 + x, j0 + y);
            const ExactGrad e = exact_grad(p, rs + 3 * x, term, s[nt][r], dp[nt][r]);
            s[nt][r] = e.p;
            dp[nt][r] = e.ds;
          }
        warp_wb<T, QB, FD, P>(accv, s, gs + f0, lane);
        warp_wb<T, QB, FD, P>(acck, dp, qs + f0, lane);
      });  // the next step's first barrier (after its qid) keeps its loads behind every warp's use of this tile

  // Output: key_grad of rows g and g + 8 of the warp's slab, its FD features.
  const Rows<T> dk = rows_of<T>(g.dk, p.k_strides, kt.b, kt.hkv), dv = rows_of<T>(g.dv, p.v_strides, kt.b, kt.hkv);
  store_c_fragments<FD>(
      lane,
      [&](int y) {
        const int32_t j = j0 + slab * 16 + y;
        const bool stored = slab * 16 + y < KB && j < p.nk;
        return FragRow{j, stored, stored && is_real(p.kmask, kt.b, p.nk, j)};
      },
      [&](const FragRow& fr, int c, int nt, int r) {
        const int d = f0 + c;
        const KeyGrad kg = key_grad(p, g, kt, fr.token, d, D, fr.real, bad, acck[nt][r], accv[nt][r]);
        dk.row(fr.token)[d] = from_float<T>(kg.k);
        dv.row(fr.token)[d] = from_float<T>(kg.v);
      });
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
