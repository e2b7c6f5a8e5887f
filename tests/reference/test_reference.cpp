// tests/reference/test_reference.cpp: the reference library against hand-computed values, against exact
// attention (every block selected) and against the dense oracle (oracle.h) over a grid of configurations.
//   ctest --test-dir build -L reference        or        build/tests/reference/test_reference
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/inputs.h"
#include "mra/reference.h"
#include "oracle.h"

using mra::ref::Config;
using mra::ref::Mode;
using mra::ref::Problem;
using mra::ref::Selection;
using namespace mra::test;

namespace {

constexpr float kPoison = 12345.0f;  // written before every run, so an unwritten element shows

struct Case {
  int64_t batch = 1, heads = 2, nq = 50, nk = 50, dim = 8;
  std::vector<float> q, k, v;
  std::vector<uint8_t> qmask, kmask;
  Problem problem() const {
    return Problem{batch, heads, nq, nk, dim, q.data(), k.data(), v.data(),
                   qmask.empty() ? nullptr : qmask.data(), kmask.empty() ? nullptr : kmask.data(), 0.0};
  }
};

Case structured_case(uint64_t seed, int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim) {
  mra::synthetic::Inputs s = mra::synthetic::structured(batch, heads, nq, nk, dim, seed);
  return Case{batch, heads, nq, nk, dim, std::move(s.q), std::move(s.k), std::move(s.v), {}, {}};
}

std::vector<float> run_mra(const Problem& p, const Config& c, const Selection& s) {
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * p.dim), kPoison);
  mra::ref::attend(p, c, s, out.data());
  return out;
}

std::vector<float> run_exact(const Problem& p) {
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * p.dim), kPoison);
  mra::ref::exact_attention(p, out.data());
  return out;
}

std::string describe(const Config& c) {
  std::ostringstream s;
  s << "scales";
  for (int64_t x : c.scales) s << ' ' << x;
  s << ", budgets";
  for (int64_t x : c.budgets) s << ' ' << x;
  s << (c.mode == Mode::full ? ", full" : ", sparse") << ", priors " << c.prior_first << '/' << c.prior_diagonal;
  return s.str();
}

void check_close(const std::vector<float>& x, const std::vector<float>& ref, const Problem& p, double atol,
                 double rtol, const std::string& what) {
  const Comparison cmp = compare(x.data(), ref.data(), int64_t(ref.size()), atol, rtol, {p.batch, p.heads, p.nq, p.dim});
  INFO(what << ": " << cmp.report);
  CHECK(cmp.ok);
}

}  // namespace

TEST_CASE("exact attention: hand-computed two-token case") {
  // D = 1, scale 1: q = (1, -1), k = (0, 2), v = (1, 3). Row 0 weights e^0, e^2; row 1 weights e^0, e^-2.
  const std::vector<float> q{1, -1}, k{0, 2}, v{1, 3};
  Problem p{1, 1, 2, 2, 1, q.data(), k.data(), v.data(), nullptr, nullptr, 1.0};
  const std::vector<float> out = run_exact(p);
  const double e2 = std::exp(2.0);
  CHECK(out[0] == doctest::Approx((1 + 3 * e2) / (1 + e2)).epsilon(1e-7));
  CHECK(out[1] == doctest::Approx((1 + 3 / e2) / (1 + 1 / e2)).epsilon(1e-7));
}

TEST_CASE("mra: hand-computed two-level case") {
  // Scales (2, 1), one 2x2 block. q = (1, 1), k = (0, 2): pooled logit 1*1 = 1 for the whole block, so with
  // nothing refined both rows weigh both keys equally: out = mean(v) = 2. Refining the block gives exact
  // attention; in sparse mode with nothing refined there is nothing to attend to: 0.
  const std::vector<float> q{1, 1}, k{0, 2}, v{1, 3};
  Problem p{1, 1, 2, 2, 1, q.data(), k.data(), v.data(), nullptr, nullptr, 1.0};
  Config c;
  c.scales = {2, 1};
  c.budgets = {0};
  std::vector<float> out(2, kPoison);
  mra::ref::mra_attention(p, c, out.data());
  CHECK(out[0] == doctest::Approx(2.0).epsilon(1e-7));
  CHECK(out[1] == doctest::Approx(2.0).epsilon(1e-7));
  c.mode = Mode::sparse;
  mra::ref::mra_attention(p, c, out.data());
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == 0.0f);
  c.budgets = {1};
  mra::ref::mra_attention(p, c, out.data());
  const double e2 = std::exp(2.0);
  CHECK(out[0] == doctest::Approx((1 + 3 * e2) / (1 + e2)).epsilon(1e-7));
}

