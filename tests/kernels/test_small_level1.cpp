// tests/kernels/test_small_level1.cpp: level 1 at short N (layout.h's Level::small; select.cuh's
// level1_small_select_kernel with its share_logits, coarse.cuh's coarse_level1_small_kernel). The choice of the
// path is checked as a function of the problem; then each problem runs twice, on the short-N path (a share of rows
// per CTA, the last CTA of each slice selecting) and with the layout forced onto the multi-CTA kernels: T_1 (row
// offsets, columns), the row maxima and the slice's non-finite flag must be the very same bits (the logits, rank
// values, threshold and tie rule are the same), the selection must equal §2.4's where ties are exact, and in mode
// full the outputs must match the reference and each other closely (only the order of the coarse sums differs)
// and be the same bits run to run. Problems: the bound itself (128 x 128 pairs, N = 4096), partial blocks with masks and priors, a row and a column of blocks,
// exact ties across rows, a key block without real keys above every real logit, 67 slices of one CTA each (40
// rows: several logit tiles), a poisoned slice beside a clean one, budgets 0 and above the candidates.
//   ctest --test-dir build -L kernels -R small
#include "common/doctest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/inputs.h"
#include "common/skip.h"
#include "kernels/emulated_entries.h"
#include "kernels/entry.h"
#include "kernels/layout.h"
#include "mra.h"
#include "mra/reference.h"

