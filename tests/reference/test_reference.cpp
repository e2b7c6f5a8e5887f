// tests/reference/test_reference.cpp: the reference library against hand-computed values, against exact
// attention (every block selected) and against the dense oracle (oracle.h) over a grid of configurations.
//   ctest --test-dir build -L reference        or        build/tests/reference/test_reference
#include "common/doctest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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

// Masking 0: none; 1: the last q_pad[b] queries and k_pad[b] keys of batch b are padding; 2: random masks keeping
// about q_keep of the queries and k_keep of the keys.
void mask_case(Case& t, int masking, Rng& rng, const std::vector<int64_t>& q_pad, const std::vector<int64_t>& k_pad,
               double q_keep, double k_keep) {
  if (masking == 1) {
    t.qmask = padding_mask(t.batch, t.nq, q_pad);
    t.kmask = padding_mask(t.batch, t.nk, k_pad);
  } else if (masking == 2) {
    t.qmask = random_mask(rng, t.batch, t.nq, q_keep);
    t.kmask = random_mask(rng, t.batch, t.nk, k_keep);
  }
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

// Causal softmax attention straight from docs/semantics.md §1 and §9.1, in double: query i weighs the real keys
// j <= i + nk - nq. Finite inputs only; rows without a key are 0.
std::vector<float> dense_causal(const Problem& p) {
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * p.dim), 0.0f);
  const double scale = p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(double(p.dim));
  for (int64_t bh = 0; bh < p.batch * p.heads; ++bh) {
    const int64_t b = bh / p.heads;
    for (int64_t i = 0; i < p.nq; ++i) {
      if (p.query_mask && !p.query_mask[b * p.nq + i]) continue;
      std::vector<double> logit;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j < p.nk && j <= i + p.nk - p.nq; ++j) {
        if (p.key_mask && !p.key_mask[b * p.nk + j]) continue;
        double dot = 0.0;
        for (int64_t d = 0; d < p.dim; ++d) dot += double(p.q[(bh * p.nq + i) * p.dim + d]) * p.k[(bh * p.nk + j) * p.dim + d];
        logit.push_back(scale * dot);
        keys.push_back(j);
      }
      if (keys.empty()) continue;
      const double m = *std::max_element(logit.begin(), logit.end());
      double den = 0.0;
      std::vector<double> num(size_t(p.dim), 0.0);
      for (size_t t = 0; t < keys.size(); ++t) {
        const double w = std::exp(logit[t] - m);
        den += w;
        for (int64_t d = 0; d < p.dim; ++d) num[size_t(d)] += w * p.v[(bh * p.nk + keys[t]) * p.dim + d];
      }
      for (int64_t d = 0; d < p.dim; ++d) out[size_t((bh * p.nq + i) * p.dim + d)] = float(num[size_t(d)] / den);
    }
  }
  return out;
}

Config row_config(std::vector<int64_t> scales, std::vector<int64_t> budgets, Mode mode = Mode::full) {
  Config c;
  c.scales = std::move(scales);
  c.budgets = std::move(budgets);
  c.mode = mode;
  c.policy = mra::ref::Policy::row;
  return c;
}

void check_close(const std::vector<float>& x, const std::vector<float>& ref, const Problem& p, double atol,
                 double rtol, const std::string& what) {
  const Comparison cmp = compare(x.data(), ref.data(), int64_t(ref.size()), atol, rtol, {p.batch, p.heads, p.nq, p.dim});
  INFO(what << ": " << cmp.report);
  CHECK(cmp.ok);
}

// Block sides and the budgets to try with them: per slice (policy global) or per block row (policy row).
struct OracleGrid {
  std::vector<int64_t> scales;
  std::vector<std::vector<int64_t>> budgets;
};