TEST_CASE("mra: hand-computed mix of coarse and exact components") {
  // Scales (2, 1), N = 4, D = 1, scale 1: q = (1, 3, 2, 2), k = (1, 0, 1, 3), v = (2, 4, 10, 20), budget 1.
  // Pooled: q̄ = (2, 2), k̄ = (0.5, 2); pooled logits (0,0) = 1, (0,1) = 4, (1,0) = 1, (1,1) = 4. Scores are
  // -3 and 0 in both block rows: the tie at 0 goes to the lower flat index, pair (0, 1).
  // Rows 0, 1 (q = 1, 3): exact logits q·k for keys 2, 3 (1, 3 and 3, 9), the coarse pair (0, 0) with logit 1
  // for keys 0, 1 (V sum 6, 2 keys). Rows 2, 3: coarse pairs (1, 0), logit 1, and (1, 1), logit 4 (V sum 30).
  // Exact and coarse weights differ within every refined row, so an exact entry evaluated as coarse (or the
  // reverse) changes the output.
  const std::vector<float> q{1, 3, 2, 2}, k{1, 0, 1, 3}, v{2, 4, 10, 20};
  Problem p{1, 1, 4, 4, 1, q.data(), k.data(), v.data(), nullptr, nullptr, 1.0};
  Config c;
  c.scales = {2, 1};
  c.budgets = {1};
  const Selection s = mra::ref::select(p, c);
  CHECK(s.at(0, 0, 0) == std::vector<int64_t>{1});
  const double e1 = std::exp(1.0), e3 = std::exp(3.0), e4 = std::exp(4.0), e9 = std::exp(9.0);
  const std::vector<double> full{(6 * e1 + 10 * e1 + 20 * e3) / (2 * e1 + e1 + e3),
                                 (6 * e1 + 10 * e3 + 20 * e9) / (2 * e1 + e3 + e9),
                                 (6 * e1 + 30 * e4) / (2 * e1 + 2 * e4), (6 * e1 + 30 * e4) / (2 * e1 + 2 * e4)};
  const std::vector<float> out = run_mra(p, c, s);
  for (size_t i = 0; i < 4; ++i) CHECK(out[i] == doctest::Approx(full[i]).epsilon(1e-6));
  // Sparse: rows 0, 1 keep their exact entries only; rows 2, 3 have none and are 0.
  c.mode = Mode::sparse;
  const std::vector<double> sparse{(10 * e1 + 20 * e3) / (e1 + e3), (10 * e3 + 20 * e9) / (e3 + e9), 0, 0};
  const std::vector<float> out_sparse = run_mra(p, c, s);
  for (size_t i = 0; i < 4; ++i) CHECK(out_sparse[i] == doctest::Approx(sparse[i]).epsilon(1e-6));
}

TEST_CASE("selection: exact ties resolve by flat index, priors outrank scores") {
  // All-equal inputs: every pooled logit is equal, every score is 0.
  Case t{1, 1, 32, 32, 4, {}, {}, {}, {}, {}};
  t.q.assign(32 * 4, 0.5f);
  t.k.assign(32 * 4, 0.5f);
  t.v.assign(32 * 4, 1.0f);
  const Problem p = t.problem();
  Config c;
  c.scales = {8, 1};
  c.budgets = {5};
  CHECK(mra::ref::select(p, c).at(0, 0, 0) == std::vector<int64_t>{0, 1, 2, 3, 4});
  SUBCASE("the diagonal prior comes first") {
    c.prior_diagonal = 1;
    CHECK(mra::ref::select(p, c).at(0, 0, 0) == std::vector<int64_t>{0, 1, 5, 10, 15});
  }
  SUBCASE("the first-n prior: the corner (two priors) first, then the row and the column") {
    c.prior_first = 1;
    c.budgets = {3};
    CHECK(mra::ref::select(p, c).at(0, 0, 0) == std::vector<int64_t>{0, 1, 2});
    c.budgets = {7};
    CHECK(mra::ref::select(p, c).at(0, 0, 0) == std::vector<int64_t>{0, 1, 2, 3, 4, 8, 12});
  }
  SUBCASE("a prior block beats a better-scoring block") {
    // Make block row 0's logits with key block 3 large: without priors (0, 3) is row 0's best.
    for (int64_t j = 24; j < 32; ++j)
      for (int64_t d = 0; d < 4; ++d) t.k[size_t(j * 4 + d)] = 3.0f;
    const Problem p2 = t.problem();
    c.budgets = {4};
    c.prior_diagonal = 1;
    CHECK(mra::ref::select(p2, c).at(0, 0, 0) == std::vector<int64_t>{0, 5, 10, 15});
  }
}

