// reference/attend.cpp: MRA attention given a selection (docs/semantics.md §2.6), and the MRA forward.
//
// Every output row accumulates its components level by level: the coarse components of a block row are summed
// once per block row (they are the same for all its queries) and merged into each of its rows; the exact
// components are evaluated per query over the real keys of the refined blocks of its row. No N x N matrix is
// formed; the time is D times the number of components evaluated.
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <optional>

#include "detail.h"

namespace mra::ref {

using namespace detail;

namespace {

// Merges the coarse components of one level, `coarse` (sorted flat indices, grouped by block row), into the
// rows of the queries they cover.
void add_coarse_level(const Problem& p, const Pooled& lv, int64_t b, int64_t h, const std::vector<int64_t>& coarse,
                      int64_t first_row, std::vector<RowAccumulator>& rows) {
  const int64_t D = p.dim, bh = b * p.heads + h;
  std::vector<double> logits, num(at(D));
  for (size_t start = 0; start < coarse.size();) {
    const int64_t r = coarse[start] / lv.nk_blocks;
    size_t end = start;
    logits.clear();
    double m = kNegInf;
    for (; end < coarse.size() && coarse[end] / lv.nk_blocks == r; ++end) {
      logits.push_back(coarse_logit(p, lv, b, h, r, coarse[end] % lv.nk_blocks));
      m = std::max(m, logits.back());
    }
    double den = 0.0;
    std::fill(num.begin(), num.end(), 0.0);
    for (size_t t = start; t < end; ++t) {
      const int64_t c = coarse[t] % lv.nk_blocks;
      const double w = std::exp(logits[t - start] - m);
      den += w * double(lv.k_count[at(b * lv.nk_blocks + c)]);
      const double* vs = &lv.v_sum[at((bh * lv.nk_blocks + c) * D)];
      for (int64_t d = 0; d < D; ++d) num[at(d)] += w * vs[d];
    }
    for (int64_t i = r * lv.side; i < std::min((r + 1) * lv.side, p.nq); ++i)
      if (query_real(p, b, i)) rows[at(i - first_row)].merge(m, den, num.data());
    start = end;
  }
}

// Merges the exact components: every real key of the refined blocks `refined` (sorted, grouped by block row)
// into the rows of the real queries of that block row.
void add_exact_level(const Problem& p, const Pooled& lv, int64_t b, int64_t h, std::span<const int64_t> refined,
                     int64_t first_row, std::vector<RowAccumulator>& rows) {
  const double scale = p.effective_scale();
  std::vector<int64_t> keys, horizons;
  std::vector<double> logits;
  std::vector<const float*> queries;
  std::vector<RowAccumulator*> row_ptrs;
  KeySet keyset;
  for (size_t start = 0; start < refined.size();) {
    const int64_t r = refined[start] / lv.nk_blocks;
    keys.clear();
    size_t end = start;
    for (; end < refined.size() && refined[end] / lv.nk_blocks == r; ++end) {
      const int64_t c = refined[end] % lv.nk_blocks;
      for (int64_t j = c * lv.side; j < std::min((c + 1) * lv.side, p.nk); ++j)
        if (key_real(p, b, j)) keys.push_back(j);
    }
    keyset.gather(p, b, h, keys);
    queries.clear();
    row_ptrs.clear();
    horizons.clear();
    for (int64_t i = r * lv.side; i < std::min((r + 1) * lv.side, p.nq); ++i)
      if (query_real(p, b, i)) {
        queries.push_back(q_row(p, b, h, i));
        row_ptrs.push_back(&rows[at(i - first_row)]);
        if (p.causal) horizons.push_back(horizon(p, i));  // §9.3: the entries of a crossing pair are masked
      }
    add_exact_terms(keyset, queries, p.dim, scale, logits, row_ptrs, horizons);
    start = end;
  }
}

}  // namespace

void attend(const Problem& p, const Config& c, const Selection& s, float* out) {
  p.validate_output(out);
  validate_selection(p, c, s);
  attend_pooled(p, c, s, pool_levels(p, c), out);
}

void detail::walk_components(const Problem& p, const Config& c, const Selection& s, const std::vector<Pooled>& levels,
                             int64_t b, int64_t h, int64_t row, const CoarseVisitor& coarse, const ExactVisitor& exact) {
  const int64_t steps = int64_t(levels.size());
  const Pooled& top = levels[0];
  std::span<const int64_t> refined;
  for (int64_t l = 0; l < steps; ++l) {
    const Pooled& lv = levels[at(l)];
    const std::span<const int64_t> above = refined;
    const int64_t per_row = top.side / lv.side;  // level-l block rows inside this level-1 row
    refined = rows_of(s.at(b, h, l), lv.nk_blocks, row * per_row, (row + 1) * per_row);
    if (c.mode == Mode::full) {
      const std::vector<int64_t> candidates =
          l == 0 ? top_candidates(p, top, b, row, row + 1) : child_candidates(p, levels[at(l - 1)], lv, b, above);
      std::vector<int64_t> unrefined;
      std::set_difference(candidates.begin(), candidates.end(), refined.begin(), refined.end(),
                          std::back_inserter(unrefined));
      coarse(lv, unrefined);
    }
  }
  exact(levels[at(steps - 1)], refined);
}

std::vector<RowAccumulator> detail::accumulate_rows(const Problem& p, const Config& c, const Selection& s,
                                                    const std::vector<Pooled>& levels, int64_t b, int64_t h,
                                                    int64_t row) {
  const int64_t first = row * levels[0].side, last = std::min(first + levels[0].side, p.nq);
  std::vector<RowAccumulator> rows(at(last - first), RowAccumulator(p.dim));
  walk_components(
      p, c, s, levels, b, h, row,
      [&](const Pooled& lv, const std::vector<int64_t>& coarse) { add_coarse_level(p, lv, b, h, coarse, first, rows); },
      [&](const Pooled& lv, std::span<const int64_t> refined) { add_exact_level(p, lv, b, h, refined, first, rows); });
  return rows;
}

void detail::attend_pooled(const Problem& p, const Config& c, const Selection& s, const std::vector<Pooled>& levels,
                           float* out) {
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      // §2.7, §8.4: a group that shares its selection is poisoned as a whole, since every head's output depends,
      // through the selection, on the queries of all of them.
      if (!p.causal && !slice_finite(p, b, selecting_heads(p, c, h))) {
        write_poisoned_slice(p, b, h, out);
        continue;
      }
      // §9.5: with causal attention a non-finite value poisons the queries that read it, not the slice.
      std::optional<CausalPoison> poison;
      if (p.causal) poison.emplace(p, b, selecting_heads(p, c, h), levels[0].side);
      // One level-1 block row at a time: its descendants at every level are contiguous in each sorted list of
      // refined pairs, so the working set is one block row's candidates and accumulators.
      for (int64_t row = 0; row < levels[0].nq_blocks; ++row) {
        const std::vector<RowAccumulator> rows = accumulate_rows(p, c, s, levels, b, h, row);
        const int64_t first = row * levels[0].side;
        for (size_t t = 0; t < rows.size(); ++t) {
          const int64_t i = first + int64_t(t);
          float* o = out_row(p, out, b, h, i);
          rows[t].finish(o);
          if (poison && query_real(p, b, i) && poison->query(p, i))
            std::fill(o, o + p.dim, std::numeric_limits<float>::quiet_NaN());
        }
      }
    }
}

void mra_attention(const Problem& p, const Config& c, float* out) {
  p.validate_output(out);
  c.validate(p);
  const std::vector<Pooled> levels = pool_levels(p, c);
  attend_pooled(p, c, select_pooled(p, c, levels), levels, out);
}

}  // namespace mra::ref
