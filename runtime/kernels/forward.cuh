// runtime/kernels/forward.cuh: the MRA forward pipeline (docs/semantics.md §2): launches one template per stage.
//
// Every generated file generated/<name>.cu includes this header, names its Config and defines its entry; it is
// compiled by nvcc for the CUDA backend and, unchanged, as C++ against runtime/simt/simt.h for the emulated
// backend (both in generated/CMakeLists.txt). The pipeline, per (batch, head) slice:
//   pool_kernel         (pool.cuh) masked means of q and k, sums of v, token counts, per block at every coarse level
//   coarse_rowmax_kernel (select.cuh) level 1, only when a band's columns are split over several CTAs (short N):
//                       the row maxima per column range
//   coarse_rank_kernel  (select.cuh) level 1, 3 radix passes: the pooled logits q̄·k̄ᵀ as a tiled f32 GEMM (recomputed
//                       by every level-1 pass, never stored); pass 0 first finds the maximum logit of every block
//                       row; each pass a histogram of the next digit of the rank value, after the pick of the
//                       previous pass's digit (done by every CTA from the histogram: no launch of its own)
//   coarse_count_kernel level 1: the last pick; per row, the pairs above the threshold and the ties
//   coarse_row_select_kernel  instead of the two above under policy row (§10): the row maxima and each row's own
//                       radix select
//   coarse_write_kernel level 1: the CSR row offsets of T_1 and its columns, row by row in column order
//   level1_small_select_kernel  instead of the level-1 kernels above at short N (global policy, at most
//                       kSmallPairs level-1 pairs, layout.h), one launch: per CTA a share of rows, its logits
//                       computed once into the workspace, ranked and sorted by their top digit, the last CTA of
//                       the slice resolving the threshold from the entries near it
//   refine_keys_kernel  level l >= 2: pooled logits of the children of T_{l-1} -> 64-bit keys
//   level_rank_kernel   level l >= 2: 3 radix passes over the keys' scores, many CTAs per slice (chunks of slots),
//                       the picks as at level 1
//   level_count_kernel  level l >= 2: per chunk, the keys above the threshold and the ties
//   level_write_kernel  level l >= 2: T_l as CSR, columns in slot (= flat) order from each chunk's offset
//   / select_row_kernel (policy row, instead of the three: the top budget_l keys of every block row, one CTA
//                       per slice)
//   group_pool_kernel, group_share_kernel (group.cuh) with a selection shared by each group of query heads (§8.4):
//                       the stages above from coarse_rowmax_kernel on run once per (batch, K/V head), on the group's
//                       mean pooled query, between these two, which make their inputs and copy T_l to every head
//   coarse_level1_kernel (coarse.cuh, mode full) level 1: per block row, the coarse components (the pairs not in
//                       T_1) folded into (max, denominator, numerator[D]): the logits by the selection's GEMM,
//                       the numerator as a second GEMM of the weights and the V sums
//   coarse_merge_kernel (coarse.cuh) only with split columns: the ranges' partial components merged in range order
//   coarse_level1_small_kernel (coarse.cuh) instead of the two above at short N: from the stored logits, whole rows
//   coarse_level_kernel (coarse.cuh, mode full) level l >= 2: per parent row, the coarse components of its child
//                       rows (the children not in T_l), their k̄ and V sums staged once
//   attend_mma_kernel   (attend.cuh) per query tile: the coarse components of every level from the workspace,
//                       merged, then the exact entries
//   / attend_kernel     of the refined key blocks streamed through shared memory with an online softmax
//                       (f16/bf16: tensor cores; f32: CUDA cores)
// Every launch goes through launch_stage, which first tells the launch observer, if one is set
// (mra_set_launch_observer), the stage it belongs to: pool, select Ll, coarse Ll, share, attend.
// Accumulation is f32 everywhere; q, k, v and the output are stored as the configuration's dtype.
// docs/kernels.md explains the key encoding, the workspace and the tuning parameters.
#pragma once