TEST_CASE("selection: budgets larger than the candidates refine everything; deeper budgets are per step") {
  Case t = structured_case(11, 1, 1, 40, 40, 8);
  const Problem p = t.problem();
  Config c;
  c.scales = {16, 4, 1};
  c.budgets = {1000, 1000};
  const Selection s = mra::ref::select(p, c);
  CHECK(s.at(0, 0, 0).size() == 9);    // 3 x 3 blocks of 16 (the last partial)
  CHECK(s.at(0, 0, 1).size() == 100);  // 10 x 10 blocks of 4
  c.budgets = {2, 5};
  const Selection small = mra::ref::select(p, c);
  CHECK(small.at(0, 0, 0).size() == 2);
  CHECK(small.at(0, 0, 1).size() == 5);
  CHECK_NOTHROW(mra::ref::validate_selection(p, c, small));
}

TEST_CASE("mra with every block selected and exact attention both equal the oracle's dense softmax") {
  const std::vector<std::vector<int64_t>> grid{{4, 1}, {8, 1}, {32, 1}, {8, 2, 1}, {16, 4, 1}, {12, 6, 3, 1}};
  for (const auto& scales : grid)
    for (int masking = 0; masking < 3; ++masking)
      for (Mode mode : {Mode::full, Mode::sparse}) {
        Case t = structured_case(100 + uint64_t(masking), 2, 2, 45, 70, 16);
        Rng rng(7 + uint64_t(masking));
        if (masking == 1) {
          t.qmask = padding_mask(2, 45, {0, 13});
          t.kmask = padding_mask(2, 70, {0, 21});
        } else if (masking == 2) {
          t.qmask = random_mask(rng, 2, 45, 0.7);
          t.kmask = random_mask(rng, 2, 70, 0.6);
        }
        const Problem p = t.problem();
        Config c;
        c.scales = scales;
        c.budgets.assign(scales.size() - 1, int64_t(1) << 40);
        c.mode = mode;
        // The oracle (oracle.cpp) selects every block too and forms the dense softmax of the exact logits itself:
        // code independent of the reference's, which evaluates both sides below with the same exact terms.
        const std::vector<float> dense = oracle_attention(p, c, oracle_select(p, c));
        CHECK(norm2(dense) > 0.0);
        const std::string what = describe(c) + ", masking " + std::to_string(masking);
        check_close(run_mra(p, c, mra::ref::select(p, c)), dense, p, 1e-7, 1e-6, what + ", mra");
        check_close(run_exact(p), dense, p, 1e-7, 1e-6, what + ", exact");
      }
}

