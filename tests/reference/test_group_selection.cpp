// tests/reference/test_group_selection.cpp: a selection shared by each group of query heads (docs/semantics.md
// §8.4) in the reference. The group's selection is held against the dense oracle's brute-force selection of the
// problem whose query is the group's mean query (built in float from inputs on a grid of 2^-10, so the mean is
// exact), its output against the oracle's dense evaluation of that selection with every head's own coefficients,
// and, with every block refined, against exact attention; a group of one head must select exactly as the head;
// and the poisoning and causal rules of §8.4 are checked on their own.
#include "common/doctest.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/inputs.h"
#include "common/strided.h"
#include "mra/reference.h"
#include "oracle.h"

using mra::ref::Config;
using mra::ref::Mode;
using mra::ref::Policy;
using mra::ref::Problem;
using mra::ref::Scope;
using mra::ref::Selection;
using namespace mra::test;

namespace {

constexpr int64_t kBatch = 2, kHeads = 4, kDim = 8;

// Numbers on a grid of 2^-10 in [-2, 2]: a sum of up to four of them, and that sum divided by 2 or 4, is exact in
// float, so the mean query of a group of 1, 2 or 4 heads is the exact mean.
std::vector<float> grid(Rng& rng, size_t n) {
  std::vector<float> x(n);
  for (float& v : x) v = grid_value(rng, 2048, 0x1p-10f);
  return x;
}

struct Inputs {
  int64_t heads_kv, nq, nk;
  std::vector<float> q, k, v, k_full, v_full, q_mean;
  std::vector<uint8_t> qmask, kmask;

  Inputs(uint64_t seed, int64_t heads_kv_, int64_t nq_, int64_t nk_, bool masked)
      : heads_kv(heads_kv_), nq(nq_), nk(nk_) {
    Rng rng(seed);
    q = grid(rng, size_t(kBatch * kHeads * nq * kDim));
    k = grid(rng, size_t(kBatch * heads_kv * nk * kDim));
    v = grid(rng, size_t(kBatch * heads_kv * nk * kDim));
    const int64_t group = kHeads / heads_kv;
    k_full = repeat_heads(k, kBatch, heads_kv, nk, kDim, group);
    v_full = repeat_heads(v, kBatch, heads_kv, nk, kDim, group);
    // The group's mean query, [B, heads_kv, nq, D]: exact (see grid()).
    q_mean.assign(size_t(kBatch * heads_kv * nq * kDim), 0.0f);
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t e = 0; e < nq * kDim; ++e)
          q_mean[size_t((b * heads_kv + h / group) * nq * kDim + e)] += q[size_t((b * kHeads + h) * nq * kDim + e)];
    for (float& x : q_mean) x /= float(group);
    if (masked) {
      qmask = random_mask(rng, kBatch, nq, 0.8);
      kmask = random_mask(rng, kBatch, nk, 0.75);
    }
  }
  const uint8_t* qm() const { return qmask.empty() ? nullptr : qmask.data(); }
  const uint8_t* km() const { return kmask.empty() ? nullptr : kmask.data(); }
  Problem grouped(bool causal) const {
    Problem p = Problem::of(kBatch, kHeads, nq, nk, kDim, q.data(), k.data(), v.data(), qm(), km(), 0.0, causal);
    p.heads_kv = heads_kv;
    return p;
  }
  // Every K/V head copied to its query heads: the problem the oracle evaluates.
  Problem expanded(bool causal) const {
    return Problem::of(kBatch, kHeads, nq, nk, kDim, q.data(), k_full.data(), v_full.data(), qm(), km(), 0.0, causal);
  }
  // One head per group whose query is the group's mean query: the problem whose selection the group's is.
  Problem mean_query(bool causal) const {
    return Problem::of(kBatch, heads_kv, nq, nk, kDim, q_mean.data(), k.data(), v.data(), qm(), km(), 0.0, causal);
  }
};

std::vector<float> run_mra(const Problem& p, const Config& c) {
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * p.dim), 12345.0f);
  mra::ref::mra_attention(p, c, out.data());
  return out;
}