namespace {

using Entry = mra::test::EmulatedEntry;

// A two-level f32 configuration (any would do; this one is in the mutation suite's build, and cheap: D = 32), or
// null (the case then reports itself skipped).
const Entry* two_level_f32() {
  constexpr const char* kConfig = "mra_fwd_r16x1_d32_f32";
  if (!mra::test::skip_unless_built({kConfig})) return nullptr;
  const std::vector<Entry>& all = mra::test::emulated_entries();
  const auto e = std::find_if(all.begin(), all.end(), [&](const Entry& c) { return std::string_view(c.name) == kConfig; });
  REQUIRE(e != all.end());
  return &*e;
}

mra_problem problem_of(const Entry& e, int64_t heads, int64_t nq, int64_t nk, int64_t budget, mra_mode mode) {
  mra_problem p{};
  p.batch = 1;
  p.heads = heads;
  p.nq = nq;
  p.nk = nk;
  p.dim = e.dim;
  p.dtype = MRA_DTYPE_F32;
  p.levels = 2;
  p.resolutions[0] = e.sides[0];
  p.resolutions[1] = 1;
  p.budgets[0] = budget;
  p.mode = mode;
  return p;
}

struct Inputs {
  std::vector<float> q, k, v;
  std::vector<uint8_t> qmask, kmask;  // empty: every token real
};

// What one run leaves: the output, and from the workspace T_1, the row maxima, the slice flags and (mode full)
// the level-1 coarse components.
struct Run {
  std::vector<float> out, rowmax, coarse;
  std::vector<int32_t> rowptr, col, bad;
};

Run run(const Entry& e, const mra_problem& p, const Inputs& in, int small, unsigned stages) {
  mra::kern::Layout L;
  REQUIRE(mra::kern::make_layout(p, &L) == MRA_SUCCESS);
  REQUIRE(L.level[0].small == 1);  // every problem here is one the short-N path takes; the run may force it off
  if (!small) REQUIRE(mra::kern::make_layout(p, &L, mra::kern::Level1Path::sweeps) == MRA_SUCCESS);
  REQUIRE(L.level[0].small == small);
  const mra::kern::Level& l1 = L.level[0];
  const int64_t slices = p.batch * p.heads;
  std::vector<unsigned char> ws(L.bytes + 256, 0xff);  // poison: NaN floats, -1 indices
  Run r;
  r.out.assign(size_t(slices * p.nq * p.dim), 3.0e38f);  // poison: a large finite value
  int cuda_error = 0;
  const mra::kern::KernelArgs args{p,
                                   L,
                                   in.q.data(),
                                   in.k.data(),
                                   in.v.data(),
                                   in.qmask.empty() ? nullptr : in.qmask.data(),
                                   in.kmask.empty() ? nullptr : in.kmask.data(),
                                   r.out.data(),
                                   ws.data(),
                                   stages,
                                   nullptr,
                                   &cuda_error};
  INFO("launch error ", cuda_error);
  REQUIRE(e.run(&args) == MRA_SUCCESS);
  const auto* rowptr = reinterpret_cast<const int32_t*>(ws.data() + l1.rowptr);
  const auto* col = reinterpret_cast<const int32_t*>(ws.data() + l1.col);
  const auto* rowmax = reinterpret_cast<const float*>(ws.data() + l1.rowmax);
  const auto* bad = reinterpret_cast<const int32_t*>(ws.data() + L.slice_bad);
  for (int64_t s = 0; s < slices; ++s) {
    const int32_t* rp = rowptr + s * (l1.nq + 1);
    r.rowptr.insert(r.rowptr.end(), rp, rp + l1.nq + 1);
    REQUIRE(rp[l1.nq] <= l1.cap);
    r.col.insert(r.col.end(), col + s * l1.cap, col + s * l1.cap + rp[l1.nq]);
    r.bad.push_back(bad[s]);
  }
  // A poisoned slice's row maxima are never read (nothing is ranked): they may be NaN either way.
  for (int64_t s = 0; s < slices; ++s)
    if (bad[s] == 0) r.rowmax.insert(r.rowmax.end(), rowmax + s * l1.nq, rowmax + (s + 1) * l1.nq);
  if ((stages & mra::kern::kStageAttend) && p.mode == MRA_MODE_FULL)
    for (size_t off : {l1.cmax, l1.cden})
      r.coarse.insert(r.coarse.end(), reinterpret_cast<const float*>(ws.data() + off),
                      reinterpret_cast<const float*>(ws.data() + off) + slices * l1.nq);
  return r;
}

// The reference's T_1 of every slice as CSR (row offsets, columns), for the problems whose ties are exact.
void reference_csr(const mra_problem& p, const Inputs& in, std::vector<int32_t>* rowptr, std::vector<int32_t>* col) {
  const auto rp = mra::ref::Problem::of(p.batch, p.heads, p.nq, p.nk, p.dim, in.q.data(), in.k.data(), in.v.data(),
                                        in.qmask.empty() ? nullptr : in.qmask.data(),
                                        in.kmask.empty() ? nullptr : in.kmask.data());
  mra::ref::Config rc;
  rc.scales = {p.resolutions[0], 1};
  rc.budgets = {p.budgets[0]};
  rc.prior_first = p.prior_first;
  rc.prior_diagonal = p.prior_diagonal;
  const mra::ref::Selection s = mra::ref::select(rp, rc);
  const int64_t nq = (p.nq + p.resolutions[0] - 1) / p.resolutions[0], nk = (p.nk + p.resolutions[0] - 1) / p.resolutions[0];
  for (int64_t h = 0; h < p.heads; ++h) {
    const std::vector<int64_t>& flat = s.at(0, h, 0);
    size_t i = 0;
    for (int64_t r = 0; r < nq; ++r) {
      rowptr->push_back(int32_t(i));
      for (; i < flat.size() && flat[i] / nk == r; ++i) col->push_back(int32_t(flat[i] % nk));
    }
    rowptr->push_back(int32_t(i));
  }
}

// Both paths on one problem: the same selection bits; with `exact_ties`, §2.4's selection too.
void same_selection(const Entry& e, const mra_problem& p, const Inputs& in, bool exact_ties) {
  const Run one = run(e, p, in, 1, mra::kern::kStagePrepare);
  const Run multi = run(e, p, in, 0, mra::kern::kStagePrepare);
  CHECK(one.bad == multi.bad);
  CHECK(one.rowptr == multi.rowptr);
  CHECK(one.col == multi.col);
  REQUIRE(one.rowmax.size() == multi.rowmax.size());
  CHECK(std::memcmp(one.rowmax.data(), multi.rowmax.data(), one.rowmax.size() * sizeof(float)) == 0);
  if (exact_ties) {
    std::vector<int32_t> rowptr, col;
    reference_csr(p, in, &rowptr, &col);
    CHECK(one.rowptr == rowptr);
    CHECK(one.col == col);
  }
}

Inputs structured(const mra_problem& p, uint64_t seed) {
  auto s = mra::synthetic::structured(p.batch, p.heads, p.nq, p.nk, p.dim, seed);
  return Inputs{std::move(s.q), std::move(s.k), std::move(s.v), {}, {}};
}

}  // namespace

