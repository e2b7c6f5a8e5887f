// tests/errors/errors_runtime_test.cpp: the runtime C API (runtime/mra.h) on the bad arguments of
// docs/errors.md that tests/kernels/test_api.cpp does not already cover: sizes whose products overflow,
// non-finite scales, budgets beyond the number of blocks, batch * heads beyond the CUDA grid limit of
// 65535, which must still run (the launch is split), and a refused launch whose cudaError_t stays
// retrievable (mra_last_cuda_error), on the emulated backend.
//   ctest --test-dir build -L kernels -R 'runtime errors'      or      build/tests/errors/errors_runtime_test
#include "common/doctest.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../common/check.h"
#include "../common/problem.h"
#include "../common/skip.h"
#include "mra.h"
#include "mra/reference.h"
#include "simt/simt.h"

namespace {

// MRA-2 with 32x32 blocks at D = 32 in float32: a generated configuration; the cases that run it skip themselves
// in a build that leaves it out.
bool built() { return mra::test::skip_unless_built({"mra_fwd_r32x1_d32_f32"}); }
mra_problem problem(int64_t batch, int64_t heads, int64_t n) {
  return mra::test::mra_problem_of(batch, heads, n, n, 32, MRA_DTYPE_F32, {32, 1}, {1});
}

mra_status workspace_status(const mra_problem& p) {
  size_t bytes = 0;
  return mra_workspace_size(&p, &bytes);
}

// 16-byte aligned float storage, as the API requires.
struct Buffer {
  explicit Buffer(size_t floats) : data((floats + 3) / 4 * 4 + 4) {}
  float* get() {
    const auto at = reinterpret_cast<uintptr_t>(data.data());
    return data.data() + (16 - at % 16) % 16 / sizeof(float);
  }
  std::vector<float> data;
};

// Runs `p` through mra_forward_host on inputs with a smooth pattern; returns the status and fills `out`
// and the matching exact attention of the reference.
mra_status run(const mra_problem& p, std::vector<float>& out, std::vector<float>& exact) {
  const int64_t kv_heads = p.heads_kv != 0 ? p.heads_kv : p.heads;
  const size_t q_size = size_t(p.batch * p.heads * p.nq * p.dim), kv_size = size_t(p.batch * kv_heads * p.nk * p.dim);
  Buffer q(q_size), k(kv_size), v(kv_size), o(q_size);
  for (size_t i = 0; i < q_size; ++i) q.get()[i] = float(std::sin(0.3 * double(i)));
  for (size_t i = 0; i < kv_size; ++i) {
    k.get()[i] = float(std::cos(0.7 * double(i)));
    v.get()[i] = float(std::sin(1.1 * double(i) + 0.5));
  }
  size_t bytes = 0;
  if (const mra_status s = mra_workspace_size(&p, &bytes)) return s;
  Buffer workspace(bytes / sizeof(float) + 1);
  const mra_status s = mra_forward_host(&p, q.get(), k.get(), v.get(), nullptr, nullptr, o.get(), workspace.get(), bytes);
  out.assign(o.get(), o.get() + q_size);

  mra::ref::Problem r = mra::ref::Problem::of(p.batch, p.heads, p.nq, p.nk, p.dim, q.get(), k.get(), v.get());
  r.heads_kv = p.heads_kv;
  exact.resize(q_size);
  mra::ref::exact_attention(r, exact.data());
  return s;
}

}  // namespace

TEST_CASE("runtime errors: sizes whose products overflow") {
  constexpr int64_t huge = std::numeric_limits<int64_t>::max() / 2;
  // Each size alone passes a "positive" check; their products do not fit in 64 bits.
  CHECK(workspace_status(problem(huge, 3, 64)) == MRA_ERROR_BAD_SHAPE);
  CHECK(workspace_status(problem(3, huge, 64)) == MRA_ERROR_BAD_SHAPE);
  mra_problem wide = problem(2, 3, 100);
  wide.dim = huge;
  CHECK(workspace_status(wide) != MRA_SUCCESS);
  wide.dim = int64_t(1) << 40;
  CHECK(workspace_status(wide) != MRA_SUCCESS);
}

