// reference/selection.cpp: candidates, scores, priors, the tie-break and the level-to-level refinement
// (docs/semantics.md §2.4-2.5), and the validation of a user-supplied selection.
//
// Each level ranks its candidates with a linear-time selection (std::nth_element), never a full sort of the
// (N/s_1)^2 coarse pairs; level 1 holds at most about twice its budget (plus a block row) of 16-byte entries.
#include <algorithm>
#include <optional>
#include <string>

#include "detail.h"
#include "kernels/order.h"  // the §2.4 order, shared with the kernels (runtime/kernels/order.h)

namespace mra::ref {

using namespace detail;

namespace {

struct Candidate {
  double score;  // λ - (max λ of the candidates of its block row), §2.4
  int64_t flat;  // r * nk_blocks + c
};

// The order of §2.4 on the candidates of one level (kernels/order.h).
struct Ranking {
  int64_t nk_blocks, prior_first, prior_diagonal;
  int priority(int64_t flat) const {
    return order::level1_priority(flat / nk_blocks, flat % nk_blocks, prior_first, prior_diagonal);
  }
  bool operator()(const Candidate& a, const Candidate& b) const {
    return order::ranks_before(priority(a.flat), a.score, a.flat, priority(b.flat), b.score, b.flat);
  }
};

// Keeps the first `budget` of `cands` in `rank` order (in no particular order), drops the rest.
void keep_top(std::vector<Candidate>& cands, int64_t budget, const Ranking& rank) {
  const size_t k = size_t(std::min<int64_t>(budget, int64_t(cands.size())));
  if (k < cands.size()) std::nth_element(cands.begin(), cands.begin() + ptrdiff_t(k), cands.end(), rank);
  cands.resize(k);
}

// The top `budget` candidates of one level in the order of §2.4, returned as sorted flat indices.
std::vector<int64_t> take_top(std::vector<Candidate>& cands, int64_t budget, const Ranking& rank) {
  keep_top(cands, budget, rank);
  std::vector<int64_t> chosen;
  chosen.reserve(cands.size());
  for (const Candidate& c : cands) chosen.push_back(c.flat);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

// Scores the candidate pairs `flats` (sorted) of one level: their pooled logit minus their row's maximum.
std::vector<Candidate> score(const Problem& p, const Pooled& pooled, int64_t b, int64_t h,
                             const std::vector<int64_t>& flats) {
  std::vector<Candidate> cands(flats.size());
  std::vector<double> row_max(at(pooled.nq_blocks), kNegInf);
  for (size_t t = 0; t < flats.size(); ++t) {
    const int64_t r = flats[t] / pooled.nk_blocks, c = flats[t] % pooled.nk_blocks;
    cands[t] = {coarse_logit(p, pooled, b, h, r, c), flats[t]};
    row_max[at(r)] = std::max(row_max[at(r)], cands[t].score);
  }
  for (Candidate& cand : cands) cand.score -= row_max[at(cand.flat / pooled.nk_blocks)];
  return cands;
}

// §10 (with §9.3): adds to `out` the pairs of T_l of one block row from its candidate pairs `flats` (sorted, all in
// that row): the pairs crossing the causal diagonal always, without a score and outside the budget, then the first
// `budget` of the others in the order of §2.4. A poisoned row (§9.5) ranks nothing.
void take_row(const Problem& p, const Pooled& lv, int64_t b, int64_t h, std::span<const int64_t> flats,
              int64_t budget, const Ranking& rank, bool poisoned, std::vector<int64_t>& out) {
  std::vector<int64_t> ranked;
  for (int64_t flat : flats)
    (pair_place(p, lv, flat / lv.nk_blocks, flat % lv.nk_blocks) == order::kCrossing ? out : ranked).push_back(flat);
  if (poisoned) return;
  std::vector<Candidate> cands = score(p, lv, b, h, ranked);
  keep_top(cands, budget, rank);
  for (const Candidate& cand : cands) out.push_back(cand.flat);
}

// §8.4: the levels as a group sharing its selection ranks them: every head's pooled query replaced by the mean,
// over the heads of its group in head order, of their pooled queries (the pooled mean of the group's mean query,
// since the group shares its masks). Keys, values and counts are the group's own already.
std::vector<Pooled> group_means(const Problem& p, const std::vector<Pooled>& levels) {
  std::vector<Pooled> out = levels;
  const int64_t group = p.heads / p.kv_heads(), D = p.dim;
  for (Pooled& lv : out)
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h0 = 0; h0 < p.heads; h0 += group)
        for (int64_t r = 0; r < lv.nq_blocks; ++r)
          for (int64_t d = 0; d < D; ++d) {
            auto mean = [&](int64_t h) -> double& { return lv.q_mean[at(((b * p.heads + h) * lv.nq_blocks + r) * D + d)]; };
            double sum = 0.0;
            for (int64_t h = h0; h < h0 + group; ++h) sum += mean(h);
            for (int64_t h = h0; h < h0 + group; ++h) mean(h) = sum / double(group);
          }
  return out;
}

}  // namespace

namespace detail {

std::vector<Pooled> pool_levels(const Problem& p, const Config& c) {
  std::vector<Pooled> levels;
  for (size_t l = 0; l + 1 < c.scales.size(); ++l) levels.push_back(pool(p, c.scales[l]));
  return levels;
}

std::vector<int64_t> top_candidates(const Problem& p, const Pooled& top, int64_t b, int64_t r_begin, int64_t r_end) {
  std::vector<int64_t> flats;
  for (int64_t r = r_begin; r < r_end; ++r)
    for (int64_t c = 0; c < top.nk_blocks; ++c)
      if (pair_active(top, b, r, c) && pair_place(p, top, r, c) != order::kFuture) flats.push_back(r * top.nk_blocks + c);
  return flats;
}

}  // namespace detail

Selection select(const Problem& p, const Config& c) {
  p.validate();
  c.validate(p);
  return select_pooled(p, c, pool_levels(p, c));
}

Selection detail::select_pooled(const Problem& p, const Config& c, const std::vector<Pooled>& levels) {
  const int64_t steps = int64_t(levels.size());
  Selection sel{p.batch, p.heads, steps, std::vector<std::vector<int64_t>>(at(p.batch * p.heads * steps))};
  // §8.4: a group that shares its selection ranks by the mean of its heads' pooled queries.
  const std::vector<Pooled> group_levels = c.selection == Scope::group ? group_means(p, levels) : std::vector<Pooled>{};
  const std::vector<Pooled>& ranked = c.selection == Scope::group ? group_levels : levels;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      const HeadRange heads = selecting_heads(p, c, h);
      if (h != heads.first) {  // the group's selection, made for its first head
        for (int64_t l = 0; l < steps; ++l) sel.at(b, h, l) = sel.at(b, heads.first, l);
        continue;
      }
      // §2.7: a poisoned slice refines nothing; with causal attention poison is a matter of rows (§9.5).
      if (!p.causal && !slice_finite(p, b, heads)) continue;
      std::optional<CausalPoison> poison;
      if (p.causal) poison.emplace(p, b, heads, levels[0].side);
      for (int64_t l = 0; l < steps; ++l) {
        const Pooled& lv = ranked[at(l)];
        // Priors are level-1 notions (§2.4): deeper levels rank by score and index only.
        const Ranking rank{lv.nk_blocks, l == 0 ? c.prior_first : 0, l == 0 ? c.prior_diagonal : 0};
        const int64_t budget = c.budgets[at(l)];
        if (c.policy == Policy::row) {
          // §10: every block row of the level spends its own budget on its own candidates.
          std::vector<int64_t>& chosen = sel.at(b, h, l);
          auto take_rows = [&](const std::vector<int64_t>& flats) {
            for (size_t start = 0, end = 0; start < flats.size(); start = end) {
              const int64_t r = flats[start] / lv.nk_blocks;
              while (end < flats.size() && flats[end] / lv.nk_blocks == r) ++end;
              take_row(p, lv, b, h, std::span(flats).subspan(start, end - start), budget, rank,
                       p.causal && poison->query(p, r * lv.side), chosen);
            }
          };
          if (l == 0)
            for (int64_t r = 0; r < lv.nq_blocks; ++r) take_rows(top_candidates(p, lv, b, r, r + 1));
          else
            take_rows(child_candidates(p, ranked[at(l - 1)], lv, b, sel.at(b, h, l - 1)));
          std::sort(chosen.begin(), chosen.end());
          continue;
        }
        std::vector<Candidate> cands;
        if (l == 0) {
          // Row by row, pruned to the best `budget` whenever twice that many are held: the (N/s_1)^2 level-1
          // pairs never exist at once (16 GB at N = 2^20, s_1 = 32), and an element dropped by a prune has
          // `budget` better ones that are never dropped, so the result is the top `budget` of all of them.
          for (int64_t r = 0; r < ranked[0].nq_blocks; ++r) {
            const std::vector<Candidate> row = score(p, ranked[0], b, h, top_candidates(p, ranked[0], b, r, r + 1));
            cands.insert(cands.end(), row.begin(), row.end());
            if (int64_t(cands.size()) - budget >= std::max(budget, ranked[0].nk_blocks)) keep_top(cands, budget, rank);
          }
        } else {
          cands = score(p, lv, b, h, child_candidates(p, ranked[at(l - 1)], lv, b, sel.at(b, h, l - 1)));
        }
        sel.at(b, h, l) = take_top(cands, budget, rank);
      }
    }
  return sel;
}