#include "kernels/attend.cuh"
#include "kernels/coarse.cuh"
#include "kernels/common.cuh"
#include "kernels/group.cuh"
#include "kernels/pool.cuh"
#include "kernels/select.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// Host side: launches the stages of one configuration.

// The kernel parameters of a call: sizes, pointers, the scale and the priors clamped as the kernels need them.
inline Params make_params(const KernelArgs& a) {
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
  return p;
}

// The stage names the launch observer receives, as runtime/mra.h lists them (mra_set_launch_observer; docs/kernels.md,
// "C API"): those of tools/perf-model, per level (tests/codegen/test_stage_names.py holds the three to one list).
// The refinement of level l (refine_keys_kernel) belongs to "select Ll" as there.
inline constexpr const char* kPoolStage = "pool";
inline constexpr const char* kSelectStage[] = {"select L1", "select L2", "select L3"};
inline constexpr const char* kCoarseStage[] = {"coarse L1", "coarse L2", "coarse L3"};
inline constexpr const char* kShareStage = "share";  // group_share_kernel (§8.4): no stage of the model
inline constexpr const char* kAttendStage = "attend";
static_assert(sizeof kSelectStage / sizeof *kSelectStage == MRA_MAX_LEVELS - 1, "a stage name per coarse level");

// One launch, announced first to the launch observer, if any, as part of `stage`.
template <class Kernel, class... Args>
cudaError_t launch_stage(const KernelArgs& a, const char* stage, Kernel kernel, dim3 grid, dim3 block, size_t smem,
                         Args... args) {
  if (a.observer) a.observer(a.observer_user, stage, a.stream);
  return simt::launch(kernel, grid, block, smem, a.stream, args...);
}

// A refused launch keeps its cudaError_t for the caller (mra_last_cuda_error).
inline mra_status launched(const KernelArgs& a, cudaError_t e) {
  if (e == cudaSuccess) return MRA_SUCCESS;
  *a.cuda_error = int(e);
  return MRA_ERROR_LAUNCH_FAILED;
}

// Launches `kernel` with grid (x, slices), in parts of at most layout.slices_per_launch (kMaxGridY) slices, each
// part seeing its first slice as p.slice0, and each a launch of `stage`. Slices are (batch, head) pairs, or (batch,
// K/V head) pairs for the backward's dk/dv kernel (backward.cuh).
template <class Kernel, class... Extra>
cudaError_t launch_in_parts(const KernelArgs& a, const char* stage, Params p, unsigned slices, Kernel kernel,
                            unsigned x, unsigned threads, size_t smem, Extra... extra) {
  const unsigned part = a.layout.slices_per_launch;
  cudaError_t e = cudaSuccess;
  for (unsigned first = 0; first < slices && e == cudaSuccess; first += part) {
    p.slice0 = int32_t(first);
    e = launch_stage(a, stage, kernel, dim3(x, slices - first < part ? slices - first : part), dim3(threads), smem, p,
                     extra...);
  }
  return e;
}

// launch_in_parts over every (batch, head) slice.
template <class Kernel, class... Extra>
cudaError_t launch_per_slice(const KernelArgs& a, const char* stage, Params p, Kernel kernel, unsigned x,
                             unsigned threads, size_t smem, Extra... extra) {
  return launch_in_parts(a, stage, p, unsigned(a.problem.batch * a.problem.heads), kernel, x, threads, smem, extra...);
}