TEST_CASE("runtime errors: non-finite scale") {
  for (const double scale : {std::nan(""), std::numeric_limits<double>::infinity()}) {
    mra_problem p = problem(1, 1, 64);
    p.scale = scale;
    CHECK(workspace_status(p) == MRA_ERROR_BAD_ARGUMENT);
  }
}

TEST_CASE("runtime errors: budgets larger than the number of blocks") {
  if (!built()) return;
  // 3 x 3 blocks of side 32: a budget of a million refines all nine, so MRA is exact attention.
  mra_problem p = problem(1, 2, 80);
  p.budgets[0] = 1000000;
  std::vector<float> out, exact;
  REQUIRE(run(p, out, exact) == MRA_SUCCESS);
  const auto cmp = mra::test::compare(out.data(), exact.data(), int64_t(out.size()), 1e-5, 1e-4,
                                      {p.batch, p.heads, p.nq, p.dim});
  INFO(cmp.report);
  CHECK(cmp.ok);
}

// The kernels put batch * heads on grid y, which CUDA caps at 65535 (and the emulation refuses more): the runtime
// splits larger problems into several launches, and every slice must still be computed.
TEST_CASE("runtime errors: batch * heads beyond the grid limit") {
  if (!built()) return;
  // 65536 slices: every launch with a slice per grid row is two, the second holding the last slice alone (batch 1,
  // head 32767). The emulation's cost is per slice and CTA thread, and most of it was the short-N level-1 selection
  // of every slice; here one K/V head per batch with the selection shared by its heads (§8.4) selects for 2 groups
  // only, and mode sparse has no coarse stage, so the launches over all 65536 slices are the pooling, the copy of
  // the selection to the heads and the attention. That every launch of the default path (the per-head selection,
  // the coarse stage) is split into parts too is test `launch stages: a launch split into parts is told once per
  // part` (each stage's launches counted, in parts of 1 slice), as their use of slice0 is test `launch split`.
  mra_problem p = problem(2, 32768, 2);
  p.heads_kv = 1;
  p.selection = MRA_SELECTION_GROUP;
  p.mode = MRA_MODE_SPARSE;
  std::vector<float> out, exact;
  REQUIRE(run(p, out, exact) == MRA_SUCCESS);
  // Two keys in one refined block: exact attention, with weights that differ from head to head (each head its own
  // queries), so a slice computed from another head's queries gets that head's weights, and one never computed
  // keeps the zeros the output started as.
  const auto cmp = mra::test::compare(out.data(), exact.data(), int64_t(out.size()), 1e-5, 1e-4,
                                      {p.batch, p.heads, p.nq, p.dim});
  INFO(cmp.report);  // the worst element as [batch, head, token, feature]
  CHECK(cmp.ok);
}

TEST_CASE("runtime errors: a refused launch keeps its CUDA error") {
  if (!built()) return;
  mra_problem p = problem(1, 2, 64);
  std::vector<float> out, exact;
  // Fiber stacks of 2^50 bytes cannot be mapped: the emulation refuses the first launch with
  // cudaErrorMemoryAllocation, as the CUDA runtime refuses a launch it cannot resource.
  simt::set_stack_size(size_t(1) << 50);
  const mra_status refused = run(p, out, exact);
  simt::set_stack_size(0);
  CHECK(refused == MRA_ERROR_LAUNCH_FAILED);
  CHECK(mra_last_cuda_error() == int(cudaErrorMemoryAllocation));
  CHECK(mra_last_cuda_error() == int(cudaErrorMemoryAllocation));  // reading it does not clear it
  // The next call replaces it: a success, and a refusal before any launch, both leave cudaSuccess.
  REQUIRE(run(p, out, exact) == MRA_SUCCESS);
  CHECK(mra_last_cuda_error() == 0);
  size_t bytes = 0;
  REQUIRE(mra_workspace_size(&p, &bytes) == MRA_SUCCESS);
  simt::set_stack_size(size_t(1) << 50);
  REQUIRE(run(p, out, exact) == MRA_ERROR_LAUNCH_FAILED);
  simt::set_stack_size(0);
  CHECK(mra_forward_host(&p, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_last_cuda_error() == 0);
}
