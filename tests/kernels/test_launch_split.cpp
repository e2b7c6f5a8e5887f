// tests/kernels/test_launch_split.cpp: the split of a launch into parts of at most Layout::slices_per_launch
// slices (CUDA caps grid y at 65535; forward.cuh), with a few slices, so that it also runs under the sanitizers.
// The part size is lowered through the layout the entry point receives; each part sees its slices as
// slice0 + blockIdx.y. The split run must give the very bits of the single launch (same arithmetic per slice, in
// the same order), and that output must match the reference.
//   ctest --test-dir build -L kernels -R split
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/check.h"
#include "common/inputs.h"
#include "kernels/emulated_entries.h"
#include "kernels/entry.h"
#include "kernels/layout.h"
#include "mra.h"
#include "mra/reference.h"

TEST_CASE("launch split: 6 slices in parts of 4 and of 1 equal one launch and the reference") {
  // The first f32 configuration of the build (MRA_KERNELS may select a few).
  const std::vector<mra::test::EmulatedEntry>& all = mra::test::emulated_entries();
  const auto found = std::find_if(all.begin(), all.end(), [](const auto& c) { return c.dtype == MRA_DTYPE_F32; });
  REQUIRE(found != all.end());
  const mra::test::EmulatedEntry& e = *found;
  INFO("configuration ", e.name);
  mra_problem p{};
  p.batch = 3;
  p.heads = 2;
  p.nq = p.nk = 2 * e.sides[0] + 5;
  p.dim = e.dim;
  p.dtype = MRA_DTYPE_F32;
  p.levels = e.levels;
  for (int l = 0; l < e.levels; ++l) p.resolutions[l] = e.sides[l];
  const std::vector<int64_t> sides(e.sides, e.sides + e.levels);
  const std::vector<int64_t> budgets = mra::ref::budgets_from_blocks_per_row(sides, p.nq, p.nk, 2);
  for (size_t l = 0; l < budgets.size(); ++l) p.budgets[l] = budgets[l];
  p.mode = MRA_MODE_FULL;
  mra::test::Rng rng(20261130);
  INFO("seed ", rng.seed());
  const auto in = mra::synthetic::structured(p.batch, p.heads, p.nq, p.nk, p.dim, rng.seed());
  const std::vector<uint8_t> kmask = mra::test::random_mask(rng, p.batch, p.nk, 0.9);

  mra::kern::Layout layout;
  REQUIRE(mra::kern::make_layout(p, &layout) == MRA_SUCCESS);
  const size_t n_out = size_t(p.batch * p.heads * p.nq * p.dim);
  auto run = [&](uint32_t part) {
    mra::kern::Layout L = layout;
    L.slices_per_launch = part;
    std::vector<float> out(n_out, 3.0e38f);                 // poison: a large finite value
    std::vector<unsigned char> ws(layout.bytes + 256, 0xff);  // poison: NaN floats, -1 indices
    int cuda_error = 0;
    const mra::kern::KernelArgs args{p,         L,          in.q.data(),          in.k.data(), in.v.data(),
                                     nullptr,   kmask.data(), out.data(),         ws.data(),   mra::kern::kStageAll,
                                     nullptr,   &cuda_error};
    INFO("launch error ", cuda_error);
    REQUIRE(e.run(&args) == MRA_SUCCESS);
    return out;
  };
  const std::vector<float> whole = run(mra::kern::kMaxGridY);
  for (uint32_t part : {4u, 1u}) {
    CAPTURE(part);
    const std::vector<float> split = run(part);
    CHECK(std::memcmp(split.data(), whole.data(), n_out * sizeof(float)) == 0);
  }

  // The single launch against the reference, with the derived-bound form of docs/kernels.md (loose here: the
  // point of this test is which slice lands where, and a misplaced slice is off by O(1)).
  const mra::ref::Problem rp{p.batch, p.heads, p.nq, p.nk, p.dim, in.q.data(), in.k.data(), in.v.data(),
                             nullptr,  kmask.data(), 0.0};
  mra::ref::Config rc;
  rc.scales = sides;
  rc.budgets = budgets;
  std::vector<float> want(n_out);
  mra::ref::mra_attention(rp, rc, want.data());
  CHECK(mra::test::norm2(want) > 0);
  const auto cmp = mra::test::compare(whole.data(), want.data(), int64_t(n_out), 1e-4, 1e-4,
                                      {p.batch, p.heads, p.nq, p.dim});
  INFO(cmp.report);
  CHECK(cmp.ok);
}
