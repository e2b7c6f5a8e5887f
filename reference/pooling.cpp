// reference/pooling.cpp: masked mean pooling, token counts and pooled logits (docs/semantics.md §2.2-2.3).
#include <algorithm>
#include <cmath>
#include <string>

#include "detail.h"

namespace mra::ref {

using namespace detail;

Pooled pool(const Problem& p, int64_t side) {
  p.validate();
  if (side < 1) throw Error("block side must be positive, got " + std::to_string(side));
  const int64_t D = p.dim;
  Pooled out;
  out.side = side;
  out.nq_blocks = ceil_div(p.nq, side);
  out.nk_blocks = ceil_div(p.nk, side);
  out.q_count.assign(at(p.batch * out.nq_blocks), 0);
  out.k_count.assign(at(p.batch * out.nk_blocks), 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t i = 0; i < p.nq; ++i) out.q_count[at(b * out.nq_blocks + i / side)] += query_real(p, b, i);
    for (int64_t j = 0; j < p.nk; ++j) out.k_count[at(b * out.nk_blocks + j / side)] += key_real(p, b, j);
  }
  out.q_mean.assign(at(p.batch * p.heads * out.nq_blocks * D), 0.0);
  out.k_mean.assign(at(p.batch * p.heads * out.nk_blocks * D), 0.0);
  out.v_sum.assign(at(p.batch * p.heads * out.nk_blocks * D), 0.0);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t bh = b * p.heads + h;
      for (int64_t i = 0; i < p.nq; ++i) {
        if (!query_real(p, b, i)) continue;
        double* dst = &out.q_mean[at((bh * out.nq_blocks + i / side) * D)];
        const float* src = q_row(p, b, h, i);
        for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
      }
      for (int64_t j = 0; j < p.nk; ++j) {
        if (!key_real(p, b, j)) continue;
        double* kd = &out.k_mean[at((bh * out.nk_blocks + j / side) * D)];
        double* vd = &out.v_sum[at((bh * out.nk_blocks + j / side) * D)];
        const float* ks = k_row(p, b, h, j);
        const float* vs = v_row(p, b, h, j);
        for (int64_t d = 0; d < D; ++d) {
          kd[d] += ks[d];
          vd[d] += vs[d];
        }
      }
      for (int64_t r = 0; r < out.nq_blocks; ++r)
        if (const int64_t n = out.q_count[at(b * out.nq_blocks + r)]; n > 0)
          for (int64_t d = 0; d < D; ++d) out.q_mean[at((bh * out.nq_blocks + r) * D + d)] /= double(n);
      for (int64_t c = 0; c < out.nk_blocks; ++c)
        if (const int64_t n = out.k_count[at(b * out.nk_blocks + c)]; n > 0)
          for (int64_t d = 0; d < D; ++d) out.k_mean[at((bh * out.nk_blocks + c) * D + d)] /= double(n);
    }
  return out;
}

double coarse_logit(const Problem& p, const Pooled& pooled, int64_t b, int64_t h, int64_t r, int64_t c) {
  if (!pair_active(pooled, b, r, c)) return kNegInf;
  const int64_t bh = b * p.heads + h, D = p.dim;
  const double* qm = &pooled.q_mean[at((bh * pooled.nq_blocks + r) * D)];
  const double* km = &pooled.k_mean[at((bh * pooled.nk_blocks + c) * D)];
  double dot = 0.0;
  for (int64_t d = 0; d < D; ++d) dot += qm[d] * km[d];
  return p.effective_scale() * dot;
}

std::vector<double> coarse_logits(const Problem& p, const Pooled& pooled) {
  std::vector<double> out(at(p.batch * p.heads * pooled.nq_blocks * pooled.nk_blocks));
  size_t t = 0;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t r = 0; r < pooled.nq_blocks; ++r)
        for (int64_t c = 0; c < pooled.nk_blocks; ++c) out[t++] = coarse_logit(p, pooled, b, h, r, c);
  return out;
}

}  // namespace mra::ref
