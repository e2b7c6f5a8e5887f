// tests/kernels/test_launch_stages.cpp: the launch observer (mra_set_launch_observer, forward.cuh's launch_stage).
// Small calls of the C API on the emulator with an observer set: the stages it is told, one per launch, must be the
// launches forward.cuh and backward.cuh make for that problem, written out below per path (short-N or multi-CTA
// level 1, two or three levels, mode full or sparse, policy row, a selection shared by groups, the backward, a
// launch split into parts of fewer slices), as
// runs of (stage, launches) in launch order; and the observer must be told of every launch the emulator ran
// (simt::launch_count), so that a launch added without a stage fails here. The GPU kit's `stages` mode times the
// stages by these names (stages_cuda.cpp; the list of runtime/mra.h, tools/perf-model's names).
//   ctest --test-dir build -L kernels -R stages
#include "common/doctest.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <string>
#include <utility>
#include <vector>

#include "common/inputs.h"
#include "common/skip.h"
#include "kernels/emulated_entries.h"
#include "kernels/entry.h"
#include "kernels/layout.h"
#include "mra.h"
#include "mra/reference.h"
#include "simt/simt.h"

namespace {

using Runs = std::vector<std::pair<std::string, int>>;

// What the observer was told, call by call.
struct Seen {
  std::vector<std::string> stages;
  bool null_stream = true;  // the _host forms pass no stream
};

void record(void* user, const char* stage, cudaStream_t stream) {
  Seen& seen = *static_cast<Seen*>(user);
  seen.stages.emplace_back(stage != nullptr ? stage : "(null)");
  seen.null_stream = seen.null_stream && stream == nullptr;
}

// Sets the observer for one scope and clears it after, whatever the case does.
struct Observing {
  explicit Observing(Seen* seen) { mra_set_launch_observer(record, seen); }
  ~Observing() { mra_set_launch_observer(nullptr, nullptr); }
  Observing(const Observing&) = delete;
  Observing& operator=(const Observing&) = delete;
};

Runs runs_of(const std::vector<std::string>& stages) {
  Runs r;
  for (const std::string& s : stages) {
    if (r.empty() || r.back().first != s) r.emplace_back(s, 0);
    ++r.back().second;
  }
  return r;
}

std::string text(const Runs& r) {
  std::string t;
  for (const auto& [stage, n] : r) t += (t.empty() ? "" : ", ") + stage + " x" + std::to_string(n);
  return t;
}

// The problem of configuration (dtype, dim, sides) at N tokens, `heads` heads, 4 refined blocks per block row.
mra_problem problem(mra_dtype dtype, int64_t dim, const std::vector<int64_t>& sides, int64_t n, int64_t heads,
                    mra_mode mode) {
  mra_problem p{};
  p.batch = 1;
  p.heads = heads;
  p.nq = p.nk = n;
  p.dim = dim;
  p.dtype = dtype;
  p.levels = int32_t(sides.size());
  for (size_t l = 0; l < sides.size(); ++l) p.resolutions[l] = sides[l];
  const std::vector<int64_t> budgets = mra::ref::budgets_from_blocks_per_row(sides, n, n, 4);
  for (size_t l = 0; l < budgets.size(); ++l) p.budgets[l] = budgets[l];
  p.mode = mode;
  return p;
}

// Inputs of random values (q, k, v, out, dout), stored in the problem's dtype (bf16: the upper half of the f32 bits).
struct Tensors {
  std::vector<std::vector<unsigned char>> t;
  Tensors(const mra_problem& p, uint64_t seed) {
    mra::test::Rng rng(seed);
    const size_t elem = p.dtype == MRA_DTYPE_F32 ? 4 : 2;
    for (int i = 0; i < 5; ++i) {
      const std::vector<float> x = mra::test::noise(rng, p.batch, p.heads, p.nq, p.dim);
      std::vector<unsigned char> bytes(x.size() * elem);
      for (size_t j = 0; j < x.size(); ++j) {
        uint32_t bits;
        std::memcpy(&bits, &x[j], 4);
        if (elem == 2) bits >>= 16;
        std::memcpy(&bytes[j * elem], &bits, elem);
      }
      t.push_back(std::move(bytes));
    }
  }
  const void* operator[](int i) const { return t[size_t(i)].data(); }
  void* out() { return t[3].data(); }
};

// The stages of one mra_forward_host (and, when `backward`, of the mra_backward_host after it), checked against
// every launch the emulator ran.
Runs observe(const mra_problem& p, bool backward = false) {
  Tensors x(p, 20261201);
  std::vector<unsigned char> grads[3], gws;
  size_t ws_bytes = 0, gws_bytes = 0;
  REQUIRE(mra_workspace_size(&p, &ws_bytes) == MRA_SUCCESS);
  std::vector<unsigned char> ws(ws_bytes + 16);
  if (backward) {
    REQUIRE(mra_backward_workspace_size(&p, &gws_bytes) == MRA_SUCCESS);
    gws.resize(gws_bytes + 16);
    for (auto& g : grads) g.resize(x.t[0].size());
  }
  Seen seen;
  const uint64_t before = simt::launch_count();
  {
    Observing observing(&seen);
    REQUIRE(mra_forward_host(&p, x[0], x[1], x[2], nullptr, nullptr, x.out(), ws.data(), ws_bytes) == MRA_SUCCESS);
    if (backward) seen.stages.clear();  // the backward's launches alone
    const uint64_t backward_from = simt::launch_count();
    if (backward)
      REQUIRE(mra_backward_host(&p, x[0], x[1], x[2], nullptr, nullptr, x[3], x[4], grads[0].data(), grads[1].data(),
                                grads[2].data(), ws.data(), ws_bytes, gws.data(), gws_bytes) == MRA_SUCCESS);
    const uint64_t launches = simt::launch_count() - (backward ? backward_from : before);
    INFO("stages told: ", text(runs_of(seen.stages)));
    CHECK_MESSAGE(seen.stages.size() == launches, "the emulator ran ", launches, " launches, the observer was told of ",
                  seen.stages.size(), ": a launch without a stage");
  }
  CHECK(seen.null_stream);
  // Cleared: a later call tells nobody.
  const size_t told = seen.stages.size();
  REQUIRE(mra_forward_host(&p, x[0], x[1], x[2], nullptr, nullptr, x.out(), ws.data(), ws_bytes) == MRA_SUCCESS);
  CHECK(seen.stages.size() == told);
  return runs_of(seen.stages);
}

void check_runs(const Runs& seen, const Runs& expected) {
  INFO("told:     ", text(seen));
  INFO("expected: ", text(expected));
  CHECK(seen == expected);
}

constexpr const char* kBf16 = "mra_fwd_r32x1_d64_bf16";
constexpr const char* kThree = "mra_fwd_r16x4x1_d32_f32";

}  // namespace

