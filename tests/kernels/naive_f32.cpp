// tests/kernels/naive_f32.cpp: the plain f32 MRA attention and backward of naive_f32.h.
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

// One coarse component of a row: its logit, key count and V sum, and its pair (level l, block row r, column).
struct Coarse {
  float logit, count;
  const float* v_sum;
  int64_t level, r, col;
};

// The coarse components of finest block row R, level by level (§2.5): candidates of its block row at that level
// that were not refined.
std::vector<Coarse> coarse_of_row(const Problem& p, const Config& c, const Selection& s,
                                  const std::vector<PooledF32>& lv, int64_t b, int64_t h, int64_t R, int64_t fin,
                                  int64_t D, float scale) {
  std::vector<Coarse> coarse;
  const int64_t steps = int64_t(lv.size());
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
                        float(L.k_count[size_t(col)]), &L.v_sum[size_t(col * D)], l, r, col});
    }
  }
  return coarse;
}

// The exact components of finest block row R: every real key of its refined finest blocks.
std::vector<int64_t> keys_of_row(const Problem& p, const Selection& s, const PooledF32& F, int64_t b, int64_t h,
                                 int64_t R, int64_t fin, int64_t steps) {
  std::vector<int64_t> keys;
  const auto& fine = s.at(b, h, steps - 1);
  const auto [lo, hi] = row_range(fine, R, F.nk);
  for (size_t t = lo; t < hi; ++t)
    for (int64_t j = fine[t] % F.nk * fin; j < std::min((fine[t] % F.nk + 1) * fin, p.nk); ++j)
      if (!p.key_mask || p.key_mask[b * p.nk + j]) keys.push_back(j);
  return keys;
}

// The last key query i sees: i + nk - nq under causal attention (§9.1), every key otherwise.
int64_t horizon(const Problem& p, int64_t i) { return p.causal ? i + p.nk - p.nq : p.nk; }

// Row i's two-pass softmax over its terms (exact maximum first), the keys beyond `last` unseen: the exact logits
// into `logit` (-inf where unseen), the maximum m, the denominator den and out_i = num / den into o[0, D). False,
// and o untouched, when the row has no term.
bool row_forward(const float* qi, int64_t last, const std::vector<Coarse>& coarse, const std::vector<int64_t>& keys,
                 const float* k, const float* v, int64_t D, float scale, float (*round_p)(float),
                 std::vector<float>& logit, float& m, float& den, float* o) {
  logit.resize(keys.size());
  m = -INFINITY;
  for (const Coarse& t : coarse) m = std::max(m, t.logit);
  for (size_t t = 0; t < keys.size(); ++t) {
    logit[t] = keys[t] <= last ? scale * dot_f32(qi, k + keys[t] * D, D) : -INFINITY;
    m = std::max(m, logit[t]);
  }
  if (m == -INFINITY) return false;  // nothing to attend to: the row stays 0
  std::vector<float> num(size_t(D), 0.f);
  den = 0.f;
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
  for (int64_t d = 0; d < D; ++d) o[d] = num[size_t(d)] / den;
  return true;
}

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
        const std::vector<Coarse> coarse = coarse_of_row(p, c, s, lv, b, h, R, fin, D, scale);
        const std::vector<int64_t> keys = keys_of_row(p, s, lv[size_t(steps - 1)], b, h, R, fin, steps);
        std::vector<float> logit;
        for (int64_t i = R * fin; i < std::min((R + 1) * fin, p.nq); ++i) {
          float m = 0.f, den = 0.f;
          if (query_real(i))
            row_forward(q + i * D, horizon(p, i), coarse, keys, k, v, D, scale, round_p, logit, m, den, o + i * D);
        }
      }
    }
  return out;
}

