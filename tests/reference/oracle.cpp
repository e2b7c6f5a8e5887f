// tests/reference/oracle.cpp: the dense oracle of oracle.h.
#include "oracle.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace mra::test {

using mra::ref::Config;
using mra::ref::Problem;
using mra::ref::Selection;

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

bool q_real(const Problem& p, int64_t b, int64_t i) { return !p.query_mask || p.query_mask[b * p.nq + i]; }
bool k_real(const Problem& p, int64_t b, int64_t j) { return !p.key_mask || p.key_mask[b * p.nk + j]; }
double scale_of(const Problem& p) { return p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(double(p.dim)); }

bool finite_slice(const Problem& p, int64_t b, int64_t h) {
  for (int64_t i = 0; i < p.nq; ++i)
    for (int64_t d = 0; d < p.dim; ++d)
      if (q_real(p, b, i) && !std::isfinite(p.q[((b * p.heads + h) * p.nq + i) * p.dim + d])) return false;
  for (int64_t j = 0; j < p.nk; ++j)
    for (int64_t d = 0; d < p.dim; ++d) {
      const int64_t at = ((b * p.heads + h) * p.nk + j) * p.dim + d;
      if (k_real(p, b, j) && !(std::isfinite(p.k[at]) && std::isfinite(p.v[at]))) return false;
    }
  return true;
}

// The pooled logit of pair (r, c) at block side `side`, straight from the definition: the average of the exact
// logits over the pair's real entries. -inf when the pair has none.
double block_logit(const Problem& p, int64_t b, int64_t h, int64_t side, int64_t r, int64_t c) {
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t i = r * side; i < std::min((r + 1) * side, p.nq); ++i)
    for (int64_t j = c * side; j < std::min((c + 1) * side, p.nk); ++j) {
      if (!q_real(p, b, i) || !k_real(p, b, j)) continue;
      double dot = 0.0;
      for (int64_t d = 0; d < p.dim; ++d)
        dot += double(p.q[((b * p.heads + h) * p.nq + i) * p.dim + d]) * p.k[((b * p.heads + h) * p.nk + j) * p.dim + d];
      sum += dot;
      ++count;
    }
  return count ? scale_of(p) * sum / double(count) : kNegInf;
}

int64_t blocks(int64_t n, int64_t side) { return (n + side - 1) / side; }

// §9, written here without kernels/order.h: entry (i, j) is visible when j <= i + nk - nq.
bool sees(const Problem& p, int64_t i, int64_t j) { return !p.causal || j <= i + p.nk - p.nq; }

// The causal place of pair (r, c), by counting its entries: 0 all visible, 2 none, 1 some (§9.2).
int place(const Problem& p, int64_t side, int64_t r, int64_t c) {
  int64_t seen = 0, all = 0;
  for (int64_t i = r * side; i < std::min((r + 1) * side, p.nq); ++i)
    for (int64_t j = c * side; j < std::min((c + 1) * side, p.nk); ++j) {
      seen += sees(p, i, j);
      ++all;
    }
  return seen == all ? 0 : seen == 0 ? 2 : 1;
}

bool finite_row(const float* x, int64_t n) {
  for (int64_t d = 0; d < n; ++d)
    if (!std::isfinite(x[d])) return false;
  return true;
}

// §9.5, per query: NaN when a real query of its block of side `side` (1: itself) or a real key it sees is not
// finite.
bool causal_poisoned(const Problem& p, int64_t b, int64_t h, int64_t side, int64_t i) {
  for (int64_t t = (i / side) * side; t < std::min((i / side + 1) * side, p.nq); ++t)
    if (q_real(p, b, t) && !finite_row(p.q + ((b * p.heads + h) * p.nq + t) * p.dim, p.dim)) return true;
  for (int64_t j = 0; j < p.nk; ++j) {
    const int64_t at = ((b * p.heads + h) * p.nk + j) * p.dim;
    if (k_real(p, b, j) && sees(p, i, j) && !(finite_row(p.k + at, p.dim) && finite_row(p.v + at, p.dim))) return true;
  }
  return false;
}

struct Entry {
  int prio;
  double score;
  int64_t flat;
};

// Sorts `entries` by (priority, score, flat index) and appends the first `budget` flat indices to `out`.
void take_first(std::vector<Entry>& entries, int64_t budget, std::vector<int64_t>& out) {
  std::sort(entries.begin(), entries.end(), [](const Entry& x, const Entry& y) {
    if (x.prio != y.prio) return x.prio > y.prio;
    if (x.score != y.score) return x.score > y.score;
    return x.flat < y.flat;
  });
  for (size_t t = 0; t < entries.size() && int64_t(t) < budget; ++t) out.push_back(entries[t].flat);
}

}  // namespace

