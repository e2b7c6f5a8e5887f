// reference/detail.h: helpers shared by the reference's translation units (not part of the public API).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <vector>

#include "kernels/order.h"  // the §9.2 place of a pair, shared with the kernels
#include "mra/reference.h"

namespace mra::ref::detail {

// For a >= 0, b > 0, without the overflow of (a + b - 1) / b when b is huge.
inline int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

// a * b for a, b >= 0, saturated at INT64_MAX: budgets computed from user-given numbers must not wrap.
inline int64_t saturating_mul(int64_t a, int64_t b) {
  return b != 0 && a > std::numeric_limits<int64_t>::max() / b ? std::numeric_limits<int64_t>::max() : a * b;
}

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

inline size_t at(int64_t i) { return static_cast<size_t>(i); }

// Element offset of row (b, h, n) of a tensor with strides s (the D stride is 1, §8).
inline int64_t row_offset(const Strides& s, int64_t b, int64_t h, int64_t n) { return b * s[0] + h * s[1] + n * s[2]; }

// Row pointers into the inputs and the output, for query head h: K and V rows are those of its K/V head.
inline const float* q_row(const Problem& p, int64_t b, int64_t h, int64_t i) {
  return p.q + row_offset(p.q_strides(), b, h, i);
}
inline const float* k_row(const Problem& p, int64_t b, int64_t h, int64_t j) {
  return p.k + row_offset(p.k_strides(), b, p.kv_head(h), j);
}
inline const float* v_row(const Problem& p, int64_t b, int64_t h, int64_t j) {
  return p.v + row_offset(p.v_strides(), b, p.kv_head(h), j);
}
inline float* out_row(const Problem& p, float* out, int64_t b, int64_t h, int64_t i) {
  return out + row_offset(p.out_strides(), b, h, i);
}
inline const float* out_row(const Problem& p, const float* out, int64_t b, int64_t h, int64_t i) {
  return out + row_offset(p.out_strides(), b, h, i);
}
inline bool query_real(const Problem& p, int64_t b, int64_t i) {
  return p.query_mask == nullptr || p.query_mask[b * p.nq + i] != 0;
}
inline bool key_real(const Problem& p, int64_t b, int64_t j) {
  return p.key_mask == nullptr || p.key_mask[b * p.nk + j] != 0;
}

// The query heads first .. first + count - 1 of one batch element (they share one K/V head).
struct HeadRange {
  int64_t first = 0, count = 1;
};

// §8.4: the query heads whose queries choose the blocks of slice (b, h): h alone, or every head of its group.
inline HeadRange selecting_heads(const Problem& p, const Config& c, int64_t h) {
  if (c.selection == Scope::head) return {h, 1};
  const int64_t group = p.heads / p.kv_heads();
  return {h - h % group, group};
}

// §2.7: true when every real token of the query heads `heads` of batch b, and of their K/V head, has finite q, k
// and v. With one head: slice (b, h) is finite; with a group (§8.4): no slice of it is poisoned.
bool slice_finite(const Problem& p, int64_t b, HeadRange heads);
inline bool slice_finite(const Problem& p, int64_t b, int64_t h) { return slice_finite(p, b, HeadRange{h, 1}); }

// §9: the last key query i sees, i + (nk - nq) (below 0: none); nk - 1 without causal attention.
inline int64_t horizon(const Problem& p, int64_t i) { return p.causal ? i + p.nk - p.nq : p.nk - 1; }

// §9.2: the place of pair (r, c) of a level against the causal diagonal; every pair is visible without it.
inline int pair_place(const Problem& p, const Pooled& pooled, int64_t r, int64_t c) {
  return p.causal ? order::causal_place(r, c, pooled.side, p.nq, p.nk) : int(order::kVisible);
}

// §9.5: where the non-finite values of a causal slice (b, h) are: the first real key with a non-finite k or v
// (nk if none) and, per query block of side `side`, whether a real query of it has a non-finite q; in any of the
// query heads `heads` (one head, or a group sharing its selection, §8.4).
struct CausalPoison {
  int64_t side = 1, first_bad_key = 0;
  std::vector<bool> bad_query_block;
  CausalPoison(const Problem& p, int64_t b, HeadRange heads, int64_t side);
  // Query i's output is NaN (§9.5); with `side` the level-1 block side. A block row of any level ranks nothing
  // when this holds for its first query.
  bool query(const Problem& p, int64_t i) const {
    return bad_query_block[at(i / side)] || first_bad_key <= horizon(p, i);
  }
};

// Writes the output of a slice whose inputs are not finite (§2.7): NaN rows for real queries, 0 otherwise.
void write_poisoned_slice(const Problem& p, int64_t b, int64_t h, float* out);

// The running state of one output row: sum_j w_j v_j and sum_j w_j, both scaled by exp(-max_log).
// merge() folds in a partial sum carried at its own stabilizer; finish() writes the row (0 if empty).
struct RowAccumulator {
  double max_log = kNegInf;
  double den = 0.0;
  std::vector<double> num;