TEST_CASE("mra equals the dense oracle over a grid of configurations") {
  struct Grid {
    std::vector<int64_t> scales;
    std::vector<std::vector<int64_t>> budgets;
  };
  const std::vector<Grid> grid{
      {{8, 1}, {{0}, {3}, {10}, {40}}},
      {{16, 1}, {{1}, {5}}},
      {{8, 2, 1}, {{4, 10}, {10, 3}, {2, 100}}},
      {{16, 4, 1}, {{3, 12}, {6, 40}}},
      {{12, 6, 3, 1}, {{4, 6, 9}}},
  };
  int cases = 0;
  for (const Grid& g : grid)
    for (const auto& budgets : g.budgets)
      for (Mode mode : {Mode::full, Mode::sparse})
        for (int masking = 0; masking < 3; ++masking)
          for (int shape = 0; shape < 2; ++shape)
            for (int priors = 0; priors < 2; ++priors) {
              const int64_t nq = shape == 0 ? 50 : 37, nk = shape == 0 ? 50 : 61;
              const uint64_t seed = 1000 + uint64_t(cases);
              Case t = structured_case(seed, 2, 1, nq, nk, 8);
              Rng rng(seed);
              if (shape == 1) t.q = noise(rng, 2, 1, nq, 8, 1.5);  // iid queries against structured keys
              if (masking == 1) {
                t.qmask = padding_mask(2, nq, {0, 11});
                t.kmask = padding_mask(2, nk, {3, 17});
              } else if (masking == 2) {
                t.qmask = random_mask(rng, 2, nq, 0.8);
                t.kmask = random_mask(rng, 2, nk, 0.5);
              }
              const Problem p = t.problem();
              Config c;
              c.scales = g.scales;
              c.budgets = budgets;
              c.mode = mode;
              c.prior_first = priors;
              c.prior_diagonal = priors ? 3 : 0;
              const std::string what = describe(c) + ", masking " + std::to_string(masking) + ", nq " +
                                       std::to_string(nq) + ", nk " + std::to_string(nk) + ", seed " + std::to_string(seed);
              const Selection s = mra::ref::select(p, c);
              const Selection o = oracle_select(p, c);
              INFO(what);
              CHECK(s.refined == o.refined);
              const std::vector<float> out = run_mra(p, c, s);
              const std::vector<float> ref = oracle_attention(p, c, o);  // the oracle on its own selection
              const bool nothing_selected = mode == Mode::sparse && budgets[0] == 0;
              CHECK((norm2(ref) > 0.0) != nothing_selected);
              check_close(out, ref, p, 1e-7, 1e-6, what);
              ++cases;
            }
  MESSAGE(cases << " configurations checked against the dense oracle");
}

TEST_CASE("selection: stage by stage the levels nest and each budget is spent") {
  Case t = structured_case(5, 1, 2, 64, 64, 8);
  const Problem p = t.problem();
  Config c;
  c.scales = {16, 4, 1};
  c.budgets = {5, 17};
  const Selection s = mra::ref::select(p, c);
  for (int64_t h = 0; h < 2; ++h) {
    CHECK(s.at(0, h, 0).size() == 5);
    CHECK(s.at(0, h, 1).size() == 17);
  }
  CHECK_NOTHROW(mra::ref::validate_selection(p, c, s));
  // The pooled tensors reproduce the block means.
  const mra::ref::Pooled pooled = mra::ref::pool(p, 16);
  CHECK(pooled.nq_blocks == 4);
  double mean = 0.0;
  for (int64_t i = 16; i < 32; ++i) mean += t.q[size_t((1 * 64 + i) * 8 + 3)];
  CHECK(pooled.q_mean[size_t(((1 * 4) + 1) * 8 + 3)] == doctest::Approx(mean / 16).epsilon(1e-12));
  const std::vector<double> logits = mra::ref::coarse_logits(p, pooled);
  CHECK(logits.size() == 2 * 16);
  CHECK(logits[5] == doctest::Approx(mra::ref::coarse_logit(p, pooled, 0, 0, 1, 1)));
}

TEST_CASE("selection: a selection of the user's own is validated") {
  Case t = structured_case(3, 1, 1, 32, 32, 4);
  t.kmask = padding_mask(1, 32, {8});  // key block 3 of side 8 is padding
  const Problem p = t.problem();
  Config c;
  c.scales = {16, 8, 1};
  c.budgets = {2, 2};
  Selection s{1, 1, 2, {{0, 1}, {0, 1}}};
  CHECK_NOTHROW(mra::ref::validate_selection(p, c, s));
  CHECK_NOTHROW(run_mra(p, c, s));
  s.refined = {{0, 4}, {}};
  CHECK_THROWS_WITH_AS(mra::ref::validate_selection(p, c, s), doctest::Contains("out of range"), mra::ref::Error);
  s.refined = {{1, 0}, {}};
  CHECK_THROWS_WITH_AS(mra::ref::validate_selection(p, c, s), doctest::Contains("sorted"), mra::ref::Error);
  s.refined = {{0}, {8}};
  CHECK_THROWS_WITH_AS(mra::ref::validate_selection(p, c, s), doctest::Contains("outside"), mra::ref::Error);
  s.refined = {{1}, {3}};
  CHECK_THROWS_WITH_AS(mra::ref::validate_selection(p, c, s), doctest::Contains("inactive"), mra::ref::Error);
  s.refined = {{0}};
  CHECK_THROWS_AS(mra::ref::validate_selection(p, c, s), mra::ref::Error);
}

