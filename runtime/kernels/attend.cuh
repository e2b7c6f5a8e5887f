// runtime/kernels/attend.cuh: stage 3 of the MRA forward pipeline (forward.cuh), the fused attention kernel.
#pragma once

#include "kernels/common.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

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

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