Selection oracle_select(const Problem& p, const Config& c) {
  const int64_t steps = int64_t(c.scales.size()) - 1;
  Selection s{p.batch, p.heads, steps, std::vector<std::vector<int64_t>>(size_t(p.batch * p.heads * steps))};
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      if (!p.causal && !finite_slice(p, b, h)) continue;
      for (int64_t l = 0; l < steps; ++l) {
        const int64_t side = c.scales[size_t(l)], nkb = blocks(p.nk, side), nqb = blocks(p.nq, side);
        std::vector<Entry> entries;
        auto& out = s.at(b, h, l);
        for (int64_t r = 0; r < nqb; ++r) {
          std::vector<Entry> row;
          for (int64_t cc = 0; cc < nkb; ++cc) {
            if (l > 0) {  // a candidate must lie inside a refined pair of the level above
              const int64_t up = c.scales[size_t(l - 1)], ratio = up / side;
              const auto& above = s.at(b, h, l - 1);
              if (!std::binary_search(above.begin(), above.end(), (r / ratio) * blocks(p.nk, up) + cc / ratio))
                continue;
            }
            // Activity by the real tokens alone; under causal attention future pairs are out and crossing pairs
            // always refined, never scored (§9.3).
            const double lam = block_logit(p, b, h, side, r, cc);
            if (lam == kNegInf) continue;
            if (p.causal) {
              const int where = place(p, side, r, cc);
              if (where == 2) continue;
              if (where == 1) {
                out.push_back(r * nkb + cc);
                continue;
              }
            }
            int prio = 0;
            if (l == 0)
              prio = int(c.prior_diagonal > 0 && std::abs(r - cc) <= c.prior_diagonal / 2) + int(r < c.prior_first) +
                     int(cc < c.prior_first);
            row.push_back({prio, lam, r * nkb + cc});
          }
          double mx = kNegInf;
          for (const Entry& e : row) mx = std::max(mx, e.score);
          // A causal row with a non-finite value in its first query's view ranks nothing (§9.5).
          if (p.causal && causal_poisoned(p, b, h, c.scales[0], r * side)) continue;
          std::vector<Entry> scored;
          for (Entry& e : row) scored.push_back({e.prio, e.score - mx, e.flat});
          if (c.policy == mra::ref::Policy::row) {  // §10: the row's own top budget, fully sorted
            take_first(scored, c.budgets[size_t(l)], out);
          } else {
            entries.insert(entries.end(), scored.begin(), scored.end());
          }
        }
        take_first(entries, c.budgets[size_t(l)], out);
        std::sort(out.begin(), out.end());
      }
    }
  return s;
}

std::vector<double> oracle_log_weights(const Problem& p, const Config& c, const Selection& s, int64_t b, int64_t h) {
  const int64_t steps = int64_t(c.scales.size()) - 1;
  std::vector<double> w(size_t(p.nq * p.nk), kNegInf);
  for (int64_t i = 0; i < p.nq; ++i)
    for (int64_t j = 0; j < p.nk; ++j) {
      if (!q_real(p, b, i) || !k_real(p, b, j) || !sees(p, i, j)) continue;
      int64_t l = 0;
      for (; l < steps; ++l) {
        const int64_t side = c.scales[size_t(l)];
        const int64_t flat = (i / side) * blocks(p.nk, side) + j / side;
        const auto& refined = s.at(b, h, l);
        if (!std::binary_search(refined.begin(), refined.end(), flat)) break;
      }
      if (l == steps) {
        double dot = 0.0;
        for (int64_t d = 0; d < p.dim; ++d)
          dot += double(p.q[((b * p.heads + h) * p.nq + i) * p.dim + d]) * p.k[((b * p.heads + h) * p.nk + j) * p.dim + d];
        w[size_t(i * p.nk + j)] = scale_of(p) * dot;
      } else if (c.mode == mra::ref::Mode::full) {
        const int64_t side = c.scales[size_t(l)];
        w[size_t(i * p.nk + j)] = block_logit(p, b, h, side, i / side, j / side);
      }
    }
  return w;
}

std::vector<float> oracle_attention(const Problem& p, const Config& c, const Selection& s) {
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * p.dim), 0.0f);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      const bool finite = p.causal || finite_slice(p, b, h);
      const std::vector<double> w = finite ? oracle_log_weights(p, c, s, b, h) : std::vector<double>{};
      for (int64_t i = 0; i < p.nq; ++i) {
        float* o = &out[size_t(((b * p.heads + h) * p.nq + i) * p.dim)];
        if (!q_real(p, b, i)) continue;
        if (!finite || (p.causal && causal_poisoned(p, b, h, c.scales[0], i))) {
          std::fill(o, o + p.dim, std::numeric_limits<float>::quiet_NaN());
          continue;
        }
        double mx = kNegInf;
        for (int64_t j = 0; j < p.nk; ++j) mx = std::max(mx, w[size_t(i * p.nk + j)]);
        if (mx == kNegInf) continue;
        std::vector<double> num(size_t(p.dim), 0.0);
        double den = 0.0;
        for (int64_t j = 0; j < p.nk; ++j) {
          if (w[size_t(i * p.nk + j)] == kNegInf) continue;  // Â_ij = 0: v_j is not read (it may be NaN, §9.5)
          const double e = std::exp(w[size_t(i * p.nk + j)] - mx);
          den += e;
          for (int64_t d = 0; d < p.dim; ++d) num[size_t(d)] += e * p.v[((b * p.heads + h) * p.nk + j) * p.dim + d];
        }
        for (int64_t d = 0; d < p.dim; ++d) o[d] = float(num[size_t(d)] / den);
      }
    }
  return out;
}

std::string describe(const mra::ref::Config& c) {
  std::ostringstream s;
  s << "scales";
  for (int64_t x : c.scales) s << ' ' << x;
  s << ", budgets";
  for (int64_t x : c.budgets) s << ' ' << x;
  s << (c.mode == mra::ref::Mode::full ? ", full" : ", sparse") << ", priors " << c.prior_first << '/' << c.prior_diagonal;
  s << (c.policy == mra::ref::Policy::row ? ", policy row" : ", policy global");
  s << (c.selection == mra::ref::Scope::group ? ", selection group" : "");
  return s.str();
}

}  // namespace mra::test