TEST_CASE("configuration and problem errors are reported") {
  Case t = structured_case(3, 1, 1, 16, 16, 4);
  const Problem p = t.problem();
  std::vector<float> out(16 * 4);
  auto fails = [&](Config c, const char* text) {
    CHECK_THROWS_WITH_AS(mra::ref::mra_attention(p, c, out.data()), doctest::Contains(text), mra::ref::Error);
  };
  Config c;
  c.budgets = {1};
  fails({{32}, {}}, "at least two");
  fails({{32, 2}, {1}}, "last resolution must be 1");
  fails({{8, 16, 1}, {1, 1}}, "decrease");
  fails({{12, 8, 1}, {1, 1}}, "does not divide");
  fails({{8, 1}, {1, 2}}, "one budget per refinement step");
  fails({{8, 1}, {-1}}, "negative");
  Problem bad = p;
  bad.dim = 0;
  CHECK_THROWS_WITH_AS(mra::ref::exact_attention(bad, out.data()), doctest::Contains("head dimension"), mra::ref::Error);
  bad = p;
  bad.k = nullptr;
  CHECK_THROWS_AS(mra::ref::exact_attention(bad, out.data()), mra::ref::Error);
  fails({{2097152, 1}, {1}}, "above the largest block side");
  // One mask rule for every API (runtime/mra.h): 0 is padding, any other byte is a real token.
  std::vector<uint8_t> mask(16, 2), ones(16, 1);
  mask[3] = ones[3] = 0;
  Problem twos = p, canonical = p;
  twos.key_mask = mask.data();
  canonical.key_mask = ones.data();
  std::vector<float> with_twos(out.size()), with_ones(out.size());
  mra::ref::exact_attention(twos, with_twos.data());
  mra::ref::exact_attention(canonical, with_ones.data());
  CHECK(with_twos == with_ones);
}

TEST_CASE("default budgets from blocks per row") {
  using mra::ref::budgets_from_blocks_per_row;
  CHECK(budgets_from_blocks_per_row({32, 1}, 512, 512, 4) == std::vector<int64_t>{64});  // HF mra-base-512-4
  CHECK(budgets_from_blocks_per_row({32, 1}, 64, 64, 4) == std::vector<int64_t>{4});     // capped at 2 x 2
  CHECK(budgets_from_blocks_per_row({32, 1}, 100, 64, 1) == std::vector<int64_t>{4});    // ceil(100 / 32) rows
  CHECK(budgets_from_blocks_per_row({16, 4, 1}, 512, 512, 4) == std::vector<int64_t>{128, 512});
  CHECK(budgets_from_blocks_per_row({16, 4, 1}, 32, 32, 4) == std::vector<int64_t>{4, 32});
}

TEST_CASE("rows with nothing to attend to are zero") {
  Case t = structured_case(21, 2, 1, 40, 40, 8);
  t.kmask = padding_mask(2, 40, {0, 40});  // batch 1: every key is padding
  t.qmask = padding_mask(2, 40, {5, 0});   // batch 0: last 5 queries are padding
  const Problem p = t.problem();
  Config c;
  c.scales = {8, 1};
  c.budgets = {3};
  for (Mode mode : {Mode::full, Mode::sparse}) {
    c.mode = mode;
    const Selection s = mra::ref::select(p, c);
    const std::vector<float> out = run_mra(p, c, s);
    const std::vector<float> exact = run_exact(p);
    for (int64_t i = 0; i < 40 * 8; ++i) {
      CHECK(out[size_t(40 * 8 + i)] == 0.0f);  // batch 1
      CHECK(exact[size_t(40 * 8 + i)] == 0.0f);
    }
    for (int64_t i = 35 * 8; i < 40 * 8; ++i) CHECK(out[size_t(i)] == 0.0f);  // padded queries of batch 0
    // In sparse mode a real row of batch 0 is zero exactly when no refined block lies in its block row.
    std::vector<bool> covered(5, false);
    for (int64_t flat : s.at(0, 0, 0)) covered[size_t(flat / 5)] = true;
    for (int64_t i = 0; i < 35; ++i) {
      const bool zero = out[size_t(i * 8)] == 0.0f && out[size_t(i * 8 + 1)] == 0.0f;
      CHECK(zero == (mode == Mode::sparse && !covered[size_t(i / 8)]));
    }
  }
}