GradientsF32 naive_backward_f32(const Problem& p, const Config& c, const Selection& s, const float* dout,
                                float (*round_stored)(float)) {
  const int64_t D = p.dim, steps = int64_t(c.scales.size()) - 1, fin = c.scales[size_t(steps - 1)];
  const float scale = float(p.effective_scale()), nan = std::numeric_limits<float>::quiet_NaN();
  GradientsF32 g{std::vector<float>(size_t(p.batch * p.heads * p.nq * D), 0.f),
                 std::vector<float>(size_t(p.batch * p.heads * p.nk * D), 0.f),
                 std::vector<float>(size_t(p.batch * p.heads * p.nk * D), 0.f)};
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      const int64_t slice = b * p.heads + h;
      const float* q = p.q + slice * p.nq * D;
      const float* k = p.k + slice * p.nk * D;
      const float* v = p.v + slice * p.nk * D;
      const float* go = dout + slice * p.nq * D;
      float* dq = g.dq.data() + slice * p.nq * D;
      float* dk = g.dk.data() + slice * p.nk * D;
      float* dv = g.dv.data() + slice * p.nk * D;
      auto query_real = [&](int64_t i) { return !p.query_mask || p.query_mask[b * p.nq + i]; };
      auto key_real = [&](int64_t j) { return !p.key_mask || p.key_mask[b * p.nk + j]; };
      bool finite = slice_finite(p, b, h);
      for (int64_t i = 0; finite && i < p.nq; ++i)
        for (int64_t d = 0; query_real(i) && d < D; ++d) finite = finite && std::isfinite(go[i * D + d]);
      if (!finite) {  // §7.5
        for (int64_t i = 0; i < p.nq; ++i)
          if (query_real(i)) std::fill(dq + i * D, dq + (i + 1) * D, nan);
        for (int64_t j = 0; j < p.nk; ++j)
          if (key_real(j)) {
            std::fill(dk + j * D, dk + (j + 1) * D, nan);
            std::fill(dv + j * D, dv + (j + 1) * D, nan);
          }
        continue;
      }
      std::vector<PooledF32> lv;
      for (int64_t l = 0; l < steps; ++l) lv.push_back(pool_f32(p, b, h, c.scales[size_t(l)]));
      // Per coarse pair of every level: dλ and dV summed over the rows it serves, and whether any row had it.
      std::vector<std::vector<float>> dlambda(static_cast<size_t>(steps)), dvsum(static_cast<size_t>(steps));
      std::vector<std::vector<char>> used(static_cast<size_t>(steps));
      for (int64_t l = 0; l < steps; ++l) {
        const size_t pairs = size_t(lv[size_t(l)].nq * lv[size_t(l)].nk);
        dlambda[size_t(l)].assign(pairs, 0.f);
        dvsum[size_t(l)].assign(pairs * size_t(D), 0.f);
        used[size_t(l)].assign(pairs, 0);
      }
      std::vector<float> logit, out(static_cast<size_t>(D));
      for (int64_t R = 0; R < (p.nq + fin - 1) / fin; ++R) {
        const std::vector<Coarse> coarse = coarse_of_row(p, c, s, lv, b, h, R, fin, D, scale);
        const std::vector<int64_t> keys = keys_of_row(p, s, lv[size_t(steps - 1)], b, h, R, fin, steps);
        for (int64_t i = R * fin; i < std::min((R + 1) * fin, p.nq); ++i) {
          float m = 0.f, den = 0.f;
          if (!query_real(i) ||
              !row_forward(q + i * D, horizon(p, i), coarse, keys, k, v, D, scale, round_stored, logit, m, den,
                           out.data()))
            continue;
          for (float& x : out) x = round_stored(x);
          const float* gi = go + i * D;
          const float delta = dot_f32(gi, out.data(), D);
          for (const Coarse& t : coarse) {  // dA = P (dout_i·V − n δ_i) and dV = P dout_i, per pair
            const float w = std::exp(t.logit - m) / den;
            const size_t at = size_t(t.r * lv[size_t(t.level)].nk + t.col);
            dlambda[size_t(t.level)][at] += w * (dot_f32(gi, t.v_sum, D) - t.count * delta);
            for (int64_t d = 0; d < D; ++d) dvsum[size_t(t.level)][at * size_t(D) + size_t(d)] += w * gi[d];
            used[size_t(t.level)][at] = 1;
          }
          for (size_t t = 0; t < keys.size(); ++t) {  // exact entries
            const int64_t j = keys[t];
            const float w = std::exp(logit[t] - m) / den;
            const float ds = w * (dot_f32(gi, v + j * D, D) - delta);
            const float w_used = round_stored(w), ds_used = round_stored(ds);  // the tensor cores' A operands
            for (int64_t d = 0; d < D; ++d) {
              dv[j * D + d] += w_used * gi[d];
              dq[i * D + d] += scale * ds_used * k[j * D + d];
              dk[j * D + d] += scale * ds_used * q[i * D + d];
            }
          }
        }
      }
      // Each coarse pair's dλ through q̄(r) and k̄(c) (1/count of it to every real token) and its dV to every real
      // value of block c.
      for (int64_t l = 0; l < steps; ++l) {
        const PooledF32& L = lv[size_t(l)];
        for (int64_t r = 0; r < L.nq; ++r)
          for (int64_t col = 0; col < L.nk; ++col) {
            const size_t at = size_t(r * L.nk + col);
            if (!used[size_t(l)][at]) continue;
            const float dl = dlambda[size_t(l)][at];
            for (int64_t j = col * L.side; j < std::min((col + 1) * L.side, p.nk); ++j)
              for (int64_t d = 0; key_real(j) && d < D; ++d) {
                dk[j * D + d] += scale * dl * L.q_mean[size_t(r * D + d)] / float(L.k_count[size_t(col)]);
                dv[j * D + d] += dvsum[size_t(l)][at * size_t(D) + size_t(d)];
              }
            for (int64_t i = r * L.side; i < std::min((r + 1) * L.side, p.nq); ++i)
              for (int64_t d = 0; query_real(i) && d < D; ++d)
                dq[i * D + d] += scale * dl * L.k_mean[size_t(col * D + d)] / float(L.q_count[size_t(r)]);
          }
      }
    }
  return g;
}

}  // namespace mra::test
