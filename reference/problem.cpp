// reference/problem.cpp: validation of problems and configurations, default budgets, and the helpers of
// reference/detail.h that several stages share.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cmath>
#include <string>

#include "detail.h"

namespace mra::ref {

using detail::ceil_div;
using detail::saturating_mul;

double Problem::effective_scale() const { return scale != 0.0 ? scale : 1.0 / std::sqrt(double(dim)); }

namespace {

// The strides of a contiguous [B, heads, n, dim] tensor.
Strides contiguous(int64_t heads, int64_t n, int64_t dim) { return {heads * n * dim, n * dim, dim, 1}; }

Strides or_contiguous(const Strides& given, int64_t heads, int64_t n, int64_t dim) {
  return given == Strides{} ? contiguous(heads, n, dim) : given;
}

constexpr int64_t kMaxOffset = int64_t(1) << 62;

// The largest element offset of a tensor (extents [B, heads, n, dim]) with strides s, saturated at kMaxOffset.
int64_t max_offset(const Strides& s, const std::array<int64_t, 4>& extent) {
  int64_t span = 0;
  for (size_t d = 0; d < 4; ++d) span = std::min(kMaxOffset, span + saturating_mul(s[d], extent[d] - 1));
  return span;
}

// §8's rules for one tensor's strides; `what` names it in the message.
void check_strides(const char* what, const Strides& s, const std::array<int64_t, 4>& extent) {
  static const char* const kDims[] = {"batch", "head", "row", "dim"};
  if (s == Strides{}) return;
  for (size_t d = 0; d < 4; ++d)
    if (s[d] < 0)
      throw Error(std::string(what) + " strides: the " + kDims[d] + " stride must not be negative, got " +
                  std::to_string(s[d]));
  if (s[3] != 1) throw Error(std::string(what) + " strides: the dim stride must be 1, got " + std::to_string(s[3]));
  if (max_offset(s, extent) >= kMaxOffset) throw Error(std::string(what) + " strides: offsets beyond 2^62 elements");
}

}  // namespace

Strides Problem::q_strides() const { return or_contiguous(layout.q, heads, nq, dim); }
Strides Problem::k_strides() const { return or_contiguous(layout.k, kv_heads(), nk, dim); }
Strides Problem::v_strides() const { return or_contiguous(layout.v, kv_heads(), nk, dim); }
Strides Problem::out_strides() const { return or_contiguous(layout.out, heads, nq, dim); }

void Problem::validate() const {
  auto positive = [](const char* what, int64_t n) {
    if (n <= 0) throw Error(std::string(what) + " must be positive, got " + std::to_string(n));
  };
  positive("batch", batch);
  positive("heads", heads);
  positive("query count", nq);
  positive("key count", nk);
  positive("head dimension", dim);
  if (q == nullptr || k == nullptr || v == nullptr) throw Error("Q, K and V must not be null");
  if (!std::isfinite(scale)) throw Error("scale must be finite");
  if (heads_kv < 0 || heads % kv_heads() != 0)
    throw Error("heads_kv must divide heads (" + std::to_string(heads) + "), got " + std::to_string(heads_kv));
  check_strides("q", layout.q, {batch, heads, nq, dim});
  check_strides("k", layout.k, {batch, kv_heads(), nk, dim});
  check_strides("v", layout.v, {batch, kv_heads(), nk, dim});
  check_strides("out", layout.out, {batch, heads, nq, dim});
  // The output must not overlap itself: with its dimensions of extent > 1 sorted by stride, each stride must
  // exceed the largest offset the smaller ones reach (a sufficient rule, and the one §8 states).
  const Strides so = out_strides();
  const std::array<int64_t, 4> extent{batch, heads, nq, dim};
  std::array<size_t, 4> order{0, 1, 2, 3};
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return so[a] < so[b]; });
  int64_t reach = 0;
  for (size_t d : order) {
    if (extent[d] == 1) continue;
    if (so[d] <= reach) throw Error("out strides: the output's elements overlap (stride " + std::to_string(so[d]) + ")");
    reach += so[d] * (extent[d] - 1);
  }
}

void Problem::validate_output(const float* out) const {
  validate();
  if (out == nullptr) throw Error("the output must not be null");
  // Element ranges [first, last] as addresses; an output sharing any of an input's range is refused (§8).
  const auto range = [](const float* base, const Strides& s, const std::array<int64_t, 4>& extent) {
    const auto first = reinterpret_cast<uintptr_t>(base);
    return std::array<uintptr_t, 2>{first, first + uintptr_t(max_offset(s, extent)) * sizeof(float)};
  };
  const auto o = range(out, out_strides(), {batch, heads, nq, dim});
  const std::pair<const char*, std::array<uintptr_t, 2>> inputs[] = {
      {"q", range(q, q_strides(), {batch, heads, nq, dim})},
      {"k", range(k, k_strides(), {batch, kv_heads(), nk, dim})},
      {"v", range(v, v_strides(), {batch, kv_heads(), nk, dim})}};
  for (const auto& [name, r] : inputs)
    if (o[0] <= r[1] && r[0] <= o[1]) throw Error(std::string("the output overlaps ") + name);
}

