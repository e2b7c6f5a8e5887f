// runtime/kernels/coarse.cuh: the coarse components (§2.6, mode full), a stage of the MRA forward pipeline
// (forward.cuh) between the selection and the attention kernels: computed once per block row of every coarse
// level, read by every attention CTA of that row.
#pragma once

#include "kernels/common.cuh"
#include "kernels/select.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// §2.6, level 1. Per level-1 block row r, over the candidates c of the row that were not refined
// (not in T_1), with λ = σ q̄_r·k̄_c:
//   max_r = max_c λ,   den_r = Σ_c exp(λ − max_r)·ck(c),   num_r = Σ_c exp(λ − max_r)·V(c)  (f32 [D])
// written to the workspace (cmax, cden, cnum); (−inf, 0, 0) for a row without such candidates. Grid (bands *
// split, slices): a CTA owns the same band of kBandRows block rows and column range as the selection (sweep_of)
// and sweeps it with coarse_sweep, so the logits are the selection's, bit for bit. With split > 1 each CTA writes
// its range's partial (max, den, num) (pmax, pden, pnum, [row, part]) and coarse_merge_kernel combines the ranges.
// Per column tile: the refined pairs of each
// band row as a bit mask (band row t's next refined columns, from its CSR list, by thread t), the online max
// and rescale per row (the row's W lanes agree on it by xor shuffles), the weights through shared memory, and
// num += P·V as a second register-tiled GEMM: a thread keeps rows ty + W i and features tx + W e. The
// denominator is summed per lane in column order, then over the row's lanes in xor order at the end. Every
// sum has a fixed order: the result is bitwise reproducible run to run. Causal attention (§9.3): coarse_sweep
// gives the pairs that are not visible no logit, so they weigh 0; and the V sums from the key block holding the
// first non-finite key on are read as 0, so that a weight 0 never meets a NaN: every row whose coarse pairs reach
// that block is NaN anyway (§9.5).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_level1_kernel(Params p) {
  constexpr int D = Cfg::dim, W = kBandRows / kMicro, TD = D / W;
  static_assert(D % W == 0, "a row's lanes split the features evenly");
  static_assert(kBandCols == 64, "a band row's refined columns of one tile are one 64-bit mask");
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const Sweep g = sweep_of(lv);
  const int32_t row0 = g.row0;
  const int tid = threadIdx.x, tx = tid % W, ty = tid / W;
  const int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
  const int32_t* sel = at<int32_t>(p, lv.col) + slice * lv.cap;
  const float* vsum = at<float>(p, lv.vsum) + slice * lv.nk * D;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  const int32_t first_bad = first_bad_key(p, slice), col_end = first_bad < p.nk ? first_bad / lv.side : lv.nk;
  __shared__ uint64_t refined[kBandRows];
  __shared__ float wgt[kBandRows][kBandCols + 1];  // padded: the rows of one warp's two ty hit distinct banks
  __shared__ float vs[kGemmK][D];

  // Band row `tid`'s refined columns not yet passed: [next, end) of its sorted CSR list, from the range's first.
  int32_t next = 0, end = 0;
  if (tid < kBandRows && row0 + tid < lv.nq) {
    next = rowptr[row0 + tid];
    end = rowptr[row0 + tid + 1];
    while (next < end && sel[next] < g.c_begin) ++next;
  }
  float m[kMicro], den[kMicro], num[kMicro][TD];
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    m[i] = -INFINITY;
    den[i] = 0.f;
    MRA_UNROLL
    for (int e = 0; e < TD; ++e) num[i][e] = 0.f;
  }

  coarse_sweep<Cfg>(p, slice, g, [&](int32_t c0, const float (&logit)[kMicro][kMicro]) {
    if (tid < kBandRows) {
      uint64_t bits = 0;
      for (; next < end && sel[next] < c0 + kBandCols; ++next) bits |= uint64_t(1) << (sel[next] - c0);
      refined[tid] = bits;
    }
    __syncthreads();
    // Online softmax of the tile: the coarse logits (−inf: not a candidate, or refined), the new row max, the
    // rescale of what was summed so far, the weights.
    MRA_UNROLL
    for (int i = 0; i < kMicro; ++i) {
      const int r = ty + W * i;
      float x[kMicro], mx = m[i];
      MRA_UNROLL
      for (int j = 0; j < kMicro; ++j) {
        const int c = tx + W * j;
        x[j] = refined[r] >> c & 1u ? -INFINITY : logit[i][j];
        mx = x[j] > mx ? x[j] : mx;
      }
      for (int o = W / 2; o > 0; o /= 2) {
        const float y = __shfl_xor_sync(0xffffffffu, mx, o);
        mx = y > mx ? y : mx;
      }
      const float rescale = m[i] == -INFINITY ? 0.f : expf(m[i] - mx);
      m[i] = mx;
      den[i] *= rescale;
      MRA_UNROLL
      for (int e = 0; e < TD; ++e) num[i][e] *= rescale;
      MRA_UNROLL
      for (int j = 0; j < kMicro; ++j) {
        const float w = x[j] == -INFINITY ? 0.f : expf(x[j] - mx);
        wgt[r][tx + W * j] = w;
        if (w != 0.f) den[i] += w * kcount[c0 + tx + W * j];
      }
    }
    // num += P·V over the tile's columns, kGemmK V sums at a time through shared memory (zero past nk, where
    // every weight is 0, and past col_end).
    for (int k0 = 0; k0 < kBandCols; k0 += kGemmK) {
      __syncthreads();
      for (int e = tid; e < kGemmK * D; e += blockDim.x) {
        const int32_t c = c0 + k0 + e / D;
        vs[e / D][e % D] = c < col_end ? vsum[int64_t(c) * D + e % D] : 0.f;
      }
      __syncthreads();
      for (int k = 0; k < kGemmK; ++k) {
        float a[kMicro], v[TD];
        MRA_UNROLL
        for (int i = 0; i < kMicro; ++i) a[i] = wgt[ty + W * i][k0 + k];
        MRA_UNROLL
        for (int e = 0; e < TD; ++e) v[e] = vs[k][tx + W * e];
        MRA_UNROLL
        for (int i = 0; i < kMicro; ++i)
          MRA_UNROLL
          for (int e = 0; e < TD; ++e) num[i][e] += a[i] * v[e];
      }
    }
    __syncthreads();  // every thread is done with this tile's mask and weights
  });

  // Row r's result, or with split > 1 its range's partial, at index r * split + part.
  const bool whole = lv.split == 1;
  const int64_t n = int64_t(lv.nq) * lv.split;
  float* cmax = at<float>(p, whole ? lv.cmax : lv.pmax) + slice * n;
  float* cden = at<float>(p, whole ? lv.cden : lv.pden) + slice * n;
  float* cnum = at<float>(p, whole ? lv.cnum : lv.pnum) + slice * n * D;
  MRA_UNROLL
  for (int i = 0; i < kMicro; ++i) {
    for (int o = W / 2; o > 0; o /= 2) den[i] += __shfl_xor_sync(0xffffffffu, den[i], o);
    const int32_t r = row0 + ty + W * i;
    if (r >= lv.nq) continue;
    const int64_t at_r = int64_t(r) * lv.split + g.part;
    if (tx == 0) {
      cmax[at_r] = m[i];
      cden[at_r] = den[i];
    }
    MRA_UNROLL
    for (int e = 0; e < TD; ++e) cnum[at_r * D + tx + W * e] = num[i][e];
  }
}

