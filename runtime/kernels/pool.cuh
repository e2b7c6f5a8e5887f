// runtime/kernels/pool.cuh: stage 1 of the MRA forward pipeline (forward.cuh): pooled means, V sums, counts.
#pragma once

#include "kernels/common.cuh"
#include "kernels/select_counters.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// Stage 1 (§2.2): pooling at level `li`. Grid (nq_l + nk_l, slices), Cfg::dim threads, one feature each.
// Query blocks come first, then key blocks. At level 1 the CTA also records whether its block holds a
// non-finite value in a real token (§2.7; for a key block, which key first, §9.5: 1 + its offset in the block).
// CTA 0 clears the slice's selection counters of the level (clear_select_counters, select_counters.cuh).
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
  // Keys and values are those of the slice's K/V head (§8): each query head of a group pools them again.
  const Rows<const T> x = is_q ? q_rows<T>(p, slice) : k_rows<T>(p, slice);
  const Rows<const T> vv = v_rows<T>(p, slice);
  const int d = threadIdx.x;

  __shared__ int first_bad;  // offset in the block of the first token with a non-finite value, side if none
  if (d == 0) first_bad = lv.side;
  if (blockIdx.x == 0) clear_select_counters(p, p.layout, li, slice);
  __syncthreads();
  float sx = 0.f, sv = 0.f;
  int count = 0;
  int32_t bad = t1;  // this feature's first token with a non-finite value
  for (int32_t i = t0; i < t1; ++i) {
    if (!is_real(mask, b, n, i)) continue;
    const float a = to_float(x.row(i)[d]);
    sx += a;
    bool ok = finite(a);
    if (!is_q) {
      const float c = to_float(vv.row(i)[d]);
      sv += c;
      ok = ok && finite(c);
    }
    if (!ok && bad == t1) bad = i;
    ++count;
  }
  if (li == 0 && bad < t1) atomicMin(&first_bad, int(bad - t0));
  const float mean = count > 0 ? sx / float(count) : 0.f;
  const int32_t nb = is_q ? lv.nq : lv.nk;
  float* means = at<float>(p, is_q ? lv.qmean : lv.kmean) + (slice * nb + blk) * D;
  means[d] = mean;
  if (!is_q) at<float>(p, lv.vsum)[(slice * nb + blk) * D + d] = sv;
  if (h == 0 && d == 0) at<float>(p, is_q ? lv.qcount : lv.kcount)[int64_t(b) * nb + blk] = float(count);
  __syncthreads();
  if (li == 0 && d == 0)
    at<int32_t>(p, p.layout.block_bad)[slice * (lv.nq + lv.nk) + blockIdx.x] = first_bad < lv.side ? first_bad + 1 : 0;
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
