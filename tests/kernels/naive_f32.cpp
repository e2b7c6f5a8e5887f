// tests/kernels/naive_f32.cpp: the plain f32 MRA attention of naive_f32.h.
#include "naive_f32.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/order.h"

namespace mra::test {

using mra::ref::Config;
using mra::ref::Problem;
using mra::ref::Selection;

namespace {

// The pooled values of one level of one slice, in f32: sequential sums over the real tokens of a block, a
// mean is the sum divided by the count.
struct PooledF32 {
  int64_t side = 0, nq = 0, nk = 0;
  std::vector<float> q_mean, k_mean, v_sum;  // [blocks, dim]
  std::vector<int64_t> q_count, k_count;
};

PooledF32 pool_f32(const Problem& p, int64_t b, int64_t h, int64_t side) {
  const int64_t D = p.dim;
  PooledF32 r;
  r.side = side;
  r.nq = (p.nq + side - 1) / side;
  r.nk = (p.nk + side - 1) / side;
  r.q_mean.assign(size_t(r.nq * D), 0.f);
  r.k_mean.assign(size_t(r.nk * D), 0.f);
  r.v_sum.assign(size_t(r.nk * D), 0.f);
  r.q_count.assign(size_t(r.nq), 0);
  r.k_count.assign(size_t(r.nk), 0);
  auto pool = [&](const float* x, const float* y, const uint8_t* mask, int64_t n, int64_t blocks, float* mean,
                  float* sum, int64_t* count) {
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t d = 0; d < D; ++d) {
        float sx = 0.f, sy = 0.f;
        int64_t c = 0;
        for (int64_t i = blk * side; i < std::min((blk + 1) * side, n); ++i) {
          if (mask && !mask[b * n + i]) continue;
          sx += x[i * D + d];
          if (y) sy += y[i * D + d];
          ++c;
        }
        mean[blk * D + d] = c > 0 ? sx / float(c) : 0.f;
        if (sum) sum[blk * D + d] = sy;
        count[blk] = c;
      }
  };
  const int64_t slice = b * p.heads + h;
  pool(p.q + slice * p.nq * D, nullptr, p.query_mask, p.nq, r.nq, r.q_mean.data(), nullptr, r.q_count.data());
  pool(p.k + slice * p.nk * D, p.v + slice * p.nk * D, p.key_mask, p.nk, r.nk, r.k_mean.data(), r.v_sum.data(),
       r.k_count.data());
  return r;
}

float dot_f32(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

bool slice_finite(const Problem& p, int64_t b, int64_t h) {
  const int64_t slice = b * p.heads + h, D = p.dim;
  for (int64_t i = 0; i < p.nq; ++i)
    if (!p.query_mask || p.query_mask[b * p.nq + i])
      for (int64_t d = 0; d < D; ++d)
        if (!std::isfinite(p.q[(slice * p.nq + i) * D + d])) return false;
  for (int64_t j = 0; j < p.nk; ++j)
    if (!p.key_mask || p.key_mask[b * p.nk + j])
      for (int64_t d = 0; d < D; ++d)
        if (!std::isfinite(p.k[(slice * p.nk + j) * D + d]) || !std::isfinite(p.v[(slice * p.nk + j) * D + d]))
          return false;
  return true;
}

// The part of sorted flat indices `sel` lying in block row r of a level with nk blocks per row.
std::pair<size_t, size_t> row_range(const std::vector<int64_t>& sel, int64_t r, int64_t nk) {
  return {size_t(std::lower_bound(sel.begin(), sel.end(), r * nk) - sel.begin()),
          size_t(std::lower_bound(sel.begin(), sel.end(), (r + 1) * nk) - sel.begin())};
}

// One coarse component of a row: its logit, key count and V sum.
struct Coarse {
  float logit, count;
  const float* v_sum;
};

}  // namespace

std::vector<float> naive_attention_f32(const Problem& p, const Config& c, const Selection& s, float (*round_p)(float)) {
  const int64_t D = p.dim, steps = int64_t(c.scales.size()) - 1, fin = c.scales[size_t(steps - 1)];
  const float scale = float(p.effective_scale());
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * D), 0.f);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t slice = b * p.heads + h;
      float* o = out.data() + slice * p.nq * D;
      auto query_real = [&](int64_t i) { return !p.query_mask || p.query_mask[b * p.nq + i]; };
      if (!slice_finite(p, b, h)) {
        for (int64_t i = 0; i < p.nq; ++i)
          if (query_real(i)) std::fill(o + i * D, o + (i + 1) * D, std::numeric_limits<float>::quiet_NaN());
        continue;
      }
      std::vector<PooledF32> lv;
      for (int64_t l = 0; l < steps; ++l) lv.push_back(pool_f32(p, b, h, c.scales[size_t(l)]));
      const float* q = p.q + slice * p.nq * D;
      const float* k = p.k + slice * p.nk * D;
      const float* v = p.v + slice * p.nk * D;
      const int64_t rows_fin = (p.nq + fin - 1) / fin;
      for (int64_t R = 0; R < rows_fin; ++R) {
        // The coarse components of finest block row R, level by level (§2.5): candidates of its block row
        // at that level that were not refined.
        std::vector<Coarse> coarse;
        for (int64_t l = 0; c.mode == mra::ref::Mode::full && l < steps; ++l) {
          const PooledF32& L = lv[size_t(l)];
          const int64_t r = R * fin / L.side;
          if (L.q_count[size_t(r)] == 0) continue;
          std::vector<int64_t> cols;
          if (l == 0) {
            for (int64_t col = 0; col < L.nk; ++col) cols.push_back(col);
          } else {
            const PooledF32& up = lv[size_t(l - 1)];
            const int64_t rho = up.side / L.side;
            const auto& parents = s.at(b, h, l - 1);
            const auto [lo, hi] = row_range(parents, r / rho, up.nk);
            for (size_t t = lo; t < hi; ++t)
              for (int64_t u = 0; u < rho; ++u)
                if (parents[t] % up.nk * rho + u < L.nk) cols.push_back(parents[t] % up.nk * rho + u);
          }
          const auto& refined = s.at(b, h, l);
          for (int64_t col : cols) {
            if (L.k_count[size_t(col)] == 0 || std::binary_search(refined.begin(), refined.end(), r * L.nk + col))
              continue;
            // Causal attention (§9.3): only a visible pair is a coarse component.
            if (p.causal && mra::order::causal_place(r, col, L.side, p.nq, p.nk) != mra::order::kVisible) continue;
            coarse.push_back({scale * dot_f32(&L.q_mean[size_t(r * D)], &L.k_mean[size_t(col * D)], D),
                              float(L.k_count[size_t(col)]), &L.v_sum[size_t(col * D)]});
          }
        }
        // The exact components: every real key of the refined finest blocks of row R.
        std::vector<int64_t> keys;
        const PooledF32& F = lv[size_t(steps - 1)];
        const auto& fine = s.at(b, h, steps - 1);
        const auto [lo, hi] = row_range(fine, R, F.nk);
        for (size_t t = lo; t < hi; ++t)
          for (int64_t j = fine[t] % F.nk * fin; j < std::min((fine[t] % F.nk + 1) * fin, p.nk); ++j)
            if (!p.key_mask || p.key_mask[b * p.nk + j]) keys.push_back(j);
        std::vector<float> logit(keys.size()), num(static_cast<size_t>(D));
        for (int64_t i = R * fin; i < std::min((R + 1) * fin, p.nq); ++i) {
          if (!query_real(i)) continue;
          float m = -INFINITY;
          for (const Coarse& t : coarse) m = std::max(m, t.logit);
          for (size_t t = 0; t < keys.size(); ++t) {
            // Causal attention (§9.1): query i sees key j only when j <= i + nk - nq.
            const bool seen = !p.causal || keys[t] <= i + p.nk - p.nq;
            logit[t] = seen ? scale * dot_f32(q + i * D, k + keys[t] * D, D) : -INFINITY;
            m = std::max(m, logit[t]);
          }
          if (m == -INFINITY) continue;  // nothing to attend to: the row stays 0
          float den = 0.f;
          std::fill(num.begin(), num.end(), 0.f);
          for (const Coarse& t : coarse) {
            const float w = std::exp(t.logit - m);
            den += w * t.count;
            for (int64_t d = 0; d < D; ++d) num[size_t(d)] += w * t.v_sum[d];
          }
          for (size_t t = 0; t < keys.size(); ++t) {
            const float w = std::exp(logit[t] - m);
            den += w;
            const float wp = round_p(w);
            for (int64_t d = 0; d < D; ++d) num[size_t(d)] += wp * v[keys[t] * D + d];
          }
          for (int64_t d = 0; d < D; ++d) o[i * D + d] = num[size_t(d)] / den;
        }
      }
    }
  return out;
}

}  // namespace mra::test
