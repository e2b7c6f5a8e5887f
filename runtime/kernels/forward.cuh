// runtime/kernels/forward.cuh: the MRA forward pipeline (docs/semantics.md §2): launches one template per stage.
//
// Every generated file generated/<name>.cu includes this header, names its Config and defines its entry; it is
// compiled by nvcc for the CUDA backend and, unchanged, as C++ against runtime/simt/simt.h for the emulated
// backend (both in generated/CMakeLists.txt). The pipeline, per (batch, head) slice:
//   pool_kernel         (pool.cuh) masked means of q and k, sums of v, token counts, per block at every coarse level
//   coarse_max_kernel   (select.cuh) level 1: the pooled logits q̄·k̄ᵀ as a tiled f32 GEMM (recomputed by every level-1
//                       pass below, never stored) -> the maximum logit of every block row
//   coarse_hist_kernel  level 1, 3 radix passes: histogram of the next digit of the rank value
//   select_pick_kernel  ... and the digit of the budget-th largest value (one CTA per slice)
//   coarse_count_kernel level 1: per row, the pairs above the threshold and the ties
//   select_rows_kernel  level 1: CSR row offsets of T_1 and the tie quota's per-row base
//   coarse_write_kernel level 1: the columns of T_1, row by row in column order
//   refine_keys_kernel  level l >= 2: pooled logits of the children of T_{l-1} -> 64-bit keys
//   select_kernel       level l >= 2: the top budget_l keys by radix select -> T_l as CSR
//   attend_mma_kernel   (attend.cuh) per query tile: coarse components from pooled V sums, then the exact entries
//   / attend_kernel     of the refined key blocks streamed through shared memory with an online softmax
//                       (f16/bf16: tensor cores; f32: CUDA cores)
// Accumulation is f32 everywhere; q, k, v and the output are stored as the configuration's dtype.
// docs/kernels.md explains the key encoding, the workspace and the tuning parameters.
#pragma once

#include "kernels/attend.cuh"
#include "kernels/common.cuh"
#include "kernels/pool.cuh"
#include "kernels/select.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// Host side: launches the stages of one configuration.

template <class Cfg>
mra_status forward(const KernelArgs& a) {
  // A refused launch keeps its cudaError_t for the caller (mra_last_cuda_error).
  const auto launched = [&a](cudaError_t e) {
    if (e == cudaSuccess) return MRA_SUCCESS;
    *a.cuda_error = int(e);
    return MRA_ERROR_LAUNCH_FAILED;
  };
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
  const int64_t hkv = kv_heads(pr);
  p.group = int32_t(pr.heads / hkv);
  p.q_strides = row_strides(pr.strides.q, pr.heads, pr.nq, pr.dim);
  p.k_strides = row_strides(pr.strides.k, hkv, pr.nk, pr.dim);
  p.v_strides = row_strides(pr.strides.v, hkv, pr.nk, pr.dim);
  p.out_strides = row_strides(pr.strides.out, pr.heads, pr.nq, pr.dim);
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
    // Level 1: the row maxima, the radix passes (each a histogram, then the digit), the per-row counts, the
    // CSR offsets and the columns; every pass over the pairs recomputes their logits (docs/kernels.md).
    const unsigned bands = unsigned((a.layout.level[0].nq + kBandRows - 1) / kBandRows);
    cudaError_t e = per_slice(coarse_max_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
    for (int pass = 0; pass < kPasses && e == cudaSuccess; ++pass) {
      e = per_slice(coarse_hist_kernel<Cfg>, bands, unsigned(kGemmThreads), 0, pass);
      if (e == cudaSuccess) e = per_slice(select_pick_kernel<Cfg>, 1u, unsigned(kScanThreads), 0, pass);
    }
    if (e == cudaSuccess) e = per_slice(coarse_count_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
    if (e == cudaSuccess) e = per_slice(select_rows_kernel<Cfg>, 1u, unsigned(kScanThreads), 0);
    if (e == cudaSuccess) e = per_slice(coarse_write_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
    if (auto s = launched(e)) return s;
    for (int li = 1; li < Cfg::steps; ++li) {
      const Level& up = a.layout.level[li - 1];
      e = per_slice(refine_keys_kernel<Cfg>, unsigned(up.nq * (up.side / a.layout.level[li].side)),
                    unsigned(kRowThreads), 0, li);
      if (e == cudaSuccess) e = simt::launch(select_kernel<Cfg>, dim3(slices), dim3(kSelectThreads), 0, a.stream, p, li);
      if (auto s = launched(e)) return s;
    }
  }
  if (a.stages & kStageAttend) {
    const unsigned tiles = unsigned((pr.nq + Cfg::rows - 1) / Cfg::rows);
    auto attend = [&](auto kernel, size_t smem) {
      if (auto s = launched(simt::set_max_dynamic_shared(kernel, int(smem)))) return s;
      return launched(per_slice(kernel, tiles, unsigned(Cfg::threads), smem));
    };
    if constexpr (Cfg::tensor_cores) {
      if (auto s = attend(attend_mma_kernel<Cfg>, MmaSmem<Cfg>::bytes)) return s;
    } else {
      if (auto s = attend(attend_kernel<Cfg>, AttendSmem<Cfg>::bytes)) return s;
    }
  }
  return MRA_SUCCESS;
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
