// runtime/kernels/select.cuh: stage 2 of the MRA forward pipeline (forward.cuh), selection: the pooled logits
// of the candidate pairs as 64-bit keys, and the radix select of the refined blocks at each level.
#pragma once

#include "kernels/common.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

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

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