TEST_CASE("launch stages: two levels at short N, mode full and sparse, and the backward") {
  if (!mra::test::skip_unless_built({kBf16})) return;
  const mra_problem full = problem(MRA_DTYPE_BF16, 64, {32, 1}, 200, 2, MRA_MODE_FULL);
  // pool_kernel; level1_small_select_kernel; coarse_level1_small_kernel; attend_mma_kernel.
  check_runs(observe(full), {{"pool", 1}, {"select L1", 1}, {"coarse L1", 1}, {"attend", 1}});
  mra_problem sparse = full;
  sparse.mode = MRA_MODE_SPARSE;
  check_runs(observe(sparse), {{"pool", 1}, {"select L1", 1}, {"attend", 1}});
  // grad_delta_kernel; grad_block, grad_coarse_rows, grad_coarse_cols; grad_dq_mma, grad_dkv_mma.
  check_runs(observe(full, true), {{"bwd: delta", 1}, {"bwd: coarse L1", 3}, {"bwd: exact dq, dk, dv", 2}});
}

TEST_CASE("launch stages: three levels, short-N and multi-CTA level 1, policy row, a selection shared by groups") {
  if (!mra::test::skip_unless_built({kThree})) return;
  // Short N: pool_kernel per level; level1_small_select_kernel; refine_keys, level_rank x 3, level_count,
  // level_write; coarse_level1_small_kernel; coarse_level_kernel; attend_kernel.
  const mra_problem short_n = problem(MRA_DTYPE_F32, 32, {16, 4, 1}, 200, 2, MRA_MODE_FULL);
  check_runs(observe(short_n), {{"pool", 2}, {"select L1", 1}, {"select L2", 6}, {"coarse L1", 1}, {"coarse L2", 1},
                                {"attend", 1}});
  // 129 x 129 level-1 pairs, over kSmallPairs: the multi-CTA level 1, its 3 column ranges (3 bands, 1 slice)
  // adding coarse_rowmax_kernel and coarse_merge_kernel: coarse_rowmax, coarse_rank x 3, coarse_count,
  // coarse_write; level 2 as above; coarse_level1_kernel, coarse_merge_kernel.
  const mra_problem multi = problem(MRA_DTYPE_F32, 32, {16, 4, 1}, 129 * 16, 1, MRA_MODE_FULL);
  check_runs(observe(multi), {{"pool", 2}, {"select L1", 6}, {"select L2", 6}, {"coarse L1", 2}, {"coarse L2", 1},
                              {"attend", 1}});
  mra_problem sparse = multi;
  sparse.mode = MRA_MODE_SPARSE;
  check_runs(observe(sparse), {{"pool", 2}, {"select L1", 6}, {"select L2", 6}, {"attend", 1}});
  // Policy row: coarse_row_select_kernel, coarse_write_kernel; refine_keys_kernel, select_row_kernel (launched
  // once for every slice); level 1's coarse components by the sweeping kernel (no short-N path under row).
  mra_problem row = short_n;
  row.policy = MRA_POLICY_ROW;
  check_runs(observe(row), {{"pool", 2}, {"select L1", 2}, {"select L2", 2}, {"coarse L1", 1}, {"coarse L2", 1},
                            {"attend", 1}});
  // §8.4: pool_kernel and group_pool_kernel per level; the selection once per K/V head; group_share_kernel; level
  // 1's coarse components by the sweeping kernel (the logits were the groups').
  mra_problem group = short_n;
  group.heads = 4;
  group.heads_kv = 2;
  group.selection = MRA_SELECTION_GROUP;
  check_runs(observe(group), {{"pool", 4}, {"select L1", 1}, {"select L2", 6}, {"share", 1}, {"coarse L1", 1},
                              {"coarse L2", 1}, {"attend", 1}});
}

