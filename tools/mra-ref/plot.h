// tools/mra-ref/plot.h: pictures of MRA as standalone SVG (no dependency): the blocks MRA refines at every
// level over the attention matrix, and the error of MRA against the fraction of entries it computes exactly
// over a sweep of configurations. Used by `mra-ref plot` and `mra-ref demo`; tested by tests/cli
// (plot_test.py: the SVG parses, holds the expected elements, and renders in a browser).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mra/reference.h"

namespace mra::cli {

// The selection of batch `b`, head `h`: every coarsest-level block shaded by its log-coefficient relative to the
// largest of its block row (λ - max λ, docs/semantics.md §2.3), the blocks refined at each level filled
// and outlined in that level's colour, a legend and a title line.
std::string selection_svg(const ref::Problem& p, const ref::Config& c, const ref::Selection& s, int64_t b, int64_t h,
                          const std::string& title);

// One point of the error-versus-budget sweep.
struct SweepPoint {
  std::vector<int64_t> scales;
  ref::Mode mode = ref::Mode::full;
  int64_t blocks_per_row = 0;
  double exact_fraction = 0.0;
  double relative_error = 0.0;  // ||MRA - exact||_F / ||exact||_F over the whole output
};

// MRA for every scale set, both modes and every blocks-per-row value (budgets from ref::budgets_from_blocks_per_row;
// a value that changes nothing after the cap is skipped), against exact attention `exact`.
std::vector<SweepPoint> sweep(const ref::Problem& p, const std::vector<float>& exact,
                              const std::vector<std::vector<int64_t>>& scale_sets,
                              const std::vector<int64_t>& blocks_per_row);

// Relative error against the fraction of exact entries, log-log, one colour per scale set, solid for `full`
// and dashed for `sparse`.
std::string error_svg(const std::vector<SweepPoint>& points, const std::string& title);

// ||a - b||_F / ||b||_F, accumulated in double.
double relative_error(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace mra::cli