// Every configuration of `grid` under `policy`, in both modes, with no / padding / random masks, `shapes` shapes
// (50 x 50 structured; 37 iid queries against 61 structured keys; 61 queries against 37 keys), priors off and on,
// and causal as well when `causal`: the reference's selection must equal the oracle's, and the reference's
// output on it the oracle's attention on its own selection. Seeds run from `seed_base`; returns the count.
int check_oracle_grid(mra::ref::Policy policy, const std::vector<OracleGrid>& grid, uint64_t seed_base, int shapes,
                      bool causal) {
  int cases = 0;
  for (const OracleGrid& g : grid)
    for (const auto& budgets : g.budgets)
      for (Mode mode : {Mode::full, Mode::sparse})
        for (int is_causal = 0; is_causal < (causal ? 2 : 1); ++is_causal)
          for (int masking = 0; masking < 3; ++masking)
            for (int shape = 0; shape < shapes; ++shape)
              for (int priors = 0; priors < 2; ++priors) {
                const int64_t nq = shape == 0 ? 50 : shape == 1 ? 37 : 61, nk = shape == 0 ? 50 : shape == 1 ? 61 : 37;
                const uint64_t seed = seed_base + uint64_t(cases);
                Case t = structured_case(seed, 2, 1, nq, nk, 8);
                Rng rng(seed);
                if (shape == 1) t.q = noise(rng, 2, 1, nq, 8, 1.5);  // iid queries against structured keys
                mask_case(t, masking, rng, {0, 11}, {3, 17}, 0.8, 0.5);
                Problem p = t.problem();
                p.causal = is_causal == 1;
                Config c;
                c.scales = g.scales;
                c.budgets = budgets;
                c.mode = mode;
                c.policy = policy;
                c.prior_first = priors;
                c.prior_diagonal = priors ? 3 : 0;
                const std::string what = describe(c) + (is_causal ? ", causal" : "") + ", masking " +
                                         std::to_string(masking) + ", nq " + std::to_string(nq) + ", nk " +
                                         std::to_string(nk) + ", seed " + std::to_string(seed);
                INFO(what);
                const Selection s = mra::ref::select(p, c);
                const Selection o = oracle_select(p, c);  // the oracle's own selection, not the reference's
                CHECK(s.refined == o.refined);
                CHECK_NOTHROW(mra::ref::validate_selection(p, c, s));
                const std::vector<float> ref = oracle_attention(p, c, o);
                // Causal attention refines the blocks crossing the diagonal outside the budget (§9.3).
                const bool nothing_selected = mode == Mode::sparse && budgets[0] == 0 && !is_causal;
                CHECK((norm2(ref) > 0.0) != nothing_selected);
                check_close(run_mra(p, c, s), ref, p, 1e-7, 1e-6, what);
                ++cases;
              }
  return cases;
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

TEST_CASE("selection: budgets larger than the candidates refine everything, deeper budgets are per step") {
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
        mask_case(t, masking, rng, {0, 13}, {0, 21}, 0.7, 0.6);
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
  const std::vector<OracleGrid> grid{
      {{8, 1}, {{0}, {3}, {10}, {40}}},
      {{16, 1}, {{1}, {5}}},
      {{8, 2, 1}, {{4, 10}, {10, 3}, {2, 100}}},
      {{16, 4, 1}, {{3, 12}, {6, 40}}},
      {{12, 6, 3, 1}, {{4, 6, 9}}},
  };
  const int cases = check_oracle_grid(mra::ref::Policy::global, grid, 1000, 2, false);
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

// ---------------------------------------------------------------------------------------------------------------
// Causal attention (docs/semantics.md §9) and the row policy (§10).

TEST_CASE("causal: hand-computed pairs on both sides of the diagonal") {
  // N = 4, scales (2, 1), D = 1, scale 1, budget 0 per row. Pairs: (0, 0) and (1, 1) cross the diagonal and are
  // refined (exact, masked), (0, 1) is future, (1, 0) visible and coarse: pooled logit q̄1 k̄0 = 2 * 0.5 = 1,
  // V sum 6 over 2 keys. Row 0 sees key 0 only; row 1 keys 0, 1 exactly; rows 2, 3 the coarse pair and key 2,
  // row 3 also key 3.
  const std::vector<float> q{1, 3, 2, 2}, k{1, 0, 1, 3}, v{2, 4, 10, 20};
  const Problem p = Problem::of(1, 1, 4, 4, 1, q.data(), k.data(), v.data(), nullptr, nullptr, 1.0, true);
  const Config c = row_config({2, 1}, {0});
  const Selection s = mra::ref::select(p, c);
  CHECK(s.at(0, 0, 0) == std::vector<int64_t>{0, 3});
  const double e1 = std::exp(1.0), e2 = std::exp(2.0), e3 = std::exp(3.0), e6 = std::exp(6.0);
  const std::vector<double> want{2, (2 * e3 + 4) / (e3 + 1), (6 * e1 + 10 * e2) / (2 * e1 + e2),
                                 (6 * e1 + 10 * e2 + 20 * e6) / (2 * e1 + e2 + e6)};
  const std::vector<float> out = run_mra(p, c, s);
  for (size_t i = 0; i < 4; ++i) CHECK(out[i] == doctest::Approx(want[i]).epsilon(1e-6));
  // Sparse mode drops the coarse pair (1, 0) only.
  const std::vector<float> sparse = run_mra(p, row_config({2, 1}, {0}, Mode::sparse), s);
  CHECK(sparse[2] == doctest::Approx(10.0).epsilon(1e-6));
  CHECK(sparse[3] == doctest::Approx((10 * e2 + 20 * e6) / (e2 + e6)).epsilon(1e-6));
}

TEST_CASE("causal: every block refined equals dense causal attention, exact attention too") {
  const std::vector<std::vector<int64_t>> grid{{4, 1}, {8, 1}, {32, 1}, {8, 2, 1}, {16, 4, 1}, {12, 6, 3, 1}};
  // Nk - Nq positive (cached keys), negative (early queries see nothing), zero, and not a multiple of a block.
  const std::vector<std::pair<int64_t, int64_t>> shapes{{45, 70}, {70, 45}, {50, 50}, {37, 61}};
  int cases = 0;
  for (const auto& scales : grid)
    for (const auto& [nq, nk] : shapes)
      for (int masking = 0; masking < 3; ++masking)
        for (Mode mode : {Mode::full, Mode::sparse}) {
          const uint64_t seed = 300 + uint64_t(cases++);
          Case t = structured_case(seed, 2, 2, nq, nk, 16);
          Rng rng(seed);
          mask_case(t, masking, rng, {0, 13}, {0, 21}, 0.7, 0.6);
          Problem p = t.problem();
          p.causal = true;
          Config c = row_config(scales, std::vector<int64_t>(scales.size() - 1, int64_t(1) << 40), mode);
          const std::vector<float> dense = dense_causal(p);
          CHECK(norm2(dense) > 0.0);
          const std::string what = describe(c) + ", causal, nq " + std::to_string(nq) + ", nk " + std::to_string(nk) +
                                   ", masking " + std::to_string(masking) + ", seed " + std::to_string(seed);
          check_close(run_mra(p, c, mra::ref::select(p, c)), dense, p, 1e-7, 1e-6, what + ", mra");
          check_close(run_exact(p), dense, p, 1e-7, 1e-6, what + ", exact");
        }
  MESSAGE(cases << " causal problems checked against dense causal attention");
}

TEST_CASE("row policy and causal attention equal the dense oracle's per-row top-k over a grid") {
  const std::vector<OracleGrid> grid{
      {{8, 1}, {{0}, {1}, {3}, {40}}},
      {{16, 1}, {{1}, {2}}},
      {{8, 2, 1}, {{1, 2}, {2, 1}, {3, 100}}},
      {{16, 4, 1}, {{1, 3}, {2, 5}}},
      {{12, 6, 3, 1}, {{1, 2, 2}}},
  };
  const int cases = check_oracle_grid(mra::ref::Policy::row, grid, 5000, 3, true);
  MESSAGE(cases << " row-policy configurations checked against the oracle");
}

TEST_CASE("row policy: every block row refines min(budget, its candidates), the rest of the order as global") {
  Case t = structured_case(61, 1, 1, 64, 64, 8);
  const Problem p = t.problem();
  Config c = row_config({8, 1}, {3});
  const Selection s = mra::ref::select(p, c);
  CHECK(s.at(0, 0, 0).size() == 8 * 3);
  std::vector<int> per_row(8, 0);
  for (int64_t flat : s.at(0, 0, 0)) ++per_row[size_t(flat / 8)];
  for (int n : per_row) CHECK(n == 3);
  // All-equal inputs: ties go to the lowest column in every row; the diagonal prior first.
  Case eq{1, 1, 32, 32, 4, {}, {}, {}, {}, {}};
  eq.q.assign(32 * 4, 0.5f);
  eq.k.assign(32 * 4, 0.5f);
  eq.v.assign(32 * 4, 1.0f);
  c = row_config({8, 1}, {2});
  CHECK(mra::ref::select(eq.problem(), c).at(0, 0, 0) == std::vector<int64_t>{0, 1, 4, 5, 8, 9, 12, 13});
  c.prior_diagonal = 1;
  CHECK(mra::ref::select(eq.problem(), c).at(0, 0, 0) == std::vector<int64_t>{0, 1, 4, 5, 8, 10, 12, 15});
  // Causal: row r has r visible blocks and one crossing (the diagonal); budget 2 keeps the best 2 visible ones.
  Problem causal = eq.problem();
  causal.causal = true;
  c.prior_diagonal = 0;
  CHECK(mra::ref::select(causal, c).at(0, 0, 0) == std::vector<int64_t>{0, 4, 5, 8, 9, 10, 12, 13, 15});
}

TEST_CASE("causal: no output reads a future key or value, NaN included") {
  struct Setup {
    std::vector<int64_t> scales, budgets;
    int64_t nq, nk;
  };
  const std::vector<Setup> setups{{{8, 1}, {2}, 64, 64},     {{8, 1}, {1}, 50, 77},    {{16, 4, 1}, {2, 3}, 61, 45},
                                  {{12, 6, 3, 1}, {1, 2, 1}, 40, 53}, {{32, 1}, {1}, 100, 100}, {{8, 2, 1}, {1, 2}, 30, 30}};
  int changed_rows = 0;
  for (size_t u = 0; u < setups.size(); ++u)
    for (Mode mode : {Mode::full, Mode::sparse})
      for (int trial = 0; trial < 4; ++trial) {
        const Setup& st = setups[u];
        const uint64_t seed = 900 + 10 * u + uint64_t(trial);
        Rng rng(seed);
        Case t = structured_case(seed, 1, 2, st.nq, st.nk, 8);
        if (trial >= 2) t.kmask = random_mask(rng, 1, st.nk, 0.8);
        Problem p = t.problem();
        p.causal = true;
        const Config c = row_config(st.scales, st.budgets, mode);
        const std::vector<float> before = run_mra(p, c, mra::ref::select(p, c));
        const std::vector<float> exact_before = run_exact(p);
        // Every key and value after `cut` changes (trial 1 and 3: to NaN and Inf in places); the rows that see
        // none of them, i + nk - nq <= cut, must not change by a bit.
        const int64_t cut = int64_t(rng.uniform() * double(st.nk - 1));
        Case changed = t;
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t j = cut + 1; j < st.nk; ++j)
            for (int64_t d = 0; d < 8; ++d) {
              const size_t at = size_t((h * st.nk + j) * 8 + d);
              changed.k[at] = float(3.0 * rng.normal());
              changed.v[at] = float(3.0 * rng.normal());
              if (trial % 2 == 1 && d == 0 && j % 3 == 0) changed.k[at] = std::numeric_limits<float>::quiet_NaN();
              if (trial % 2 == 1 && d == 1 && j % 4 == 1) changed.v[at] = std::numeric_limits<float>::infinity();
            }
        Problem q = changed.problem();
        q.causal = true;
        const std::vector<float> after = run_mra(q, c, mra::ref::select(q, c));
        const std::vector<float> exact_after = run_exact(q);
        INFO(describe(c) << ", nq " << st.nq << ", nk " << st.nk << ", cut " << cut << ", seed " << seed);
        for (int64_t h = 0; h < 2; ++h)
          for (int64_t i = 0; i < st.nq; ++i) {
            const bool past = i + st.nk - st.nq <= cut;
            bool same = true;
            for (int64_t d = 0; d < 8; ++d) {
              const size_t at = size_t((h * st.nq + i) * 8 + d);
              same = same && std::memcmp(&before[at], &after[at], sizeof(float)) == 0 &&
                     std::memcmp(&exact_before[at], &exact_after[at], sizeof(float)) == 0;
            }
            if (past) {
              INFO("h " << h << ", row " << i);
              CHECK(same);
            }
            changed_rows += !same;
          }
      }
  CHECK(changed_rows > 0);  // the change reaches the rows that see it: the test can tell
}

TEST_CASE("causal: a non-finite value poisons the rows that read it, not the slice") {
  Case t = structured_case(71, 1, 1, 48, 48, 4);
  Problem p = t.problem();
  p.causal = true;
  const Config c = row_config({8, 1}, {2});
  const std::vector<float> clean = run_mra(p, c, mra::ref::select(p, c));
  t.v[size_t(20 * 4 + 2)] = std::numeric_limits<float>::quiet_NaN();  // key 20: rows 20.. read it
  t.q[size_t(9 * 4)] = std::numeric_limits<float>::infinity();        // query 9: MRA poisons its block, 8..15
  Problem bad = t.problem();
  bad.causal = true;
  const std::vector<float> out = run_mra(bad, c, mra::ref::select(bad, c));
  const std::vector<float> exact = run_exact(bad);
  for (int64_t i = 0; i < 48; ++i) {
    INFO("row " << i);
    const bool nan = (i >= 8 && i < 16) || i >= 20;
    CHECK(std::isnan(out[size_t(i * 4)]) == nan);
    CHECK(std::isnan(exact[size_t(i * 4)]) == (i == 9 || i >= 20));  // exact attention: the query itself
    if (!nan)
      for (int64_t d = 0; d < 4; ++d) CHECK(out[size_t(i * 4 + d)] == clean[size_t(i * 4 + d)]);
  }
  // Block rows 1 and 3.. (first query 8, 24, ...) rank nothing: only their crossing (diagonal) pairs are refined.
  const Selection chosen = mra::ref::select(bad, c);
  for (int64_t flat : chosen.at(0, 0, 0))
    if (flat / 6 == 1 || flat / 6 >= 3) CHECK(flat % 6 == flat / 6);
  check_close(out, oracle_attention(bad, c, oracle_select(bad, c)), bad, 1e-7, 1e-6, "oracle, poisoned rows");
}

TEST_CASE("causal and policy errors are reported") {
  Case t = structured_case(81, 1, 1, 16, 16, 4);
  Problem p = t.problem();
  p.causal = true;
  std::vector<float> out(16 * 4);
  Config global;
  global.scales = {4, 1};
  global.budgets = {2};
  CHECK_THROWS_WITH_AS(mra::ref::mra_attention(p, global, out.data()), doctest::Contains("needs policy row"),
                       mra::ref::Error);
  const Config c = row_config({4, 1}, {1});
  // Pair 0 (the first diagonal block) crosses the diagonal: leaving it out would make it a coarse component with
  // future keys. Pair 1 lies in the future.
  Selection s = mra::ref::select(p, c);
  Selection missing = s;
  missing.at(0, 0, 0).erase(missing.at(0, 0, 0).begin());
  CHECK_THROWS_WITH_AS(mra::ref::validate_selection(p, c, missing), doctest::Contains("crosses the causal diagonal"),
                       mra::ref::Error);
  Selection future = s;
  future.at(0, 0, 0).insert(future.at(0, 0, 0).begin() + 1, 1);
  CHECK_THROWS_WITH_AS(mra::ref::validate_selection(p, c, future), doctest::Contains("inactive"), mra::ref::Error);
  std::vector<float> dout(16 * 4, 1.0f);
  // The backward (§9.7) takes causal attention under policy row only, as the forward.
  CHECK_THROWS_WITH_AS(mra::ref::attend_backward(p, global, s, dout.data()), doctest::Contains("needs policy row"),
                       mra::ref::Error);
  CHECK_NOTHROW(mra::ref::attend_backward(p, c, s, dout.data()));
  // Coverage counts visible entries only: 16 * 17 / 2 of them; budget 1 per row plus the diagonal blocks.
  const mra::ref::Coverage cov = mra::ref::coverage(p, c, s);
  CHECK(cov.total_entries == 136);
  CHECK(cov.exact_entries == 4 * 10 + 3 * 16);
}
