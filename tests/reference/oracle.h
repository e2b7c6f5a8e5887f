// tests/reference/oracle.h: the dense oracle, for tests only.
//
// Builds the approximated matrix Â of docs/semantics.md §2.6 entry by entry, exactly as the definition reads:
// for every real (i, j) it walks down the levels to the finest candidate pair that covers it. Its pooling and
// its selection are written independently of reference/ (plain averages; a full sort of the candidates instead
// of a linear-time select), so agreement between the two is evidence, not an echo. O(Nq·Nk) memory per slice.
#pragma once

#include <string>
#include <vector>

#include "mra/reference.h"

namespace mra::test {

// The selection by brute force: every candidate scored and fully sorted by (priority, score, flat index), per
// slice (policy global) or per block row (policy row, §10); causal places by counting visible entries (§9.2).
mra::ref::Selection oracle_select(const mra::ref::Problem& p, const mra::ref::Config& c);

// Â for slice (b, h) as a dense [Nq, Nk] matrix of log-weights (-inf where Â is 0), given a selection.
std::vector<double> oracle_log_weights(const mra::ref::Problem& p, const mra::ref::Config& c,
                                       const mra::ref::Selection& s, int64_t b, int64_t h);

// out = normalize(Â) V for every slice, rows without terms and masked queries 0, NaN slices per §2.7 (NaN rows
// per §9.5 under causal attention).
std::vector<float> oracle_attention(const mra::ref::Problem& p, const mra::ref::Config& c,
                                    const mra::ref::Selection& s);

// A configuration in one line for test messages: scales, budgets, mode, priors, policy, selection.
std::string describe(const mra::ref::Config& c);

}  // namespace mra::test