TEST_CASE("non-finite inputs poison their slice only, padding is never read") {
  Case t = structured_case(31, 1, 2, 24, 24, 4);
  t.kmask = padding_mask(1, 24, {4});
  Config c;
  c.scales = {8, 1};
  c.budgets = {4};
  const Problem clean = t.problem();
  std::vector<float> base(24 * 2 * 4, kPoison);
  mra::ref::mra_attention(clean, c, base.data());
  // A NaN in a padded key of head 0 changes nothing.
  t.k[size_t(22 * 4 + 1)] = std::numeric_limits<float>::quiet_NaN();
  t.v[size_t(23 * 4 + 2)] = std::numeric_limits<float>::infinity();
  std::vector<float> out(base.size(), kPoison);
  mra::ref::mra_attention(t.problem(), c, out.data());
  CHECK(out == base);
  // An Inf in a real query of head 1 makes every row of head 1 NaN, head 0 untouched, and selects nothing.
  t.q[size_t((24 + 3) * 4)] = -std::numeric_limits<float>::infinity();
  const Problem p = t.problem();
  mra::ref::mra_attention(p, c, out.data());
  const std::vector<float> exact = run_exact(p);
  for (size_t i = 0; i < 24 * 4; ++i) CHECK(out[i] == base[i]);
  for (size_t i = 24 * 4; i < out.size(); ++i) {
    CHECK(std::isnan(out[i]));
    CHECK(std::isnan(exact[i]));
  }
  const Selection s = mra::ref::select(p, c);
  CHECK(s.at(0, 0, 0).size() == 4);
  CHECK(s.at(0, 1, 0).empty());
}

TEST_CASE("large logits neither overflow nor produce NaN") {
  Case t = structured_case(41, 1, 1, 40, 40, 8);
  for (float& x : t.q) x *= 300.0f;  // logits of order 1e4 and more
  for (float& x : t.k) x *= 30.0f;
  const Problem p = t.problem();
  Config c;
  c.scales = {8, 1};
  c.budgets = {8};
  for (Mode mode : {Mode::full, Mode::sparse}) {
    c.mode = mode;
    const Selection s = mra::ref::select(p, c);
    const std::vector<float> out = run_mra(p, c, s);
    for (float x : out) CHECK(std::isfinite(x));
    check_close(out, oracle_attention(p, c, oracle_select(p, c)), p, 1e-6, 1e-5, describe(c));
  }
  c.budgets = {25};
  check_close(run_mra(p, c, mra::ref::select(p, c)), run_exact(p), p, 1e-6, 1e-5, "all selected, large logits");
}

TEST_CASE("edges: one token, one dimension, one block") {
  const std::vector<float> q{2}, k{-1}, v{7};
  const Problem p{1, 1, 1, 1, 1, q.data(), k.data(), v.data(), nullptr, nullptr, 0.0};
  Config c;
  c.budgets = {0};
  std::vector<float> out(1, kPoison);
  mra::ref::mra_attention(p, c, out.data());
  CHECK(out[0] == 7.0f);  // a single coarse component: the mean of one value
  c.budgets = {1};
  mra::ref::mra_attention(p, c, out.data());
  CHECK(out[0] == 7.0f);
  CHECK(run_exact(p)[0] == 7.0f);
}

TEST_CASE("coverage counts the exactly evaluated entries") {
  Case t = structured_case(51, 1, 1, 64, 64, 4);
  const Problem p = t.problem();
  Config c;
  c.scales = {16, 1};
  c.budgets = {4};
  const mra::ref::Coverage cov = mra::ref::coverage(p, c, mra::ref::select(p, c));
  CHECK(cov.exact_entries == 4 * 256);
  CHECK(cov.total_entries == 64 * 64);
  CHECK(cov.exact_fraction() == doctest::Approx(0.25));
}