// Split > 1: the level-1 coarse components of each block row from its ranges' partials, merged in range order
// (the online softmax's merge: max M over the ranges, then den = Σ exp(m_s − M)·den_s and num likewise, s = 0,
// 1, ...), so the result is bitwise reproducible run to run. One thread per (row, feature); the feature-0 thread
// also writes the max and the denominator. Grid (ceil(nq·D / kGemmThreads), slices).
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_merge_kernel(Params p) {
  constexpr int D = Cfg::dim;
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int64_t e = int64_t(blockIdx.x) * kGemmThreads + threadIdx.x;
  if (e >= int64_t(lv.nq) * D) return;
  const int64_t r = e / D, d = e % D, n = int64_t(lv.nq) * lv.split, first = r * lv.split;
  const float* pmax = at<float>(p, lv.pmax) + slice * n + first;
  const float* pden = at<float>(p, lv.pden) + slice * n + first;
  const float* pnum = at<float>(p, lv.pnum) + (slice * n + first) * D + d;
  float m = -INFINITY;
  for (int32_t s = 0; s < lv.split; ++s) m = pmax[s] > m ? pmax[s] : m;
  // A range without unrefined candidates has (−inf, 0, 0): weight 0. A row without any keeps (−inf, 0, 0); the
  // weight 1 there (not exp(−inf + inf)) also carries a NaN of a poisoned slice's partials, as the one-CTA sweep.
  float den = 0.f, num = 0.f;
  for (int32_t s = 0; s < lv.split; ++s) {
    const float w = m == -INFINITY ? 1.f : expf(pmax[s] - m);
    den += w * pden[s];
    num += w * pnum[int64_t(s) * D];
  }
  at<float>(p, lv.cnum)[(slice * lv.nq + r) * D + d] = num;
  if (d == 0) {
    at<float>(p, lv.cmax)[slice * lv.nq + r] = m;
    at<float>(p, lv.cden)[slice * lv.nq + r] = den;
  }
}

