// tests/common/problem.h: the C API's mra_problem (runtime/mra.h) of a test in one expression, so that the
// tests building problems (tests/errors, tests/kernels/test_api.cpp, test_backward_kernels.cpp) fill every field
// the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "mra.h"

namespace mra::test {

// B, H, Nq, Nk and D, the dtype, the block sides s_1 > ... > 1 and one budget per refinement step; mode full,
// no priors, the default scale. Sides or budgets beyond MRA_MAX_LEVELS are ignored (a test of the checks
// sets `levels` itself).
inline mra_problem mra_problem_of(int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim, mra_dtype dtype,
                                  const std::vector<int64_t>& sides, const std::vector<int64_t>& budgets) {
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

}  // namespace mra::test