void Config::validate() const {
  if (scales.size() < 2) throw Error("scales: need at least two resolutions, the last one 1");
  if (scales.back() != 1) throw Error("scales: the last resolution must be 1");
  if (scales.front() > kMaxSide)
    throw Error("scales: " + std::to_string(scales.front()) + " is above the largest block side, " +
                std::to_string(kMaxSide));
  for (size_t l = 0; l + 1 < scales.size(); ++l) {
    if (scales[l + 1] < 1 || scales[l] <= scales[l + 1])
      throw Error("scales: must decrease strictly, got " + std::to_string(scales[l]) + " then " +
                  std::to_string(scales[l + 1]));
    if (scales[l] % scales[l + 1] != 0)
      throw Error("scales: " + std::to_string(scales[l + 1]) + " does not divide " + std::to_string(scales[l]));
  }
  if (budgets.size() != scales.size() - 1)
    throw Error("budgets: need one budget per refinement step (" + std::to_string(scales.size() - 1) + "), got " +
                std::to_string(budgets.size()));
  for (int64_t b : budgets)
    if (b < 0) throw Error("budgets: must not be negative, got " + std::to_string(b));
  if (prior_first < 0) throw Error("prior_first must not be negative");
  if (prior_diagonal < 0) throw Error("prior_diagonal must not be negative");
}

void Config::validate(const Problem& p) const {
  validate();
  if (p.causal && policy != Policy::row)
    throw Error("causal attention needs policy row: a global budget lets later rows' keys change an earlier row's "
                "selection (docs/semantics.md §9.4)");
}

std::vector<int64_t> budgets_from_blocks_per_row(const std::vector<int64_t>& scales, int64_t nq, int64_t nk,
                                                 int64_t blocks_per_row) {
  if (blocks_per_row < 0) throw Error("blocks per row must not be negative");
  std::vector<int64_t> budgets;
  for (size_t l = 0; l + 1 < scales.size(); ++l) {
    if (scales[l] < 1) throw Error("scales: must be positive");
    const int64_t rows = ceil_div(nq, scales[l]);
    const int64_t ratio = l == 0 ? 1 : scales[l - 1] / scales[l];
    const int64_t most = l == 0 ? saturating_mul(rows, ceil_div(nk, scales[0]))
                                : saturating_mul(saturating_mul(budgets.back(), ratio), ratio);
    budgets.push_back(std::min(saturating_mul(blocks_per_row, rows), most));
  }
  return budgets;
}

namespace detail {

namespace {

bool finite_row(const Problem& p, const float* row) {
  for (int64_t d = 0; d < p.dim; ++d)
    if (!std::isfinite(row[d])) return false;
  return true;
}

}  // namespace

bool slice_finite(const Problem& p, int64_t b, HeadRange heads) {
  for (int64_t h = heads.first; h < heads.first + heads.count; ++h)
    for (int64_t i = 0; i < p.nq; ++i)
      if (query_real(p, b, i) && !finite_row(p, q_row(p, b, h, i))) return false;
  for (int64_t j = 0; j < p.nk; ++j)
    if (key_real(p, b, j) && !(finite_row(p, k_row(p, b, heads.first, j)) && finite_row(p, v_row(p, b, heads.first, j))))
      return false;
  return true;
}

CausalPoison::CausalPoison(const Problem& p, int64_t b, HeadRange heads, int64_t block_side)
    : side(block_side), first_bad_key(p.nk), bad_query_block(at(ceil_div(p.nq, block_side)), false) {
  for (int64_t h = heads.first; h < heads.first + heads.count; ++h)
    for (int64_t i = 0; i < p.nq; ++i)
      if (query_real(p, b, i) && !finite_row(p, q_row(p, b, h, i))) bad_query_block[at(i / side)] = true;
  for (int64_t j = 0; j < p.nk && first_bad_key == p.nk; ++j)
    if (key_real(p, b, j) && !(finite_row(p, k_row(p, b, heads.first, j)) && finite_row(p, v_row(p, b, heads.first, j))))
      first_bad_key = j;
}

void write_poisoned_slice(const Problem& p, int64_t b, int64_t h, float* out) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t i = 0; i < p.nq; ++i) {
    float* row = out_row(p, out, b, h, i);
    std::fill(row, row + p.dim, query_real(p, b, i) ? nan : 0.0f);
  }
}

void RowAccumulator::merge(double part_max, double part_den, const double* part_num) {
  if (part_max == kNegInf) return;
  const double new_max = std::max(max_log, part_max);
  const double keep = std::exp(max_log - new_max);  // 0 while the row is still empty
  const double add = std::exp(part_max - new_max);
  den = den * keep + part_den * add;
  for (size_t d = 0; d < num.size(); ++d) num[d] = num[d] * keep + part_num[d] * add;
  max_log = new_max;
}

void RowAccumulator::finish(float* out) const {
  for (size_t d = 0; d < num.size(); ++d) out[d] = max_log == kNegInf ? 0.0f : float(num[d] / den);
}

std::vector<int64_t> child_candidates(const Problem& p, const Pooled& parent, const Pooled& child, int64_t b,
                                      std::span<const int64_t> parents) {
  const int64_t ratio = parent.side / child.side;
  std::vector<int64_t> out;
  for (int64_t flat : parents) {
    const int64_t r = flat / parent.nk_blocks, c = flat % parent.nk_blocks;
    for (int64_t rr = r * ratio; rr < std::min((r + 1) * ratio, child.nq_blocks); ++rr)
      for (int64_t cc = c * ratio; cc < std::min((c + 1) * ratio, child.nk_blocks); ++cc)
        if (pair_active(child, b, rr, cc) && pair_place(p, child, rr, cc) != order::kFuture)
          out.push_back(rr * child.nk_blocks + cc);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::span<const int64_t> rows_of(const std::vector<int64_t>& sorted, int64_t nk_blocks, int64_t r_begin,
                                 int64_t r_end) {
  const auto first = std::lower_bound(sorted.begin(), sorted.end(), r_begin * nk_blocks);
  const auto last = std::lower_bound(first, sorted.end(), r_end * nk_blocks);
  return {first, last};
}

}  // namespace detail
}  // namespace mra::ref
