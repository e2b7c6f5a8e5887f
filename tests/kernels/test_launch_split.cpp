// tests/kernels/test_launch_split.cpp: the split of a launch into parts of at most Layout::slices_per_launch
// slices (CUDA caps grid y at 65535; forward.cuh), with a few slices, so that it also runs under the sanitizers;
// per head, and with a selection shared by each group of heads (group.cuh's kernels, whose slices are groups:
// dropping p.slice0 from either of them fails the second case).
// The part size is lowered through the layout the entry point receives; each part sees its slices as
// slice0 + blockIdx.y. The split run must give the very bits of the single launch (same arithmetic per slice, in
// the same order), and that output must match the reference.
//   ctest --test-dir build -L kernels -R split
#include "common/doctest.h"

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

namespace {

// Runs `p` (heads_kv and selection as set) on configuration `e` in one launch and in parts of 4 and of 1 slices:
// the parts must give the very bits of the single launch, and that output the reference's numbers. A slice is a
// (batch, head) pair, or under a shared selection (§8.4) also a (batch, K/V head) group of the selection stages.
void check_split(const mra::test::EmulatedEntry& e, mra_problem p) {
  INFO("configuration ", e.name, ", heads ", p.heads, " on ", p.heads_kv, " K/V heads, selection ",
       p.selection == MRA_SELECTION_GROUP ? "group" : "head");
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
  const int64_t heads_kv = p.heads_kv ? p.heads_kv : p.heads;
  const auto in = mra::synthetic::structured(p.batch, p.heads, p.nq, p.nk, p.dim, rng.seed());
  // K and V of the K/V heads: the first heads_kv heads' of the structured inputs.
  const size_t kv_elems = size_t(p.batch * heads_kv * p.nk * p.dim), head_elems = size_t(p.nk * p.dim);
  std::vector<float> k(kv_elems), v(kv_elems);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < heads_kv; ++h)
      for (size_t i = 0; i < head_elems; ++i) {
        const size_t to = size_t(b * heads_kv + h) * head_elems + i, from = size_t(b * p.heads + h) * head_elems + i;
        k[to] = in.k[from];
        v[to] = in.v[from];
      }
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
    const mra::kern::KernelArgs args{p,       L,            in.q.data(), k.data(), v.data(), nullptr,
                                     kmask.data(), out.data(), ws.data(), mra::kern::kStageAll, nullptr,
                                     &cuda_error};
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
  mra::ref::Problem rp = mra::ref::Problem::of(p.batch, p.heads, p.nq, p.nk, p.dim, in.q.data(), k.data(), v.data(),
                                               nullptr, kmask.data());
  rp.heads_kv = heads_kv;
  mra::ref::Config rc;
  rc.scales = sides;
  rc.budgets = budgets;
  rc.selection = p.selection == MRA_SELECTION_GROUP ? mra::ref::Scope::group : mra::ref::Scope::head;
  std::vector<float> want(n_out);
  mra::ref::mra_attention(rp, rc, want.data());
  CHECK(mra::test::norm2(want) > 0);
  const auto cmp = mra::test::compare(whole.data(), want.data(), int64_t(n_out), 1e-4, 1e-4,
                                      {p.batch, p.heads, p.nq, p.dim});
  INFO(cmp.report);
  CHECK(cmp.ok);
}

// The first f32 configuration of the build (MRA_KERNELS may select a few).
const mra::test::EmulatedEntry& first_f32() {
  const std::vector<mra::test::EmulatedEntry>& all = mra::test::emulated_entries();
  const auto found = std::find_if(all.begin(), all.end(), [](const auto& c) { return c.dtype == MRA_DTYPE_F32; });
  REQUIRE(found != all.end());
  return *found;
}

}  // namespace

TEST_CASE("launch split: 6 slices in parts of 4 and of 1 equal one launch and the reference") {
  mra_problem p{};
  p.batch = 3;
  p.heads = 2;
  check_split(first_f32(), p);
}

TEST_CASE("launch split: a selection shared by each group of heads, 6 groups of 2 in parts of 4 and of 1") {
  mra_problem p{};
  p.batch = 3;
  p.heads = 4;
  p.heads_kv = 2;
  p.selection = MRA_SELECTION_GROUP;
  check_split(first_f32(), p);
}
