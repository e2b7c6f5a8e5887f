// reference/exact.cpp: exact softmax attention (docs/semantics.md §1), the baseline MRA approximates, and the
// exact-logit row routine that MRA's resolution-1 components reuse.
//
// Per slice the real keys are gathered once (KeySet); O(Nq·Nk·D) time, O(Nk·D) extra memory.
#include <algorithm>
#include <cmath>

#include "detail.h"

namespace mra::ref {

using namespace detail;

namespace detail {

void KeySet::gather(const Problem& p, int64_t b, int64_t h, const std::vector<int64_t>& keys) {
  const int64_t D = p.dim;
  n = int64_t(keys.size());
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

void add_exact_terms(const KeySet& keys, const float* q, int64_t dim, double scale, std::vector<double>& logits,
                     RowAccumulator& acc) {
  const int64_t n = keys.n;
  if (n == 0) return;
  logits.assign(at(n), 0.0);
  for (int64_t d = 0; d < dim; ++d) {
    const double qd = q[d];
    const double* kd = &keys.kt[at(d * n)];
    for (int64_t t = 0; t < n; ++t) logits[at(t)] += qd * kd[t];
  }
  double m = kNegInf;
  for (double& s : logits) m = std::max(m, s *= scale);
  // Fold in at the row's current stabilizer when it is larger, so one merge suffices.
  const double base = std::max(m, acc.max_log);
  const double keep = std::exp(acc.max_log - base);
  acc.den *= keep;
  for (double& x : acc.num) x *= keep;
  for (int64_t t = 0; t < n; ++t) {
    const double w = std::exp(logits[at(t)] - base);
    acc.den += w;
    const double* vt = &keys.v[at(t * dim)];
    for (int64_t d = 0; d < dim; ++d) acc.num[at(d)] += w * vt[d];
  }
  acc.max_log = base;
}

}  // namespace detail

void exact_attention(const Problem& p, float* out) {
  p.validate();
  const double scale = p.effective_scale();
  std::vector<double> logits;
  KeySet keyset;
  for (int64_t b = 0; b < p.batch; ++b) {
    std::vector<int64_t> keys;
    for (int64_t j = 0; j < p.nk; ++j)
      if (key_real(p, b, j)) keys.push_back(j);
    for (int64_t h = 0; h < p.heads; ++h) {
      if (!slice_finite(p, b, h)) {
        write_poisoned_slice(p, b, h, out);
        continue;
      }
      keyset.gather(p, b, h, keys);
      for (int64_t i = 0; i < p.nq; ++i) {
        RowAccumulator row(p.dim);
        if (query_real(p, b, i)) add_exact_terms(keyset, q_row(p, b, h, i), p.dim, scale, logits, row);
        row.finish(out + ((b * p.heads + h) * p.nq + i) * p.dim);
      }
    }
  }
}

}  // namespace mra::ref
