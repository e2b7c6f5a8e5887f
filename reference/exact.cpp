// reference/exact.cpp: exact softmax attention (docs/semantics.md §1), the baseline MRA approximates, and the
// exact-logit row routine that MRA's resolution-1 components reuse.
//
// Per slice the real keys are gathered once (KeySet); O(Nq·Nk·D) time, O(Nk·D) extra memory.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "detail.h"

namespace mra::ref {

using namespace detail;

namespace detail {

void KeySet::gather(const Problem& p, int64_t b, int64_t h, const std::vector<int64_t>& keys) {
  const int64_t D = p.dim;
  n = int64_t(keys.size());
  index = keys;
  kt.resize(at(D * n));
  v.resize(at(n * D));
  for (int64_t t = 0; t < n; ++t) {
    const float* kr = k_row(p, b, h, keys[at(t)]);
    const float* vr = v_row(p, b, h, keys[at(t)]);
    for (int64_t d = 0; d < D; ++d) {
      kt[at(d * n + t)] = kr[d];
      v[at(t * D + d)] = vr[d];
    }
  }
}

void add_exact_terms(const KeySet& keys, const std::vector<const float*>& queries, int64_t dim, double scale,
                     std::vector<double>& logits, const std::vector<RowAccumulator*>& rows,
                     const std::vector<int64_t>& horizons) {
  constexpr int64_t kChunk = 128;  // keys per chunk: 128 x D doubles of K and of V stay in a core's L2 cache
  const int64_t n = keys.n, nq = int64_t(queries.size());
  if (n == 0 || nq == 0) return;
  logits.assign(at(nq * n), 0.0);
  for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
    const int64_t t1 = std::min(n, t0 + kChunk);
    for (int64_t a = 0; a < nq; ++a) {
      double* la = &logits[at(a * n)];
      for (int64_t d = 0; d < dim; ++d) {
        const double qd = queries[at(a)][d];
        const double* kd = &keys.kt[at(d * n)];
        for (int64_t t = t0; t < t1; ++t) la[t] += qd * kd[t];
      }
    }
  }
  for (int64_t a = 0; a < nq; ++a) {
    double* la = &logits[at(a * n)];
    double m = kNegInf;
    for (int64_t t = 0; t < n; ++t) m = std::max(m, la[t] *= scale);
    // §9.1: a key beyond the query's horizon gets weight exp(-inf) = 0; a row left without a key adds nothing.
    if (!horizons.empty()) {
      m = kNegInf;
      for (int64_t t = 0; t < n; ++t) m = std::max(m, la[t] = keys.index[at(t)] > horizons[at(a)] ? kNegInf : la[t]);
      if (m == kNegInf) {
        std::fill(la, la + n, 0.0);
        continue;
      }
    }
    // Rescale the row to the larger of its stabilizer and this set's maximum, then add at that stabilizer.
    RowAccumulator& acc = *rows[at(a)];
    const double base = std::max(m, acc.max_log);
    const double keep = std::exp(acc.max_log - base);
    acc.den *= keep;
    for (double& x : acc.num) x *= keep;
    acc.max_log = base;
    for (int64_t t = 0; t < n; ++t) {
      la[t] = std::exp(la[t] - base);
      acc.den += la[t];
    }
  }
  for (int64_t t0 = 0; t0 < n; t0 += kChunk) {
    const int64_t t1 = std::min(n, t0 + kChunk);
    for (int64_t a = 0; a < nq; ++a) {
      const double* wa = &logits[at(a * n)];
      double* num = rows[at(a)]->num.data();
      for (int64_t t = t0; t < t1; ++t) {
        if (wa[t] == 0.0) continue;  // a key beyond the horizon (§9.1): its value is not read, NaN or not
        const double* vt = &keys.v[at(t * dim)];
        for (int64_t d = 0; d < dim; ++d) num[d] += wa[t] * vt[d];
      }
    }
  }
}

}  // namespace detail

void exact_attention(const Problem& p, float* out) {
  p.validate_output(out);
  const double scale = p.effective_scale();
  std::vector<double> logits;
  KeySet keyset;
  for (int64_t b = 0; b < p.batch; ++b) {
    std::vector<int64_t> keys;
    for (int64_t j = 0; j < p.nk; ++j)
      if (key_real(p, b, j)) keys.push_back(j);
    for (int64_t h = 0; h < p.heads; ++h) {
      if (!p.causal && !slice_finite(p, b, h)) {
        write_poisoned_slice(p, b, h, out);
        continue;
      }
      // §9.5: causal rows are poisoned one by one, by their own query and the keys they see.
      std::optional<CausalPoison> poison;
      if (p.causal) poison.emplace(p, b, HeadRange{h, 1}, 1);
      keyset.gather(p, b, h, keys);
      // Queries go in tiles: each chunk of keys is loaded once per tile rather than once per query.
      constexpr int64_t kTile = 16;
      for (int64_t i0 = 0; i0 < p.nq; i0 += kTile) {
        const int64_t i1 = std::min(p.nq, i0 + kTile);
        std::vector<RowAccumulator> tile(at(i1 - i0), RowAccumulator(p.dim));
        std::vector<const float*> queries;
        std::vector<RowAccumulator*> rows;
        std::vector<int64_t> horizons;
        for (int64_t i = i0; i < i1; ++i)
          if (query_real(p, b, i)) {
            queries.push_back(q_row(p, b, h, i));
            rows.push_back(&tile[at(i - i0)]);
            if (p.causal) horizons.push_back(horizon(p, i));
          }
        add_exact_terms(keyset, queries, p.dim, scale, logits, rows, horizons);
        for (int64_t i = i0; i < i1; ++i) {
          float* o = out_row(p, out, b, h, i);
          tile[at(i - i0)].finish(o);
          if (poison && query_real(p, b, i) && poison->query(p, i))
            std::fill(o, o + p.dim, std::numeric_limits<float>::quiet_NaN());
        }
      }
    }
  }
}

}  // namespace mra::ref