// The selection at every level (select.cuh) of `slices` slices of the view `p`: the query heads, or with a selection
// shared by groups (§8.4) the group region, whose layout and heads p carries.
template <class Cfg>
mra_status select_levels(const KernelArgs& a, const Params& p, unsigned slices) {
  auto per_slice = [&](const char* stage, auto kernel, unsigned x, unsigned threads, size_t smem, auto... extra) {
    return launch_in_parts(a, stage, p, slices, kernel, x, threads, smem, extra...);
  };
  // Level 1: the radix passes (the first also finds the row maxima, or with the columns split over several
  // CTAs per band a launch of its own does), the per-row counts, the CSR offsets and the columns; every pass
  // over the pairs recomputes their logits (docs/kernels.md). Grid x: bands x column ranges (layout.h).
  const Level& l1 = p.layout.level[0];
  const unsigned bands = unsigned((l1.nq + kBandRows - 1) / kBandRows), sweeps = bands * unsigned(l1.split);
  cudaError_t e = cudaSuccess;
  if (l1.small) {  // short N: the logits once and the selection from them, a few CTAs per slice (select.cuh)
    e = per_slice(kSelectStage[0], level1_small_select_kernel<Cfg>, unsigned(l1.shares), unsigned(kSmallThreads), 0);
  } else if (p.layout.by_row) {  // policy row (§10): each block row's own radix select, in one kernel (split 1)
    e = per_slice(kSelectStage[0], coarse_row_select_kernel<Cfg>, bands, unsigned(kGemmThreads), 0);
  } else {
    if (l1.split > 1) e = per_slice(kSelectStage[0], coarse_rowmax_kernel<Cfg>, sweeps, unsigned(kGemmThreads), 0);
    for (int pass = 0; pass < kPasses && e == cudaSuccess; ++pass)
      e = per_slice(kSelectStage[0], coarse_rank_kernel<Cfg>, sweeps, unsigned(kGemmThreads), 0, pass);
    if (e == cudaSuccess) e = per_slice(kSelectStage[0], coarse_count_kernel<Cfg>, sweeps, unsigned(kGemmThreads), 0);
  }
  if (e == cudaSuccess && !l1.small)
    e = per_slice(kSelectStage[0], coarse_write_kernel<Cfg>, sweeps, unsigned(kGemmThreads), 0);
  if (auto s = launched(a, e)) return s;
  for (int li = 1; li < Cfg::steps; ++li) {
    const Level& up = p.layout.level[li - 1];
    e = per_slice(kSelectStage[li], refine_keys_kernel<Cfg>, unsigned(up.nq * (up.side / p.layout.level[li].side)),
                  unsigned(kRowThreads), 0, li);
    if (e == cudaSuccess && p.layout.by_row) {
      e = launch_stage(a, kSelectStage[li], select_row_kernel<Cfg>, dim3(slices), dim3(kSelectThreads), 0, p, li);
    } else {  // the GPU-wide radix select: 3 histogram passes, the per-chunk counts, the columns
      const unsigned chunks = unsigned(p.layout.level[li].chunks);
      for (int pass = 0; pass < kPasses && e == cudaSuccess; ++pass)
        e = per_slice(kSelectStage[li], level_rank_kernel<Cfg>, chunks, unsigned(kSelectThreads), 0, li, pass);
      if (e == cudaSuccess)
        e = per_slice(kSelectStage[li], level_count_kernel<Cfg>, chunks, unsigned(kSelectThreads), 0, li);
      if (e == cudaSuccess)
        e = per_slice(kSelectStage[li], level_write_kernel<Cfg>, chunks, unsigned(kSelectThreads), 0, li);
    }
    if (auto s = launched(a, e)) return s;
  }
  return MRA_SUCCESS;
}