TEST_CASE("small level 1: the path is a function of the problem") {
  const Entry* e = two_level_f32();
  if (e == nullptr) return;
  const int64_t s1 = e->sides[0];
  auto small = [&](int64_t nq, int64_t nk, mra_policy policy) {
    mra_problem p = problem_of(*e, 16, nq, nk, 4, MRA_MODE_FULL);
    p.policy = policy;
    mra::kern::Layout L;
    REQUIRE(mra::kern::make_layout(p, &L) == MRA_SUCCESS);
    return L.level[0].small;
  };
  CHECK(small(128 * s1, 128 * s1, MRA_POLICY_GLOBAL) == 1);       // the bound: 128 x 128 pairs
  CHECK(small(128 * s1 + 1, 128 * s1, MRA_POLICY_GLOBAL) == 0);   // one block row more
  CHECK(small(1024 * s1, 16 * s1, MRA_POLICY_GLOBAL) == 1);       // kSmallRows rows
  CHECK(small(1025 * s1, 15 * s1, MRA_POLICY_GLOBAL) == 0);       // fewer pairs, too many rows
  CHECK(small(s1, 16384 * s1, MRA_POLICY_GLOBAL) == 1);           // one block row
  CHECK(small(128 * s1, 128 * s1, MRA_POLICY_ROW) == 0);          // policy row keeps its own kernels
  mra_problem p = problem_of(*e, 16, 128 * s1, 128 * s1, 4, MRA_MODE_FULL);
  mra::kern::Layout a, b;
  REQUIRE(mra::kern::make_layout(p, &a) == MRA_SUCCESS);
  p.heads = 1;
  REQUIRE(mra::kern::make_layout(p, &b) == MRA_SUCCESS);
  CHECK(a.level[0].small == b.level[0].small);  // not a function of the slices (nor of the device)
  // The CTAs per slice: at most kSmallFill (132) over all slices, whole rows each (16 heads: 8 x 16 rows; 1: 128 x 1).
  CHECK((a.level[0].shares == 8 && a.level[0].share_rows == 16));
  CHECK((b.level[0].shares == 128 && b.level[0].share_rows == 1));
}

// The workspace of each path holds what its own kernels use: at short N no radix histograms, per-row counts or row
// maxima per column range, which only the multi-CTA kernels read (and pool_kernel then clears the short-N kernel's
// histogram and ticket instead). 98 KB of histograms per slice otherwise: 6.4 GB with 65 536 slices.
TEST_CASE("small level 1: the workspace carves no multi-CTA counters at short N") {
  const Entry* e = two_level_f32();
  if (e == nullptr) return;
  const int64_t s1 = e->sides[0];
  mra_problem p = problem_of(*e, 16, 128 * s1, 128 * s1, 4, MRA_MODE_FULL);
  p.heads = 2;  // 2 x 8 shares < 132: the column split is above 1 (row maxima per range)
  mra::kern::Layout small, sweeps;
  REQUIRE(mra::kern::make_layout(p, &small) == MRA_SUCCESS);
  REQUIRE(mra::kern::make_layout(p, &sweeps, mra::kern::Level1Path::sweeps) == MRA_SUCCESS);
  REQUIRE(small.level[0].small == 1);
  REQUIRE(sweeps.level[0].small == 0);
  REQUIRE(sweeps.level[0].split > 1);
  // Region sizes from the carving order (layout.h): rowmax_part, hist, state, rowcount, rowpick.
  auto sizes = [](const mra::kern::Level& v) {
    return std::vector<size_t>{v.hist - v.rowmax_part, v.state - v.hist, v.rowpick - v.rowcount};
  };
  CHECK(sizes(small.level[0]) == std::vector<size_t>{0, 0, 0});
  const std::vector<size_t> want = sizes(sweeps.level[0]);
  CHECK(want[1] >= size_t(2 * mra::kern::kPasses * mra::kern::kHistWords * 8));
  CHECK(want[0] > 0);
  CHECK(want[2] > 0);
}