TEST_CASE("launch stages: a launch split into parts is told once per part") {
  if (!mra::test::skip_unless_built({kThree})) return;
  const std::vector<mra::test::EmulatedEntry>& all = mra::test::emulated_entries();
  const auto e = std::find_if(all.begin(), all.end(), [](const auto& c) { return std::string_view(c.name) == kThree; });
  REQUIRE(e != all.end());
  // 3 slices in parts of 1 (the entry called with a layout of its own, as test_launch_split.cpp does): every launch
  // of the short-N case above three times, each part announced.
  const mra_problem p = problem(MRA_DTYPE_F32, 32, {16, 4, 1}, 200, 3, MRA_MODE_FULL);
  mra::kern::Layout layout;
  REQUIRE(mra::kern::make_layout(p, &layout) == MRA_SUCCESS);
  layout.slices_per_launch = 1;
  Tensors x(p, 20261202);
  std::vector<unsigned char> ws(layout.bytes + 16);
  int cuda_error = 0;
  mra::kern::KernelArgs args{p,       layout,    x[0],      x[1],    x[2],     nullptr, nullptr,
                             x.out(), ws.data(), mra::kern::kStageAll, nullptr, &cuda_error};
  Seen seen;
  args.observer = record;
  args.observer_user = &seen;
  const uint64_t before = simt::launch_count();
  REQUIRE(e->run(&args) == MRA_SUCCESS);
  CHECK(seen.stages.size() == simt::launch_count() - before);
  check_runs(runs_of(seen.stages), {{"pool", 6}, {"select L1", 3}, {"select L2", 18}, {"coarse L1", 3},
                                    {"coarse L2", 3}, {"attend", 3}});
}
