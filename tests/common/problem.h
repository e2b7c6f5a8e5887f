// tests/common/problem.h: the C API's mra_problem (runtime/mra.h) of a test in one expression, so that the
// tests building problems (tests/errors, tests/kernels) fill every field the same way: from plain shapes, or
// from a reference configuration (the kernels' cross-checks, which run the reference on the same case).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "mra.h"
#include "mra/reference.h"

namespace mra::test {

// B, H, Nq, Nk and D, the dtype, the block sides s_1 > ... > 1 and one budget per refinement step; mode full,
// no priors, the default scale. Sides or budgets beyond MRA_MAX_LEVELS are ignored (a test of the checks
// sets `levels` itself).
inline mra_problem mra_problem_of(int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim, mra_dtype dtype,
                                  std::initializer_list<int64_t> sides, std::initializer_list<int64_t> budgets) {
  mra_problem p{};
  p.batch = batch;
  p.heads = heads;
  p.nq = nq;
  p.nk = nk;
  p.dim = dim;
  p.dtype = dtype;
  p.levels = int32_t(sides.size());
  size_t l = 0;
  for (int64_t s : sides)
    if (l < MRA_MAX_LEVELS) p.resolutions[l++] = s;
  l = 0;
  for (int64_t b : budgets)
    if (l < MRA_MAX_LEVELS - 1) p.budgets[l++] = b;
  p.mode = MRA_MODE_FULL;
  return p;
}

// The problem the reference solves with `config` (sides, budgets, mode, priors, policy, selection), for B, H, Nq, Nk and D
// in `dtype`; `scale` 0 is the default 1/sqrt(D), `heads_kv` 0 one K/V head per query head (§8). Strides stay
// contiguous: a test with strided tensors sets them itself.
inline mra_problem mra_problem_of(const mra::ref::Config& config, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
                                  int64_t dim, mra_dtype dtype, double scale = 0.0, int64_t heads_kv = 0) {
  mra_problem p = mra_problem_of(batch, heads, nq, nk, dim, dtype, {}, {});
  p.levels = int32_t(config.scales.size());
  for (size_t l = 0; l < config.scales.size() && l < MRA_MAX_LEVELS; ++l) p.resolutions[l] = config.scales[l];
  for (size_t l = 0; l < config.budgets.size() && l < MRA_MAX_LEVELS - 1; ++l) p.budgets[l] = config.budgets[l];
  p.mode = config.mode == mra::ref::Mode::full ? MRA_MODE_FULL : MRA_MODE_SPARSE;
  p.prior_first = config.prior_first;
  p.prior_diagonal = config.prior_diagonal;
  p.policy = config.policy == mra::ref::Policy::row ? MRA_POLICY_ROW : MRA_POLICY_GLOBAL;
  p.selection = config.selection == mra::ref::Scope::group ? MRA_SELECTION_GROUP : MRA_SELECTION_HEAD;
  p.scale = scale;
  p.heads_kv = heads_kv;
  return p;
}

}  // namespace mra::test