void validate_selection(const Problem& p, const Config& c, const Selection& s) {
  p.validate();
  c.validate(p);
  const int64_t steps = int64_t(c.scales.size()) - 1;
  if (s.batch != p.batch || s.heads != p.heads || s.steps != steps ||
      int64_t(s.refined.size()) != p.batch * p.heads * steps)
    throw Error("selection: dimensions do not match the problem and configuration");
  const std::vector<Pooled> levels = pool_levels(p, c);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t l = 0; l < steps; ++l) {
        const Pooled& lv = levels[at(l)];
        const std::vector<int64_t>& blocks = s.at(b, h, l);
        const std::string where =
            "selection [b=" + std::to_string(b) + ", h=" + std::to_string(h) + ", level=" + std::to_string(l + 1) + "]";
        for (size_t t = 0; t < blocks.size(); ++t) {
          const int64_t flat = blocks[t];
          if (flat < 0 || flat >= lv.nq_blocks * lv.nk_blocks)
            throw Error(where + ": block " + std::to_string(flat) + " out of range");
          if (t > 0 && flat <= blocks[t - 1]) throw Error(where + ": blocks not sorted or repeated");
          const int64_t r = flat / lv.nk_blocks, cc = flat % lv.nk_blocks;
          if (!pair_active(lv, b, r, cc) || pair_place(p, lv, r, cc) == order::kFuture)
            throw Error(where + ": block " + std::to_string(flat) + " is inactive");
          if (l > 0) {
            const Pooled& up = levels[at(l - 1)];
            const int64_t ratio = up.side / lv.side;
            const int64_t parent = (r / ratio) * up.nk_blocks + cc / ratio;
            const std::vector<int64_t>& above = s.at(b, h, l - 1);
            if (!std::binary_search(above.begin(), above.end(), parent))
              throw Error(where + ": block " + std::to_string(flat) + " lies outside the refined blocks above");
          }
        }
        // §9.3: a crossing candidate is always refined, so that no coarse component holds a future key.
        if (!p.causal) continue;
        const std::vector<int64_t> cands = l == 0 ? top_candidates(p, lv, b, 0, lv.nq_blocks)
                                                  : child_candidates(p, levels[at(l - 1)], lv, b, s.at(b, h, l - 1));
        for (int64_t flat : cands)
          if (pair_place(p, lv, flat / lv.nk_blocks, flat % lv.nk_blocks) == order::kCrossing &&
              !std::binary_search(blocks.begin(), blocks.end(), flat))
            throw Error(where + ": block " + std::to_string(flat) + " crosses the causal diagonal but is not refined");
      }
}

