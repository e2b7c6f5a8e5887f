// reference/backward.cpp: the MRA backward pass given a selection (docs/semantics.md §7), in double.
//
// Stage by stage, one level-1 block row at a time, like the forward:
//   1. recompute the forward's per-row state of the block row (stabilizer m_i, denominator Z_i, out_i) with the
//      forward's own accumulation, and δ_i = dout_i · out_i;
//   2. walk the same components again: each term's weight P = exp(a − m_i) / Z_i gives dV (P · dout_i) and the
//      gradient of its log-weight dA = P (dout_i · u − n δ_i) (u its value vector, n its key count);
//   3. send dA to q and k: an exact logit σ q_i·k_j straight to q_i and k_j; a pooled logit σ q̄·k̄ to the pooled
//      means, which spread it evenly over the real tokens of their blocks.
// Coarse terms are shared by every query of their block row, so dA of a coarse pair is summed over its queries
// before it is spread: time D times the number of components evaluated, as the forward; no N x N matrix.
#include <algorithm>
#include <cmath>
#include <limits>

#include "detail.h"

namespace mra::ref {

using namespace detail;

namespace {

// The forward state of one query that the backward needs (§7.2).
struct RowState {
  double max_log = kNegInf;  // -inf: the row has no term (masked query or empty row), it sends no gradient
  double den = 0.0;
  double delta = 0.0;  // dout_i · out_i
};

double dot(const double* a, const double* b, int64_t n) {
  double s = 0.0;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// The tensors of one slice, in double, and the gradients being accumulated.
struct SliceGrad {
  const Problem& p;
  const float* dout;
  Gradients& g;
  int64_t b, h;

  // Offsets into the contiguous gradients: dq per query head, dk and dv per K/V head (§8).
  int64_t q_at(int64_t i) const { return ((b * p.heads + h) * p.nq + i) * p.dim; }
  int64_t k_at(int64_t j) const { return ((b * p.kv_heads() + p.kv_head(h)) * p.nk + j) * p.dim; }
  const float* dout_row(int64_t i) const { return out_row(p, dout, b, h, i); }
  void load(const float* src, std::vector<double>& dst) const { dst.assign(src, src + p.dim); }
};

// §7.5: true when dout is finite on every real query of slice (b, h).
bool dout_finite(const Problem& p, const float* dout, int64_t b, int64_t h) {
  for (int64_t i = 0; i < p.nq; ++i) {
    if (!query_real(p, b, i)) continue;
    const float* g = out_row(p, dout, b, h, i);
    for (int64_t d = 0; d < p.dim; ++d)
      if (!std::isfinite(g[d])) return false;
  }
  return true;
}

void poison_slice(const Problem& p, int64_t b, int64_t h, Gradients& g) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int64_t D = p.dim, bh = b * p.heads + h, bkv = b * p.kv_heads() + p.kv_head(h);
  for (int64_t i = 0; i < p.nq; ++i)
    if (query_real(p, b, i)) std::fill_n(&g.dq[at((bh * p.nq + i) * D)], D, nan);
  // The K/V head's gradients take the NaN of any query head of its group (the others add to it, NaN stays).
  for (int64_t j = 0; j < p.nk; ++j)
    if (key_real(p, b, j)) {
      std::fill_n(&g.dk[at((bkv * p.nk + j) * D)], D, nan);
      std::fill_n(&g.dv[at((bkv * p.nk + j) * D)], D, nan);
    }
}

// Stage 2 and 3 for the coarse components `pairs` of one level (mode full): per pair, dλ and dV(c) summed over
// the pair's queries, then dV(c) to every real value of block c and dλ through q̄(r) and k̄(c) (§7.3).
void coarse_backward(const SliceGrad& s, const Pooled& lv, const std::vector<int64_t>& pairs, int64_t first,
                     const std::vector<RowState>& rows) {
  const Problem& p = s.p;
  const int64_t D = p.dim, bh = s.b * p.heads + s.h;
  const double scale = p.effective_scale();
  std::vector<double> g, dv_block(at(D));
  for (int64_t flat : pairs) {
    const int64_t r = flat / lv.nk_blocks, c = flat % lv.nk_blocks;
    const double lambda = coarse_logit(p, lv, s.b, s.h, r, c);
    const double keys = double(lv.k_count[at(s.b * lv.nk_blocks + c)]);
    const double queries = double(lv.q_count[at(s.b * lv.nq_blocks + r)]);
    const double* v_sum = &lv.v_sum[at((bh * lv.nk_blocks + c) * D)];
    double dlambda = 0.0;
    std::fill(dv_block.begin(), dv_block.end(), 0.0);
    for (int64_t i = r * lv.side; i < std::min((r + 1) * lv.side, p.nq); ++i) {
      const RowState& row = rows[at(i - first)];
      if (!query_real(p, s.b, i) || row.max_log == kNegInf) continue;
      const double w = std::exp(lambda - row.max_log) / row.den;
      s.load(s.dout_row(i), g);
      dlambda += w * (dot(g.data(), v_sum, D) - keys * row.delta);
      for (int64_t d = 0; d < D; ++d) dv_block[at(d)] += w * g[at(d)];
    }
    // V(c) is a sum: every real value of the block receives dV(c). λ = σ q̄·k̄ and q̄, k̄ are means: each real
    // token of a block receives 1/count of its mean's gradient.
    const double* q_mean = &lv.q_mean[at((bh * lv.nq_blocks + r) * D)];
    const double* k_mean = &lv.k_mean[at((bh * lv.nk_blocks + c) * D)];
    for (int64_t j = c * lv.side; j < std::min((c + 1) * lv.side, p.nk); ++j) {
      if (!key_real(p, s.b, j)) continue;
      double* dk = &s.g.dk[at(s.k_at(j))];
      double* dv = &s.g.dv[at(s.k_at(j))];
      for (int64_t d = 0; d < D; ++d) {
        dv[d] += dv_block[at(d)];
        dk[d] += scale * dlambda * q_mean[d] / keys;
      }
    }
    for (int64_t i = r * lv.side; i < std::min((r + 1) * lv.side, p.nq); ++i) {
      if (!query_real(p, s.b, i)) continue;
      double* dq = &s.g.dq[at(s.q_at(i))];
      for (int64_t d = 0; d < D; ++d) dq[d] += scale * dlambda * k_mean[d] / queries;
    }
  }
}

// Stage 2 and 3 for the exact components: every real entry (i, j) of the refined pairs `pairs` of the last step
// (§7.3): dv_j += P_ij dout_i, ds_ij = P_ij (dout_i·v_j − δ_i), dq_i += σ ds_ij k_j, dk_j += σ ds_ij q_i. Under
// causal attention only the entries query i sees, j <= i + δ: a crossing pair is refined whole and masked entry by
// entry (§9.7).
void exact_backward(const SliceGrad& s, const Pooled& lv, std::span<const int64_t> pairs, int64_t first,
                    const std::vector<RowState>& rows) {
  const Problem& p = s.p;
  const int64_t D = p.dim;
  const double scale = p.effective_scale();
  std::vector<double> q, g, k, v;
  for (int64_t flat : pairs) {
    const int64_t r = flat / lv.nk_blocks, c = flat % lv.nk_blocks;
    for (int64_t i = r * lv.side; i < std::min((r + 1) * lv.side, p.nq); ++i) {
      const RowState& row = rows[at(i - first)];
      if (!query_real(p, s.b, i) || row.max_log == kNegInf) continue;
      s.load(q_row(p, s.b, s.h, i), q);
      s.load(s.dout_row(i), g);
      double* dq = &s.g.dq[at(s.q_at(i))];
      for (int64_t j = c * lv.side; j < std::min({(c + 1) * lv.side, p.nk, horizon(p, i) + 1}); ++j) {
        if (!key_real(p, s.b, j)) continue;
        s.load(k_row(p, s.b, s.h, j), k);
        s.load(v_row(p, s.b, s.h, j), v);
        const double w = std::exp(scale * dot(q.data(), k.data(), D) - row.max_log) / row.den;
        const double ds = w * (dot(g.data(), v.data(), D) - row.delta);
        double* dk = &s.g.dk[at(s.k_at(j))];
        double* dv = &s.g.dv[at(s.k_at(j))];
        for (int64_t d = 0; d < D; ++d) {
          dv[d] += w * g[at(d)];
          dq[d] += scale * ds * k[at(d)];
          dk[d] += scale * ds * q[at(d)];
        }
      }
    }
  }
}

}  // namespace

Gradients attend_backward(const Problem& p, const Config& c, const Selection& s, const float* dout) {
  validate_selection(p, c, s);
  if (dout == nullptr) throw Error("backward: dout is null");
  const std::vector<Pooled> levels = pool_levels(p, c);
  const int64_t D = p.dim;
  Gradients grads{std::vector<double>(at(p.batch * p.heads * p.nq * D), 0.0),
                  std::vector<double>(at(p.batch * p.kv_heads() * p.nk * D), 0.0),
                  std::vector<double>(at(p.batch * p.kv_heads() * p.nk * D), 0.0)};
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      // §7.5, under causal attention too (§9.7): a non-finite value poisons the slice's gradients.
      if (!slice_finite(p, b, selecting_heads(p, c, h)) || !dout_finite(p, dout, b, h)) {
        poison_slice(p, b, h, grads);
        continue;
      }
      const SliceGrad slice{p, dout, grads, b, h};
      for (int64_t row = 0; row < levels[0].nq_blocks; ++row) {
        // Stage 1: the forward's per-row state, recomputed by the forward's own accumulation.
        const int64_t first = row * levels[0].side;
        const std::vector<RowAccumulator> acc = accumulate_rows(p, c, s, levels, b, h, row);
        std::vector<RowState> rows(acc.size());
        for (size_t t = 0; t < acc.size(); ++t) {
          if (acc[t].max_log == kNegInf) continue;
          const float* g = slice.dout_row(first + int64_t(t));
          double delta = 0.0;
          for (int64_t d = 0; d < D; ++d) delta += double(g[d]) * (acc[t].num[at(d)] / acc[t].den);
          rows[t] = {acc[t].max_log, acc[t].den, delta};
        }
        // Stages 2 and 3 over the same components the forward summed.
        walk_components(
            p, c, s, levels, b, h, row,
            [&](const Pooled& lv, const std::vector<int64_t>& pairs) { coarse_backward(slice, lv, pairs, first, rows); },
            [&](const Pooled& lv, std::span<const int64_t> pairs) { exact_backward(slice, lv, pairs, first, rows); });
      }
    }
  return grads;
}

Gradients mra_attention_backward(const Problem& p, const Config& c, const float* dout) {
  return attend_backward(p, c, select(p, c), dout);
}

}  // namespace mra::ref
