// runtime/kernels/order.h: the ranking rule of docs/semantics.md §2.4, written once: the level-1 priority of a
// pair and the order of candidates (priority descending, then score descending, then flat index ascending); and
// the place of a pair against the causal diagonal (§9.2), which decides whether it is ranked, always refined or
// never looked at.
//
// The kernels (select.cuh, whose rank values and keys encode this order), the reference (reference/selection.cpp)
// and the kernel tests include it; the dense oracle of tests/reference keeps a copy of its own on purpose, so that
// one independent statement of §2.4 checks this one. Plain C++ without dependencies, callable from host and
// device code, so that it is vendored with runtime/ and the reference may include it.
#pragma once

#if defined(__CUDACC__)
#define MRA_ORDER_HOST_DEVICE __host__ __device__
#else
#define MRA_ORDER_HOST_DEVICE
#endif

namespace mra::order {

// π(r, c) of §2.4 at level 1 (deeper levels have priority 0): one for the diagonal band of prior_diagonal
// blocks (|r - c| <= floor(g / 2), none when g = 0), one for a global block row r < f, one for a global block
// column c < f.
template <class I>
MRA_ORDER_HOST_DEVICE constexpr int level1_priority(I r, I c, I prior_first, I prior_diagonal) {
  const I distance = r > c ? r - c : c - r;
  return int(prior_diagonal > 0 && distance <= prior_diagonal / 2) + int(r < prior_first) + int(c < prior_first);
}

// True when candidate a = (priority, score, flat) is ranked before candidate b. A total order on distinct
// flat indices: the selection of a level is the first budget candidates in it.
template <class S, class I>
MRA_ORDER_HOST_DEVICE constexpr bool ranks_before(int priority_a, S score_a, I flat_a, int priority_b, S score_b,
                                                  I flat_b) {
  if (priority_a != priority_b) return priority_a > priority_b;
  if (score_a != score_b) return score_a > score_b;
  return flat_a < flat_b;
}

// §9.2: where pair (r, c) of block side s lies against the causal diagonal j <= i + (nk - nq). Visible: every
// entry of the rectangle is visible (its last key is visible to its first query); future: none is (its first key
// lies beyond its last query's horizon); crossing: the rest. Geometric, masks aside: a pair's place never depends
// on the data. Every product stays below 2^31 for the kernels' sizes (nq, nk < 2^30, s <= 2^20).
enum CausalPlace : int { kVisible = 0, kCrossing = 1, kFuture = 2 };
template <class I>
MRA_ORDER_HOST_DEVICE constexpr int causal_place(I r, I c, I side, I nq, I nk) {
  const I delta = nk - nq;
  const I first_query = r * side, last_query = ((r + 1) * side < nq ? (r + 1) * side : nq) - 1;
  const I first_key = c * side, last_key = ((c + 1) * side < nk ? (c + 1) * side : nk) - 1;
  if (last_key <= first_query + delta) return kVisible;
  if (first_key > last_query + delta) return kFuture;
  return kCrossing;
}

}  // namespace mra::order
