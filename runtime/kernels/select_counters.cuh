// runtime/kernels/select_counters.cuh: the selection's workspace counters (select.cuh), cleared by the stage that
// runs before it. The selection's launches add to these counters, so they must start at 0 on every call; the
// kernels that run first on the selection's layout (pool_kernel, pool.cuh; group_pool_kernel, group.cuh) clear
// them, and include this header for that alone rather than the whole selection.
#pragma once

#include "kernels/common.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// The counters the selection of level li adds to in later launches start at 0: the slice's radix histograms (level
// 1, and the levels l >= 2 under the global policy; coarse_rank_kernel, level_rank_kernel), or at short N instead
// the short-N kernel's histogram and ticket (level1_small_select_kernel; the layout has no radix histograms then).
// By the threads of one CTA; `L` is the layout the selection runs in (a group's, §8.4).
__device__ inline void clear_select_counters(const Params& p, const Layout& L, int li, int64_t slice) {
  const Level& lv = L.level[li];
  if (li > 0 && L.by_row) return;
  if (!lv.small) {
    uint64_t* hist = at<uint64_t>(p, lv.hist) + slice * kPasses * kHistWords;
    for (int i = threadIdx.x; i < kPasses * kHistWords; i += blockDim.x) hist[i] = 0;
    return;
  }
  uint32_t* small_hist = at<uint32_t>(p, lv.small_hist) + slice * kHistWords;
  for (int i = threadIdx.x; i < kHistWords; i += blockDim.x) small_hist[i] = 0;
  if (threadIdx.x == 0) at<uint32_t>(p, lv.ticket)[slice] = 0;
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
