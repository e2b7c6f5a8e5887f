// tests/reference/oracle.cpp: the dense oracle of oracle.h.
#include "oracle.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>

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

}  // namespace

Selection oracle_select(const Problem& p, const Config& c) {
  const int64_t steps = int64_t(c.scales.size()) - 1;
  Selection s{p.batch, p.heads, steps, std::vector<std::vector<int64_t>>(size_t(p.batch * p.heads * steps))};
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      if (!finite_slice(p, b, h)) continue;
      for (int64_t l = 0; l < steps; ++l) {
        const int64_t side = c.scales[size_t(l)], nkb = blocks(p.nk, side), nqb = blocks(p.nq, side);
        struct Entry {
          int prio;
          double score;
          int64_t flat;
        };
        std::vector<Entry> entries;
        for (int64_t r = 0; r < nqb; ++r) {
          std::vector<Entry> row;
          for (int64_t cc = 0; cc < nkb; ++cc) {
            if (l > 0) {  // a candidate must lie inside a refined pair of the level above
              const int64_t up = c.scales[size_t(l - 1)], ratio = up / side;
              const auto& above = s.at(b, h, l - 1);
              if (!std::binary_search(above.begin(), above.end(), (r / ratio) * blocks(p.nk, up) + cc / ratio))
                continue;
            }
            const double lam = block_logit(p, b, h, side, r, cc);
            if (lam == kNegInf) continue;
            int prio = 0;
            if (l == 0)
              prio = int(c.prior_diagonal > 0 && std::abs(r - cc) <= c.prior_diagonal / 2) + int(r < c.prior_first) +
                     int(cc < c.prior_first);
            row.push_back({prio, lam, r * nkb + cc});
          }
          double mx = kNegInf;
          for (const Entry& e : row) mx = std::max(mx, e.score);
          for (Entry& e : row) entries.push_back({e.prio, e.score - mx, e.flat});
        }
        std::sort(entries.begin(), entries.end(), [](const Entry& x, const Entry& y) {
          if (x.prio != y.prio) return x.prio > y.prio;
          if (x.score != y.score) return x.score > y.score;
          return x.flat < y.flat;
        });
        auto& out = s.at(b, h, l);
        for (size_t t = 0; t < entries.size() && int64_t(t) < c.budgets[size_t(l)]; ++t) out.push_back(entries[t].flat);
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
      if (!q_real(p, b, i) || !k_real(p, b, j)) continue;
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
      const bool finite = finite_slice(p, b, h);
      const std::vector<double> w = finite ? oracle_log_weights(p, c, s, b, h) : std::vector<double>{};
      for (int64_t i = 0; i < p.nq; ++i) {
        float* o = &out[size_t(((b * p.heads + h) * p.nq + i) * p.dim)];
        if (!q_real(p, b, i)) continue;
        if (!finite) {
          std::fill(o, o + p.dim, std::numeric_limits<float>::quiet_NaN());
          continue;
        }
        double mx = kNegInf;
        for (int64_t j = 0; j < p.nk; ++j) mx = std::max(mx, w[size_t(i * p.nk + j)]);
        if (mx == kNegInf) continue;
        std::vector<double> num(size_t(p.dim), 0.0);
        double den = 0.0;
        for (int64_t j = 0; j < p.nk; ++j) {
          const double e = std::exp(w[size_t(i * p.nk + j)] - mx);
          den += e;
          for (int64_t d = 0; d < p.dim; ++d) num[size_t(d)] += e * p.v[((b * p.heads + h) * p.nk + j) * p.dim + d];
        }
        for (int64_t d = 0; d < p.dim; ++d) o[d] = float(num[size_t(d)] / den);
      }
    }
  return out;
}

}  // namespace mra::test