TEST_CASE("small level 1: the spread selection makes the multi-CTA path's T_1, bit for bit") {
  const Entry* e = two_level_f32();
  if (e == nullptr) return;
  INFO("configuration ", e->name);
  const int64_t s1 = e->sides[0];
  mra::test::Rng rng(20261201);
  INFO("seed ", rng.seed());

  SUBCASE("the bound: 128 x 128 level-1 pairs (N = 128 s_1), structured inputs, priors") {
    mra_problem p = problem_of(*e, 1, 128 * s1, 128 * s1, 4 * 128, MRA_MODE_SPARSE);
    p.prior_first = 1;
    p.prior_diagonal = 3;
    same_selection(*e, p, structured(p, rng.seed()), false);
  }
  SUBCASE("partial blocks, random masks, a budget that cuts rows") {
    mra_problem p = problem_of(*e, 2, 33 * s1 - 5, 70 * s1 - 13, 3 * 33 + 7, MRA_MODE_SPARSE);
    Inputs in = structured(p, rng.seed() + 1);
    in.qmask = mra::test::random_mask(rng, 1, p.nq, 0.8);
    in.kmask = mra::test::random_mask(rng, 1, p.nk, 0.7);
    for (int64_t i = 3 * s1; i < 4 * s1; ++i) in.kmask[size_t(i)] = 0;  // a key block without real keys
    same_selection(*e, p, in, false);
  }
  SUBCASE("one block row, and a column of blocks") {
    for (const std::pair<int64_t, int64_t>& shape : {std::pair<int64_t, int64_t>{s1 - 3, 300 * s1}, {600 * s1 + 7, 20 * s1}}) {
      const int64_t nq = shape.first, nk = shape.second;
      CAPTURE(nq);
      mra_problem p = problem_of(*e, 1, nq, nk, 37, MRA_MODE_SPARSE);
      p.prior_diagonal = 2;
      same_selection(*e, p, structured(p, rng.seed() + 2), false);
    }
  }
  SUBCASE("exact ties across rows: constant q and k, the threshold inside a tie group or at its end") {
    // Priors 2 give three classes of tied pairs: 4 of priority 2, 132 of priority 1, the rest 0. A budget of 71
    // cuts the priority-1 group; 136 wants it whole (the multi-CTA pick settles early on a whole bin).
    for (int64_t budget : {int64_t(71), int64_t(136)}) {
      CAPTURE(budget);
      mra_problem p = problem_of(*e, 1, 20 * s1, 50 * s1 - 9, budget, MRA_MODE_SPARSE);
      Inputs in{std::vector<float>(size_t(p.nq * p.dim), 0.25f), std::vector<float>(size_t(p.nk * p.dim), 0.5f),
                mra::test::noise(rng, 1, 1, p.nk, p.dim), {}, {}};
      p.prior_first = 2;
      same_selection(*e, p, in, true);
    }
  }
  SUBCASE("a key block without real keys is no candidate, though its mean (0) is above every real logit") {
    // q · k < 0 for every real pair (all tied), so a logit kept for the empty block would be the row maximum.
    mra_problem p = problem_of(*e, 1, 20 * s1, 50 * s1 - 9, 71, MRA_MODE_SPARSE);
    Inputs in{std::vector<float>(size_t(p.nq * p.dim), 0.25f), std::vector<float>(size_t(p.nk * p.dim), -0.5f),
              mra::test::noise(rng, 1, 1, p.nk, p.dim), {}, std::vector<uint8_t>(size_t(p.nk), 1)};
    std::fill(in.kmask.begin() + 7 * s1, in.kmask.begin() + 8 * s1, 0);
    same_selection(*e, p, in, true);
  }
  SUBCASE("300 key blocks of 4 patterns: exact ties across rows and 32-column chunks, masks, the diagonal prior") {
    // As the production case "exact ties" of test_kernels.cpp: every key of block j is pattern (j + slice) % 4, so
    // the pairs of a row with the same pattern tie exactly in f32 and in double, and the budget cuts a tie group.
    mra_problem p = problem_of(*e, 2, 2 * s1 + 5, 300 * s1 - 37, 120, MRA_MODE_SPARSE);
    p.prior_diagonal = 1;
    std::vector<float> pattern(size_t(4 * p.dim));
    for (float& x : pattern) x = mra::test::grid_value(rng, 16, 0x1p-3f);
    Inputs in{mra::test::noise(rng, 1, 2, p.nq, p.dim), std::vector<float>(size_t(2 * p.nk * p.dim)),
              mra::test::noise(rng, 1, 2, p.nk, p.dim), {}, mra::test::random_mask(rng, 1, p.nk, 0.97)};
    for (int64_t slice = 0; slice < 2; ++slice)
      for (int64_t j = 0; j < p.nk; ++j)
        for (int64_t d = 0; d < p.dim; ++d)
          in.k[size_t((slice * p.nk + j) * p.dim + d)] = pattern[size_t(((j / s1 + slice) % 4) * p.dim + d)];
    std::fill(in.kmask.begin() + 5 * s1, in.kmask.begin() + 7 * s1, 0);
    same_selection(*e, p, in, true);
  }
  SUBCASE("67 slices: one CTA per slice, ranking all its rows (the shares depend on the slices)") {
    // 40 block rows: the share's logits take three 16-row tiles.
    mra_problem p = problem_of(*e, 67, 40 * s1 - 3, 5 * s1, 2 * 40 + 1, MRA_MODE_SPARSE);
    mra::kern::Layout L;
    REQUIRE(mra::kern::make_layout(p, &L) == MRA_SUCCESS);
    CHECK(L.level[0].shares == 1);
    same_selection(*e, p, structured(p, rng.seed() + 5), false);
  }
  SUBCASE("a poisoned slice beside a clean one") {
    mra_problem p = problem_of(*e, 2, 40 * s1, 40 * s1, 4 * 40, MRA_MODE_SPARSE);
    Inputs in = structured(p, rng.seed() + 3);
    in.k[size_t((p.nk + 17) * p.dim + 5)] = NAN;  // slice 1, key 17
    same_selection(*e, p, in, false);
    const Run one = run(*e, p, in, 1, mra::kern::kStagePrepare);
    CHECK(one.bad == std::vector<int32_t>{0, 1});
    CHECK(one.rowptr[size_t(40 + 1 + 40)] == 0);  // slice 1 refines nothing
    CHECK(one.rowptr[40] == 4 * 40);              // slice 0 spends its budget
  }
  SUBCASE("budgets 0 and above the candidates") {
    for (int64_t budget : {int64_t(0), int64_t(10 * 12), int64_t(100000)}) {
      CAPTURE(budget);
      mra_problem p = problem_of(*e, 1, 10 * s1 - 1, 12 * s1, budget, MRA_MODE_SPARSE);
      same_selection(*e, p, structured(p, rng.seed() + 4), true);
    }
  }
}

