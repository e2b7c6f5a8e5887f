// runtime/kernels/group.cuh: a selection shared by each group of query heads (docs/semantics.md §8.4,
// MRA_SELECTION_GROUP). The selection stages of select.cuh run unchanged on the group region of the workspace
// (layout.h, group_layout), whose slices are the (batch, K/V head) pairs; these two kernels feed them and hand
// their result to the query heads, so that the coarse and attention kernels read every head's T_l as before:
//   group_pool_kernel   after pool_kernel: per group and block, the mean of its heads' pooled queries, its K/V
//                       head's pooled keys, and the non-finite flags of its blocks (a query block is bad when it
//                       is in any head of the group)
//   group_share_kernel  after the selection: every query head gets its group's T_l (CSR), poison flags and the
//                       group's query-block flags (§9.5: a row is NaN when its block is bad in any head)
#pragma once

#include "kernels/common.cuh"
#include "kernels/select_counters.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// The slice of the first query head of group slice `gs` = b * heads_kv + j (heads j * group ... of batch b).
__device__ inline int64_t first_head_slice(const Params& p, int64_t gs) {
  const int64_t hkv = p.heads / p.group;
  return gs / hkv * p.heads + gs % hkv * p.group;
}

// Grid (nq_l + nk_l, batch * heads_kv), Cfg::dim threads, one feature each; query blocks first, as pool_kernel.
// `g` is the group region's layout. CTA 0 of each group also clears its selection counters of the level, as
// pool_kernel does.
template <class Cfg>
__global__ void __launch_bounds__(Cfg::dim) group_pool_kernel(Params p, Layout g, int li) {
  constexpr int D = Cfg::dim;
  const Level& lv = p.layout.level[li];
  const Level& gv = g.level[li];
  const int64_t gs = p.slice0 + int64_t(blockIdx.y), first = first_head_slice(p, gs);
  const bool is_q = int32_t(blockIdx.x) < lv.nq;
  const int32_t blk = is_q ? int32_t(blockIdx.x) : int32_t(blockIdx.x) - lv.nq, nb = is_q ? lv.nq : lv.nk;
  const int d = threadIdx.x;
  if (blockIdx.x == 0) clear_select_counters(p, g, li, gs);
  if (is_q) {  // the group's mean query, pooled: the mean of its heads' pooled queries, summed in head order
    const float* means = at<float>(p, lv.qmean);
    float sum = 0.f;
    for (int32_t t = 0; t < p.group; ++t) sum += means[((first + t) * nb + blk) * D + d];
    at<float>(p, gv.qmean)[(gs * nb + blk) * D + d] = sum / float(p.group);
  } else {  // every head of the group pooled the same K/V head
    at<float>(p, gv.kmean)[(gs * nb + blk) * D + d] = at<float>(p, lv.kmean)[(first * nb + blk) * D + d];
  }
  if (li == 0 && d == 0) {
    const int64_t blocks = lv.nq + lv.nk;
    const int32_t* bad = at<int32_t>(p, p.layout.block_bad) + first * blocks + blockIdx.x;
    int32_t flag = bad[0];  // a key block: its K/V head's first bad key, the same in every head
    if (is_q)
      for (int32_t t = 1; t < p.group; ++t) flag |= bad[t * blocks];
    at<int32_t>(p, g.block_bad)[gs * blocks + blockIdx.x] = flag;
  }
}

inline constexpr int kShareThreads = 128;

// Grid (1, batch * heads), kShareThreads threads: query head slice s takes the selection of its group (every
// level's CSR), the group's poison flags, and the group's flags of the level-1 query blocks.
template <class Cfg>
__global__ void __launch_bounds__(kShareThreads) group_share_kernel(Params p, Layout g) {
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int64_t hkv = p.heads / p.group, gs = slice / p.heads * hkv + slice % p.heads / p.group;
  const int tid = threadIdx.x;
  for (int li = 0; li < Cfg::steps; ++li) {
    const Level& lv = p.layout.level[li];
    const Level& gv = g.level[li];
    const int32_t* grow = at<int32_t>(p, gv.rowptr) + gs * (gv.nq + 1);
    const int32_t* gcol = at<int32_t>(p, gv.col) + gs * gv.cap;
    int32_t* row = at<int32_t>(p, lv.rowptr) + slice * (lv.nq + 1);
    int32_t* col = at<int32_t>(p, lv.col) + slice * lv.cap;
    for (int32_t r = tid; r <= lv.nq; r += kShareThreads) row[r] = grow[r];
    for (int32_t t = tid; t < grow[gv.nq]; t += kShareThreads) col[t] = gcol[t];
  }
  const Level& l1 = p.layout.level[0];
  const int64_t blocks = l1.nq + l1.nk;
  for (int32_t r = tid; r < l1.nq; r += kShareThreads)
    at<int32_t>(p, p.layout.block_bad)[slice * blocks + r] = at<int32_t>(p, g.block_bad)[gs * blocks + r];
  if (tid == 0) {
    at<int32_t>(p, p.layout.slice_bad)[slice] = at<int32_t>(p, g.slice_bad)[gs];
    if (p.layout.causal) at<int32_t>(p, p.layout.first_bad)[slice] = at<int32_t>(p, g.first_bad)[gs];
  }
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