// §2.6, levels l >= 2 (mode full; level index li). Per level-l block row r, over its candidates c (the rho children
// in row r of each refined pair of its parent row, §2.5) that were not refined (not in T_l), with λ = σ q̄_r·k̄_c:
//   max_r = max_c λ,   den_r = Σ_c exp(λ − max_r)·ck(c),   num_r = Σ_c exp(λ − max_r)·V(c)  (f32 [D])
// written to the level's cmax, cden, cnum ((−inf, 0, 0) for a row without such candidates), for the attention
// kernels to merge with level 1's: once per row, instead of by every attention CTA of the row. One CTA per parent
// row (grid (nq_{l-1}, slices)): its rho child rows share the candidate columns, whose k̄ rows and V sums are
// staged through shared memory kLevelCols at a time, coalesced, once per parent row. Per step, warp w takes child
// rows w, w + 8, ...: a lane per column, the logit as a D-long dot in feature order (as the selection's), the
// step max over the lanes (xor shuffles), the rescale of the row's running max, the weights, the denominator per
// lane and then over the lanes in xor order; then every thread adds weights x V sums into its (row, feature)
// numerators in column order. Only a visible pair counts (causal attention, §9.3), and a weight 0 adds nothing, so
// the V sums of the key blocks from the first non-finite key on never meet one (every row that reaches them is
// NaN anyway, §9.5). Every sum has a fixed order: bitwise reproducible run to run.
inline constexpr int kLevelCols = 32;  // one lane per column of a step
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_level_kernel(Params p, int li) {
  constexpr int D = Cfg::dim, RHO = Cfg::rho, NT = kGemmThreads, WARPS = NT / 32;
  constexpr int OWN = (RHO + WARPS - 1) / WARPS, PER = (RHO * D + NT - 1) / NT;  // rows per warp, numerators per thread
  const Level& lv = p.layout.level[li];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int32_t rho = p.layout.level[li - 1].side / lv.side, r0 = int32_t(blockIdx.x) * rho;
  const RowCandidates cand(p, slice, li, r0);  // the parent row's candidates, shared by its child rows
  const float* kmean = at<float>(p, lv.kmean) + slice * lv.nk * D;
  const float* vsum = at<float>(p, lv.vsum) + slice * lv.nk * D;
  const float* qcount = at<float>(p, lv.qcount) + int64_t(b) * lv.nq;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * lv.nk;
  __shared__ float qbar[RHO][D];
  __shared__ float ks[kLevelCols][D + 1];  // padded: the lanes' dots read 32 rows at distinct banks
  __shared__ float vs[kLevelCols][D];
  __shared__ float wgt[RHO][kLevelCols];
  __shared__ float rescale[RHO];
  __shared__ int32_t cols[kLevelCols];  // key-block column of the step's candidates; -1 past the row's or nk
  for (int e = tid; e < RHO * D; e += NT) {
    const int32_t r = r0 + e / D;
    qbar[e / D][e % D] = e / D < rho && r < lv.nq ? at<float>(p, lv.qmean)[(slice * lv.nq + r) * D + e % D] : 0.f;
  }
  float m[OWN], den[OWN], num[PER];
  MRA_UNROLL
  for (int k = 0; k < OWN; ++k) {
    m[k] = -INFINITY;
    den[k] = 0.f;
  }
  MRA_UNROLL
  for (int j = 0; j < PER; ++j) num[j] = 0.f;

  for (int32_t u0 = 0; u0 < cand.count; u0 += kLevelCols) {
    if (tid < kLevelCols) {
      const int32_t c = u0 + tid < cand.count ? cand.column(u0 + tid) : lv.nk;
      cols[tid] = c < lv.nk ? c : -1;
    }
    __syncthreads();  // cols written; the step before is done with ks, vs, wgt
    for (int e = tid; e < kLevelCols * D; e += NT) {
      const int32_t c = cols[e / D];
      ks[e / D][e % D] = c >= 0 ? kmean[int64_t(c) * D + e % D] : 0.f;
      vs[e / D][e % D] = c >= 0 ? vsum[int64_t(c) * D + e % D] : 0.f;
    }
    __syncthreads();
    MRA_UNROLL
    for (int k = 0; k < OWN; ++k) {
      const int i = warp + WARPS * k;
      if (i >= RHO) break;  // uniform over the warp
      const int32_t r = r0 + i, c = cols[lane];
      float x = -INFINITY;
      if (i < rho && r < lv.nq && qcount[r] > 0.f && c >= 0 && kcount[c] > 0.f &&
          pair_place(p, lv.side, r, c) == order::kVisible && !refined(p, slice, li, r, c))
        x = p.scale * dot<D>(qbar[i], ks[lane]);
      float mx = x > m[k] ? x : m[k];
      for (int o = 16; o > 0; o /= 2) {
        const float y = __shfl_xor_sync(0xffffffffu, mx, o);
        mx = y > mx ? y : mx;
      }
      const float a = m[k] == -INFINITY ? 0.f : expf(m[k] - mx);
      const float w = x == -INFINITY ? 0.f : expf(x - mx);
      wgt[i][lane] = w;
      float dsum = w != 0.f ? w * kcount[c] : 0.f;
      for (int o = 16; o > 0; o /= 2) dsum += __shfl_xor_sync(0xffffffffu, dsum, o);
      den[k] = den[k] * a + dsum;
      m[k] = mx;
      if (lane == 0) rescale[i] = a;
    }
    __syncthreads();
    MRA_UNROLL
    for (int j = 0; j < PER; ++j) {
      const int e = tid + NT * j;
      if (e >= RHO * D) break;
      float acc = num[j] * rescale[e / D];
      for (int c = 0; c < kLevelCols; ++c) {
        const float w = wgt[e / D][c];
        if (w != 0.f) acc += w * vs[c][e % D];
      }
      num[j] = acc;
    }
  }

  float* cmax = at<float>(p, lv.cmax) + slice * lv.nq;
  float* cden = at<float>(p, lv.cden) + slice * lv.nq;
  float* cnum = at<float>(p, lv.cnum) + slice * lv.nq * D;
  MRA_UNROLL
  for (int k = 0; k < OWN; ++k) {
    const int i = warp + WARPS * k;
    if (lane == 0 && i < rho && r0 + i < lv.nq) {
      cmax[r0 + i] = m[k];
      cden[r0 + i] = den[k];
    }
  }
  MRA_UNROLL
  for (int j = 0; j < PER; ++j) {
    const int e = tid + NT * j;
    if (e < rho * D && r0 + e / D < lv.nq) cnum[int64_t(r0) * D + e] = num[j];
  }
}