TEST_CASE("small level 1: mode full from the stored logits matches the reference and the multi-CTA path") {
  const Entry* e = two_level_f32();
  if (e == nullptr) return;
  INFO("configuration ", e->name);
  const int64_t s1 = e->sides[0];
  mra::test::Rng rng(20261202);
  INFO("seed ", rng.seed());
  // 17 block rows: a partial CTA of rows (16 per CTA); 70 key blocks: two 64-column chunks, the second partial.
  mra_problem p = problem_of(*e, 2, 17 * s1 - 3, 70 * s1 - 5, 4 * 17, MRA_MODE_FULL);
  p.prior_diagonal = 1;
  Inputs in = structured(p, rng.seed());
  in.kmask = mra::test::random_mask(rng, 1, p.nk, 0.9);
  const Run one = run(*e, p, in, 1, mra::kern::kStageAll);
  const Run multi = run(*e, p, in, 0, mra::kern::kStageAll);
  CHECK(one.col == multi.col);
  const int64_t n_out = p.heads * p.nq * p.dim;
  const std::vector<int64_t> dims{p.batch, p.heads, p.nq, p.dim};
  std::vector<float> want(static_cast<size_t>(n_out));
  mra::ref::Config rc;
  rc.scales = {s1, 1};
  rc.budgets = {p.budgets[0]};
  rc.prior_diagonal = p.prior_diagonal;
  mra::ref::mra_attention(
      mra::ref::Problem::of(p.batch, p.heads, p.nq, p.nk, p.dim, in.q.data(), in.k.data(), in.v.data(), nullptr,
                            in.kmask.data()),
      rc, want.data());
  CHECK(mra::test::norm2(want) > 0);
  // The derived-bound form of docs/kernels.md, "Tolerances", as test_column_split.cpp (same sizes and inputs).
  const auto ref = mra::test::compare(one.out.data(), want.data(), n_out, 1e-4, 1e-4, dims);
  INFO(ref.report);
  CHECK(ref.ok);
  const auto same = mra::test::compare(one.out.data(), multi.out.data(), n_out, 1e-6, 1e-6, dims);
  INFO(same.report);
  CHECK(same.ok);
  const auto coarse = mra::test::compare(one.coarse.data(), multi.coarse.data(), int64_t(one.coarse.size()), 1e-6,
                                         1e-6, {int64_t(one.coarse.size())});
  INFO(coarse.report);
  CHECK(coarse.ok);
  const Run again = run(*e, p, in, 1, mra::kern::kStageAll);
  CHECK(std::memcmp(again.out.data(), one.out.data(), size_t(n_out) * sizeof(float)) == 0);
}