Coverage coverage(const Problem& p, const Config& c, const Selection& s) {
  validate_selection(p, c, s);
  const Pooled last = pool(p, c.scales[c.scales.size() - 2]);
  Coverage cov;
  for (int64_t b = 0; b < p.batch; ++b) {
    // keys_before[j]: real keys with index < j; a real query i counts the real keys up to its horizon (§9.1).
    std::vector<int64_t> keys_before(at(p.nk + 1), 0);
    for (int64_t j = 0; j < p.nk; ++j) keys_before[at(j + 1)] = keys_before[at(j)] + key_real(p, b, j);
    auto real_keys = [&](int64_t j0, int64_t j1, int64_t i) {  // real keys of [j0, j1) that query i sees
      const int64_t end = std::clamp(horizon(p, i) + 1, j0, j1);
      return keys_before[at(end)] - keys_before[at(j0)];
    };
    int64_t total = 0;
    for (int64_t i = 0; i < p.nq; ++i)
      if (query_real(p, b, i)) total += real_keys(0, p.nk, i);
    for (int64_t h = 0; h < p.heads; ++h) {
      cov.total_entries += total;
      for (int64_t flat : s.at(b, h, s.steps - 1)) {
        const int64_t r = flat / last.nk_blocks, c = flat % last.nk_blocks;
        for (int64_t i = r * last.side; i < std::min((r + 1) * last.side, p.nq); ++i)
          if (query_real(p, b, i)) cov.exact_entries += real_keys(c * last.side, std::min((c + 1) * last.side, p.nk), i);
      }
    }
  }
  return cov;
}

}  // namespace mra::ref