template <class Cfg>
mra_status forward(const KernelArgs& a) {
  const mra_problem& pr = a.problem;
  const Params p = make_params(a);
  auto per_slice = [&](const char* stage, auto kernel, unsigned x, unsigned threads, size_t smem, auto... extra) {
    return launch_per_slice(a, stage, p, kernel, x, threads, smem, extra...);
  };
  auto launched = [&a](cudaError_t e) { return kern::launched(a, e); };

  if (a.stages & kStagePrepare) {
    for (int li = 0; li < Cfg::steps; ++li) {
      const Level& lv = a.layout.level[li];
      if (auto s = launched(per_slice(kPoolStage, pool_kernel<Cfg>, unsigned(lv.nq + lv.nk), unsigned(Cfg::dim), 0, li)))
        return s;
    }
    if (!a.layout.shared) {
      if (auto s = select_levels<Cfg>(a, p, unsigned(pr.batch * pr.heads))) return s;
    } else {  // §8.4: one selection per (batch, K/V head), made in the group region, then copied to its heads
      Params g = p;
      g.heads = int32_t(kv_heads(pr));
      g.group = 1;
      g.layout = group_layout(pr, a.layout);
      const unsigned groups = unsigned(pr.batch * g.heads);
      for (int li = 0; li < Cfg::steps; ++li) {
        const Level& lv = a.layout.level[li];
        if (auto s = launched(launch_in_parts(a, kPoolStage, p, groups, group_pool_kernel<Cfg>, unsigned(lv.nq + lv.nk),
                                              unsigned(Cfg::dim), 0, g.layout, li)))
          return s;
      }
      if (auto s = select_levels<Cfg>(a, g, groups)) return s;
      if (auto s = launched(per_slice(kShareStage, group_share_kernel<Cfg>, 1, unsigned(kShareThreads), 0, g.layout)))
        return s;
    }
  }
  if (a.stages & kStageAttend) {
    // The coarse components read T_l, so they belong to this stage (a test may replace the selection).
    // Short N: from the logits the selection stored (coarse.cuh); with a selection shared by a group (§8.4) the
    // logits were computed per group, not per head, so the heads fold their own with the sweeping kernel.
    if (p.full && a.layout.level[0].small && !a.layout.shared) {
      const unsigned blocks = unsigned((a.layout.level[0].nq + kSmallCoarseRows - 1) / kSmallCoarseRows);
      if (auto s =
              launched(per_slice(kCoarseStage[0], coarse_level1_small_kernel<Cfg>, blocks, unsigned(kGemmThreads), 0)))
        return s;
    } else if (p.full) {
      const Level& l1 = a.layout.level[0];
      const unsigned sweeps = unsigned((l1.nq + kBandRows - 1) / kBandRows) * unsigned(l1.split);
      if (auto s = launched(per_slice(kCoarseStage[0], coarse_level1_kernel<Cfg>, sweeps, unsigned(kGemmThreads), 0)))
        return s;
      if (l1.split > 1) {  // the column ranges' partials, merged per row
        const unsigned merges = unsigned((int64_t(l1.nq) * Cfg::dim + kGemmThreads - 1) / kGemmThreads);
        if (auto s = launched(per_slice(kCoarseStage[0], coarse_merge_kernel<Cfg>, merges, unsigned(kGemmThreads), 0)))
          return s;
      }
    }
    for (int li = 1; p.full && li < Cfg::steps; ++li)  // the levels l >= 2: one CTA per parent row
      if (auto s = launched(per_slice(kCoarseStage[li], coarse_level_kernel<Cfg>, unsigned(a.layout.level[li - 1].nq),
                                      unsigned(kGemmThreads), 0, li)))
        return s;
    const unsigned tiles = unsigned((pr.nq + Cfg::rows - 1) / Cfg::rows);
    auto attend = [&](auto kernel, size_t smem) {
      if (auto s = launched(simt::set_max_dynamic_shared(kernel, int(smem)))) return s;
      return launched(per_slice(kAttendStage, kernel, tiles, unsigned(Cfg::threads), smem));
    };
    if constexpr (Cfg::tensor_cores) {
      if (auto s = attend(attend_mma_kernel<Cfg>, a.layout.causal ? MmaSmem<Cfg>::causal_bytes : MmaSmem<Cfg>::bytes))
        return s;
    } else {
      if (auto s = attend(attend_kernel<Cfg>, AttendSmem<Cfg>::bytes)) return s;
    }
  }
  return MRA_SUCCESS;
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