  explicit RowAccumulator(int64_t dim) : num(at(dim), 0.0) {}
  void merge(double part_max, double part_den, const double* part_num);
  void finish(float* out) const;
};

// A set of real keys of one slice gathered for exact logits: keys transposed [D][n] so that a query's logits
// are an axpy over contiguous keys (vectorizable without reassociating any sum), values [n][D].
struct KeySet {
  int64_t n = 0;
  std::vector<double> kt, v;
  std::vector<int64_t> index;  // the key index of each gathered key
  void gather(const Problem& p, int64_t b, int64_t h, const std::vector<int64_t>& keys);
};

// Folds the exact terms exp(scale * q . k_j) v_j of every key of `keys` into the rows of the queries `queries`
// (rows[t] belongs to queries[t]). All queries of a call are processed against one chunk of keys at a time, so
// the chunk stays in cache while every query uses it; `logits` is scratch. With `horizons` (one per query;
// empty: none) query t takes only the keys j <= horizons[t] (§9.1).
void add_exact_terms(const KeySet& keys, const std::vector<const float*>& queries, int64_t dim, double scale,
                     std::vector<double>& logits, const std::vector<RowAccumulator*>& rows,
                     const std::vector<int64_t>& horizons = {});

// The candidate pairs at level `step + 1` (0-based level step + 1): the active children of the refined pairs
// `parents` of level `step` (§2.5; with causal attention without the future ones, §9.3), as sorted flat
// indices. `child` is the pooling at the child level.
std::vector<int64_t> child_candidates(const Problem& p, const Pooled& parent, const Pooled& child, int64_t b,
                                      std::span<const int64_t> parents);

// The pooling of every level that has blocks (sides s_1 ... s_{L-1}); level L is exact.
std::vector<Pooled> pool_levels(const Problem& p, const Config& c);

// select() and attend() on levels pooled once by the caller (pool_levels); attend_pooled trusts `s` to be
// valid, as select_pooled's result is, so mra_attention pools and validates nothing twice.
Selection select_pooled(const Problem& p, const Config& c, const std::vector<Pooled>& levels);
void attend_pooled(const Problem& p, const Config& c, const Selection& s, const std::vector<Pooled>& levels,
                   float* out);

// The components of level-1 block row `row` of slice (b, h) (§2.5), level by level: `coarse(level, pairs)` with
// the candidates of each level that were not refined (mode full only; sorted flat indices, grouped by block row),
// then `exact(level L-1, pairs)` with the refined pairs of the last step, whose real entries are the exact
// components. The forward and the backward walk the same components through this one function.
using CoarseVisitor = std::function<void(const Pooled&, const std::vector<int64_t>&)>;
using ExactVisitor = std::function<void(const Pooled&, std::span<const int64_t>)>;
void walk_components(const Problem& p, const Config& c, const Selection& s, const std::vector<Pooled>& levels,
                     int64_t b, int64_t h, int64_t row, const CoarseVisitor& coarse, const ExactVisitor& exact);

// The forward's per-row state (stabilizer, denominator, numerator) of the queries of level-1 block row `row` of
// a finite slice (b, h): element t belongs to query row * s_1 + t. Masked queries and rows without terms stay
// empty (max_log = -inf).
std::vector<RowAccumulator> accumulate_rows(const Problem& p, const Config& c, const Selection& s,
                                            const std::vector<Pooled>& levels, int64_t b, int64_t h, int64_t row);

// The candidate pairs of level 1 in block rows [r_begin, r_end): every active pair (§2.5; with causal attention
// not the future ones, §9.3), sorted flat indices.
std::vector<int64_t> top_candidates(const Problem& p, const Pooled& top, int64_t b, int64_t r_begin, int64_t r_end);

// The part of `sorted` (flat indices r * nk_blocks + c) whose block rows r lie in [r_begin, r_end).
std::span<const int64_t> rows_of(const std::vector<int64_t>& sorted, int64_t nk_blocks, int64_t r_begin,
                                 int64_t r_end);

inline bool pair_active(const Pooled& pooled, int64_t b, int64_t r, int64_t c) {
  return pooled.q_count[at(b * pooled.nq_blocks + r)] > 0 && pooled.k_count[at(b * pooled.nk_blocks + c)] > 0;
}

}  // namespace mra::ref::detail