Config config(std::vector<int64_t> scales, std::vector<int64_t> budgets, Mode mode, Policy policy, int64_t first,
              int64_t diagonal) {
  Config c{std::move(scales), std::move(budgets), mode, first, diagonal};
  c.policy = policy;
  c.selection = Scope::group;
  return c;
}

std::vector<Config> configs(bool causal) {
  std::vector<Config> cs;
  for (Mode mode : {Mode::full, Mode::sparse}) {
    if (!causal) {
      cs.push_back(config({8, 1}, {7}, mode, Policy::global, 0, 1));
      cs.push_back(config({16, 4, 1}, {3, 20}, mode, Policy::global, 1, 2));
    }
    cs.push_back(config({8, 1}, {2}, mode, Policy::row, 1, 0));
    cs.push_back(config({16, 4, 1}, {1, 3}, mode, Policy::row, 0, 3));
    cs.push_back(config({8, 1}, {int64_t(1) << 40}, mode, Policy::row, 0, 0));  // every block refined
  }
  return cs;
}

}  // namespace

TEST_CASE("group selection: the selection of the group's mean query, shared by its heads, against the dense oracle") {
  int cases = 0, all_refined = 0;
  for (bool causal : {false, true})
    for (int64_t heads_kv : {1, 2, 4})
      for (int masked = 0; masked < 2; ++masked)
        for (const Config& c : configs(causal)) {
          const uint64_t seed = 7100 + uint64_t(cases);
          const Inputs in(seed, heads_kv, 45, 61, masked == 1);
          INFO(describe(c) << ", heads_kv " << heads_kv << ", causal " << causal << ", masked " << masked
                           << ", seed " << seed);
          const Problem p = in.grouped(causal), e = in.expanded(causal), m = in.mean_query(causal);
          const Selection s = mra::ref::select(p, c);
          // Every head of a group has its group's selection: the oracle's selection of the mean query.
          Config per_head = c;
          per_head.selection = Scope::head;
          const Selection want = oracle_select(m, per_head);
          const int64_t group = kHeads / heads_kv;
          for (int64_t b = 0; b < kBatch; ++b)
            for (int64_t h = 0; h < kHeads; ++h)
              for (int64_t l = 0; l < s.steps; ++l) CHECK(s.at(b, h, l) == want.at(b, h / group, l));
          // The output: each head's own coefficients over the shared selection, evaluated densely by the oracle.
          const std::vector<float> out = run_mra(p, c);
          const std::vector<float> dense = oracle_attention(e, per_head, s);
          const Comparison cmp =
              compare(out.data(), dense.data(), int64_t(dense.size()), 1e-7, 1e-6, {kBatch, kHeads, in.nq, kDim});
          INFO(cmp.report);
          CHECK(cmp.ok);
          if (c.budgets.front() > (int64_t(1) << 30)) {  // every block refined: exact attention
            std::vector<float> exact(out.size(), 0.0f);
            mra::ref::exact_attention(p, exact.data());
            const Comparison ex =
                compare(out.data(), exact.data(), int64_t(exact.size()), 1e-7, 1e-6, {kBatch, kHeads, in.nq, kDim});
            INFO(ex.report);
            CHECK(ex.ok);
            ++all_refined;
          }
          // A group of one head selects as the head does, bit for bit.
          if (group == 1) {
            CHECK(s.refined == mra::ref::select(p, per_head).refined);
            CHECK(out == run_mra(p, per_head));
          }
          ++cases;
        }
  CHECK(all_refined == 24);
  MESSAGE(cases << " group-selection problems checked against the oracle");
}

TEST_CASE("group selection: per head differs from it when the heads of a group attend to different places") {
  // Not a tautology: on these inputs some head's own selection is not its group's (else the tests above could not
  // tell a per-head implementation from a shared one).
  const Inputs in(7001, 2, 45, 61, false);
  const Problem p = in.grouped(false);
  const Config c = config({8, 1}, {7}, Mode::full, Policy::global, 0, 0);
  Config per_head = c;
  per_head.selection = Scope::head;
  CHECK(mra::ref::select(p, c).refined != mra::ref::select(p, per_head).refined);
}