// Short N (Level::small): the level-1 coarse components from the logits the selection stored, so no GEMM for
// them: a CTA takes kSmallCoarseRows block rows, whole (no column ranges, no merge), a row's 16 lanes taking
// columns tx, tx + 16, ... Per row: the refined pairs as a bit mask of its columns (from its CSR list), then two
// passes over the stored logits: the maximum over the unrefined candidates, then the weights exp(λ − max),
// through shared memory 64 columns at a time with the V sums of those columns, for num += P·V (thread (row, tx)
// keeps features tx + 16 e) and den += weight·ck per lane in column order, then over the row's lanes in xor
// order. Fixed orders throughout: bitwise reproducible run to run; the same values as coarse_level1_kernel up to
// the order of the f32 sums. Never causal (small needs the global policy, causal attention policy row): no pair
// is masked by the diagonal and no V sum is cut at a first non-finite key. Grid (ceil(nq / kSmallCoarseRows), slices).
inline constexpr int kSmallCoarseRows = 16, kSmallCoarseChunk = 64;
// The refined mask's words: at most kSmallCoarseRows rows of ceil(nk / 32) words; with nq * nk <= kSmallPairs that
// is at most 16 x 32 (nq >= 16, so nk <= 1024) or nq x (nk / 32 + 1) <= 512 + 15 (nq < 16).
inline constexpr int kSmallMaskWords = kSmallCoarseRows * 32 + kSmallCoarseRows;
static_assert(kSmallPairs == kSmallCoarseRows * 32 * 32, "kSmallMaskWords bounds the mask for kSmallPairs");
template <class Cfg>
__global__ void __launch_bounds__(kGemmThreads) coarse_level1_small_kernel(Params p) {
  constexpr int D = Cfg::dim, W = kGemmThreads / kSmallCoarseRows, TD = D / W;
  static_assert(D % W == 0 && kSmallCoarseChunk % W == 0, "a row's lanes split the features and columns evenly");
  const Level& lv = p.layout.level[0];
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads), nk = lv.nk, words = (nk + 31) / 32;
  const int tid = threadIdx.x, tx = tid % W, ty = tid / W;
  const int32_t r = int32_t(blockIdx.x) * kSmallCoarseRows + ty;
  const bool row = r < lv.nq;  // uniform over the row's W lanes
  const float* logit = at<float>(p, lv.logits) + (slice * lv.nq + (row ? r : 0)) * nk;
  const float* vsum = at<float>(p, lv.vsum) + slice * nk * D;
  const float* kcount = at<float>(p, lv.kcount) + int64_t(b) * nk;
  __shared__ uint32_t refined[kSmallMaskWords];
  __shared__ float wgt[kSmallCoarseRows][kSmallCoarseChunk + 1];
  __shared__ float vs[kSmallCoarseChunk][D];
  uint32_t* mask = refined + ty * words;
  const int32_t rows = lv.nq - int32_t(blockIdx.x) * kSmallCoarseRows;  // real rows of the CTA: their masks
  for (int32_t i = tid; i < (rows < kSmallCoarseRows ? rows : kSmallCoarseRows) * words; i += kGemmThreads) refined[i] = 0;
  __syncthreads();
  if (row) {
    const int32_t* rowptr = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
    const int32_t* sel = at<int32_t>(p, lv.col) + slice * lv.cap;
    for (int32_t i = rowptr[r] + tx; i < rowptr[r + 1]; i += W) atomicOr(&mask[sel[i] / 32], 1u << (sel[i] % 32));
  }
  __syncthreads();
  // The coarse logit of column c: −inf when not a candidate or refined.
  const auto coarse = [&](int32_t c) { return mask[c / 32] >> (c % 32) & 1u ? -INFINITY : logit[c]; };
  float m = -INFINITY;
  for (int32_t c = tx; row && c < nk; c += W) {
    const float x = coarse(c);
    m = x > m ? x : m;
  }
  for (int o = W / 2; o > 0; o /= 2) {
    const float y = __shfl_xor_sync(0xffffffffu, m, o);
    m = y > m ? y : m;
  }
  float den = 0.f, num[TD] = {};
  for (int32_t c0 = 0; c0 < nk; c0 += kSmallCoarseChunk) {
    MRA_UNROLL
    for (int j = 0; j < kSmallCoarseChunk / W; ++j) {
      const int32_t c = c0 + tx + W * j;
      const float x = row && c < nk ? coarse(c) : -INFINITY;
      const float w = x == -INFINITY ? 0.f : expf(x - m);
      wgt[ty][tx + W * j] = w;
      if (w != 0.f) den += w * kcount[c];
    }
    for (int e = tid; e < kSmallCoarseChunk * D; e += kGemmThreads) {
      const int32_t c = c0 + e / D;
      vs[e / D][e % D] = c < nk ? vsum[int64_t(c) * D + e % D] : 0.f;
    }
    __syncthreads();
    for (int k = 0; k < kSmallCoarseChunk; ++k) {
      const float w = wgt[ty][k];
      MRA_UNROLL
      for (int e = 0; e < TD; ++e) num[e] += w * vs[k][tx + W * e];
    }
    __syncthreads();  // wgt and vs are refilled
  }
  for (int o = W / 2; o > 0; o /= 2) den += __shfl_xor_sync(0xffffffffu, den, o);
  if (!row) return;
  if (tx == 0) {
    at<float>(p, lv.cmax)[slice * lv.nq + r] = m;
    at<float>(p, lv.cden)[slice * lv.nq + r] = den;
  }
  float* cnum = at<float>(p, lv.cnum) + (slice * lv.nq + r) * D;
  MRA_UNROLL
  for (int e = 0; e < TD; ++e) cnum[tx + W * e] = num[e];
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