TEST_CASE("group selection: a non-finite query poisons its group, under causal attention the rows of its block in every head") {
  const int64_t nq = 40, nk = 40, bad_row = 13;  // level-1 block 1 of side 8
  for (bool causal : {false, true}) {
    Inputs in(7200, 2, nq, nk, false);
    in.q[size_t((1 * nq + bad_row) * kDim + 2)] = std::numeric_limits<float>::quiet_NaN();  // batch 0, head 1
    const Problem p = in.grouped(causal);
    const Config c = config({8, 1}, {2}, Mode::full, Policy::row, 0, 1);
    const std::vector<float> out = run_mra(p, c);
    INFO("causal " << causal);
    int64_t nan_rows = 0;
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t h = 0; h < kHeads; ++h)
        for (int64_t i = 0; i < nq; ++i) {
          const bool is_nan = std::isnan(out[size_t(((b * kHeads + h) * nq + i) * kDim)]);
          // Heads 0 and 1 of batch 0 share the selection; under causal attention only the rows of the bad query's
          // level-1 block are NaN (no later block reads that query).
          const bool want = b == 0 && h < 2 && (!causal || i / 8 == bad_row / 8);
          INFO("b " << b << ", h " << h << ", row " << i);
          CHECK(is_nan == want);
          nan_rows += is_nan;
        }
    CHECK(nan_rows == (causal ? 16 : 2 * nq));
    // The group's selection ranks nothing in a poisoned row (causal) or at all; the other group is untouched.
    const Selection s = mra::ref::select(p, c);
    CHECK(s.at(0, 0, 0) == s.at(0, 1, 0));
    CHECK(s.at(0, 2, 0) == s.at(0, 3, 0));
  }
}

TEST_CASE("group selection, causal: no output reads a future key or value") {
  // As the per-head test of §9.4: every key and value after the cut changes; rows that see none keep their bits.
  int changed_rows = 0;
  for (int trial = 0; trial < 4; ++trial) {
    const uint64_t seed = 7300 + uint64_t(trial);
    Rng rng(seed);
    const int64_t nq = 50, nk = 57;
    const Inputs in(seed, trial % 2 == 0 ? 2 : 1, nq, nk, trial >= 2);
    const Config c = config(trial % 2 == 0 ? std::vector<int64_t>{8, 1} : std::vector<int64_t>{16, 4, 1},
                            trial % 2 == 0 ? std::vector<int64_t>{2} : std::vector<int64_t>{1, 2}, Mode::full,
                            Policy::row, 1, 1);
    const std::vector<float> before = run_mra(in.grouped(true), c);
    const int64_t cut = 5 + int64_t(rng.below(uint64_t(nk - 10)));
    Inputs changed = in;
    for (int64_t bh = 0; bh < kBatch * in.heads_kv; ++bh)
      for (int64_t j = cut + 1; j < nk; ++j)
        for (int64_t d = 0; d < kDim; ++d) {
          const size_t at = size_t((bh * nk + j) * kDim + d);
          changed.k[at] = float(3.0 * rng.normal());
          changed.v[at] = d == 1 && j % 4 == 1 ? std::numeric_limits<float>::infinity() : float(rng.normal());
        }
    const std::vector<float> after = run_mra(changed.grouped(true), c);
    INFO("trial " << trial << ", cut " << cut << ", seed " << seed);
    for (int64_t bh = 0; bh < kBatch * kHeads; ++bh)
      for (int64_t i = 0; i < nq; ++i) {
        const size_t at = size_t((bh * nq + i) * kDim);
        const bool same = std::memcmp(&before[at], &after[at], kDim * sizeof(float)) == 0;
        if (i + nk - nq <= cut) {
          INFO("slice " << bh << ", row " << i);
          CHECK(same);
        }
        changed_rows += !same;
      }
  }
  CHECK(changed_rows > 0);
}
