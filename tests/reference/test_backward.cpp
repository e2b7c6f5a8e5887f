// tests/reference/test_backward.cpp: the reference backward (docs/semantics.md §7) against central finite
// differences of the reference forward with the selection frozen, and against the adjoint identity with a dense
// forward-mode derivative built on the test oracle (oracle.h), on random small problems of every kind.
//   ctest --test-dir build -L backward        or        build/tests/reference/test_backward
#include "common/doctest.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/inputs.h"
#include "common/strided.h"
#include "mra/reference.h"
#include "oracle.h"

using mra::ref::Config;
using mra::ref::Gradients;
using mra::ref::Mode;
using mra::ref::Problem;
using mra::ref::Selection;
using namespace mra::test;

namespace {

// Inputs are multiples of 2^-10 in [-4, 4] and the step is 2^-8, so x ± h is exact in float: the forward sees
// exactly the perturbed point, and the only noise in the quotient is the forward's rounding of out to float.
constexpr double kStep = 0x1p-8;
// |fd - grad| <= kAtol + kRtol |grad|: the rounding of out to float (2^-24 relative) divided by 2h gives about
// 1e-5 per affected output element, the truncation h^2/6 · f''' about 1e-5; the worst case measured over the 240
// problems is printed by the test (docs/semantics.md §7.6).
constexpr double kAtol = 2e-4, kRtol = 1e-3;

float quantized(Rng& rng, double amplitude) {
  const double x = std::fmax(-4.0, std::fmin(4.0, amplitude * rng.normal()));
  return float(std::round(x * 1024.0) / 1024.0);
}

struct Case {
  int64_t batch = 1, heads = 1, nq = 1, nk = 1, dim = 1;
  double scale = 0.0;
  int64_t heads_kv = 0;            // §8: K/V heads (0: heads)
  mra::ref::Layout layout{};       // §8: q, k, v stored with these strides (out and dout contiguous); 0: contiguous
  bool causal = false;             // §9
  std::vector<float> q, k, v, dout;
  std::vector<uint8_t> qmask, kmask;
  Config config;
  std::string text;  // what the case is, for failure messages
  Problem problem() const {
    Problem p{batch, heads, nq, nk, dim, q.data(), k.data(), v.data(),
              qmask.empty() ? nullptr : qmask.data(), kmask.empty() ? nullptr : kmask.data(), scale};
    p.heads_kv = heads_kv;
    p.layout = layout;
    p.causal = causal;
    return p;
  }
};

// Draws q, k, v and dout of the case's shape (k and v per K/V head), in that order, each element quantized(rng, 1).
void draw_inputs(Case& t, Rng& rng) {
  const int64_t heads_kv = t.heads_kv > 0 ? t.heads_kv : t.heads;
  for (auto* x : {&t.q, &t.k, &t.v, &t.dout}) {
    x->resize(size_t(x == &t.q || x == &t.dout ? t.batch * t.heads * t.nq * t.dim : t.batch * heads_kv * t.nk * t.dim));
    for (float& e : *x) e = quantized(rng, 1.0);
  }
}

// What problem `index` of a sweep is, for failure messages.
std::string describe(const Case& t, int index) {
  std::ostringstream s;
  s << "problem " << index << ": B " << t.batch << " H " << t.heads << " Nq " << t.nq << " Nk " << t.nk << " D "
    << t.dim << " scale " << t.scale << ", scales";
  for (int64_t x : t.config.scales) s << ' ' << x;
  s << ", budgets";
  for (int64_t x : t.config.budgets) s << ' ' << x;
  s << (t.config.mode == Mode::full ? ", full" : ", sparse") << ", priors " << t.config.prior_first << '/'
    << t.config.prior_diagonal << ", masks " << !t.qmask.empty() << '/' << !t.kmask.empty();
  if (t.causal) s << ", causal";
  return s.str();
}

// Problem `index` of the sweep: mode and number of levels cycle, everything else is drawn from `rng`.
Case random_case(Rng& rng, int index) {
  Case t;
  t.batch = 1 + rng.below(2);
  t.heads = 1 + rng.below(2);
  t.dim = 1 + rng.below(4);
  t.config.mode = index % 2 == 0 ? Mode::full : Mode::sparse;
  const bool three = (index / 2) % 2 == 1;
  const int64_t top = three ? (rng.below(2) ? 4 : 6) : 2 + rng.below(3);
  t.config.scales = three ? std::vector<int64_t>{top, 2, 1} : std::vector<int64_t>{top, 1};
  t.nq = 1 + rng.below(3 * top + 2);
  t.nk = rng.below(3) == 0 ? t.nq : 1 + rng.below(3 * top + 2);
  const int64_t nqb = (t.nq + top - 1) / top, nkb = (t.nk + top - 1) / top;
  t.config.budgets = {rng.below(nqb * nkb + 2)};
  if (three) t.config.budgets.push_back(rng.below(4 * t.config.budgets[0] + 2));
  t.config.prior_first = rng.below(3) == 0 ? 1 : 0;
  t.config.prior_diagonal = rng.below(3) == 0 ? 1 + 2 * rng.below(2) : 0;
  if (rng.below(2)) t.scale = 0.25 + rng.uniform();
  if (rng.below(2)) t.qmask = random_mask(rng, t.batch, t.nq, 0.75);
  if (rng.below(2)) t.kmask = random_mask(rng, t.batch, t.nk, 0.75);
  draw_inputs(t, rng);
  t.text = describe(t, index);
  return t;
}

// L = Σ dout · out with the frozen selection, summed in double.
double objective(const Case& t, const Selection& s) {
  std::vector<float> out(t.dout.size());
  mra::ref::attend(t.problem(), t.config, s, out.data());
  double sum = 0.0;
  for (size_t i = 0; i < out.size(); ++i) sum += double(t.dout[i]) * out[i];
  return sum;
}

// Central differences of L along every coordinate of `x` (one of t.q, t.k, t.v).
std::vector<float> finite_differences(Case& t, const Selection& s, std::vector<float>& x) {
  std::vector<float> fd(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float keep = x[i];
    x[i] = float(keep + kStep);
    const double up = objective(t, s);
    x[i] = float(keep - kStep);
    const double down = objective(t, s);
    x[i] = keep;
    fd[i] = float((up - down) / (2 * kStep));
  }
  return fd;
}

std::vector<float> to_float(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }

Strides4 contiguous(const Strides4& extent) {
  return {extent[1] * extent[2] * extent[3], extent[2] * extent[3], extent[3], 1};
}

// One input of a case (its storage x, with extent [B, H, N, D] and strides) and the backward's gradient of it.
struct Tensor {
  const char* name;
  std::vector<float>* x;
  const std::vector<double>* grad;
  Strides4 extent, strides;
};

// The gradient against central differences along every element of x's storage, read back in [B, H, N, D] order
// through its strides (padded coordinates included: there both must be 0). Keeps the worst use of the tolerance.
void check_finite_differences(Case& t, const Selection& s, const Tensor& x, double& worst, double& worst_abs,
                              std::string& worst_case) {
  const std::vector<float> fd = gather(finite_differences(t, s, *x.x), x.extent, x.strides);
  const std::vector<float> grad = to_float(*x.grad);
  REQUIRE(grad.size() == fd.size());
  const Comparison cmp = compare(grad.data(), fd.data(), int64_t(fd.size()), kAtol, kRtol,
                                 {x.extent[0], x.extent[1], x.extent[2], x.extent[3]});
  INFO(x.name << " against finite differences: " << cmp.report);
  CHECK(cmp.ok);
  if (cmp.tolerance_used > worst) {
    worst = cmp.tolerance_used;
    worst_case = t.text + ", " + x.name + ": " + cmp.report;
  }
  worst_abs = std::fmax(worst_abs, cmp.max_abs);
}

// <dout, J dx> by forward mode on the dense oracle: the log-weights are bilinear in (q, k) for a fixed selection,
// so their derivative along (dq, dk) is W(dq, k) + W(q, dk), and out_i = Σ_j P_ij v_j gives
// d out_i = Σ_j P_ij (dv_j + (dw_ij − Σ_j' P_ij' dw_ij') v_j).
double directional_derivative(const Case& t, const Selection& s, const std::vector<float>& dq,
                              const std::vector<float>& dk, const std::vector<float>& dv, double& magnitude) {
  const Problem p = t.problem();
  Problem pq = p, pk = p;
  pq.q = dq.data();
  pk.k = dk.data();
  double sum = 0.0;
  magnitude = 0.0;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h) {
      const std::vector<double> w = oracle_log_weights(p, t.config, s, b, h);
      const std::vector<double> wq = oracle_log_weights(pq, t.config, s, b, h);
      const std::vector<double> wk = oracle_log_weights(pk, t.config, s, b, h);
      const int64_t bh = b * p.heads + h;
      for (int64_t i = 0; i < p.nq; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < p.nk; ++j) mx = std::fmax(mx, w[size_t(i * p.nk + j)]);
        if (mx == -std::numeric_limits<double>::infinity()) continue;
        std::vector<double> P(size_t(p.nk)), dw(size_t(p.nk), 0.0);
        double den = 0.0, mean_dw = 0.0;
        for (int64_t j = 0; j < p.nk; ++j) den += P[size_t(j)] = std::exp(w[size_t(i * p.nk + j)] - mx);
        for (int64_t j = 0; j < p.nk; ++j) {
          P[size_t(j)] /= den;
          if (P[size_t(j)] > 0) dw[size_t(j)] = wq[size_t(i * p.nk + j)] + wk[size_t(i * p.nk + j)];
          mean_dw += P[size_t(j)] * dw[size_t(j)];
        }
        for (int64_t j = 0; j < p.nk; ++j)
          for (int64_t d = 0; d < p.dim; ++d) {
            const size_t kv = size_t((bh * p.nk + j) * p.dim + d);
            const double term = t.dout[size_t((bh * p.nq + i) * p.dim + d)] * P[size_t(j)] *
                                (dv[kv] + (dw[size_t(j)] - mean_dw) * t.v[kv]);
            sum += term;
            magnitude += std::fabs(term);
          }
      }
    }
  return sum;
}

double inner(const std::vector<double>& a, const std::vector<float>& b, double& magnitude) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    s += a[i] * b[i];
    magnitude += std::fabs(a[i] * b[i]);
  }
  return s;
}


// The worst cases of a sweep and what kinds of problem it covered.
struct Sweep {
  double worst_fd = 0.0, worst_fd_abs = 0.0, worst_adjoint = 0.0;
  std::string worst_fd_case;
  int cross = 0, masked = 0, partial = 0, priors = 0, three = 0, sparse = 0, with_coarse = 0;

  // Finite differences along every coordinate of q, k and v, then the adjoint identity along a random direction.
  void check(Case& t, Rng& rng) {
    const Problem p = t.problem();
    const Selection s = mra::ref::select(p, t.config);
    const Gradients g = mra::ref::attend_backward(p, t.config, s, t.dout.data());
    const Strides4 qx{t.batch, t.heads, t.nq, t.dim}, kx{t.batch, t.heads, t.nk, t.dim};
    for (const Tensor& x : {Tensor{"dq", &t.q, &g.dq, qx, contiguous(qx)}, Tensor{"dk", &t.k, &g.dk, kx, contiguous(kx)},
                            Tensor{"dv", &t.v, &g.dv, kx, contiguous(kx)}})
      check_finite_differences(t, s, x, worst_fd, worst_fd_abs, worst_fd_case);

    // <dout, J dx> (dense forward mode) = <J^T dout, dx> (backward).
    std::vector<float> dq(t.q.size()), dk(t.k.size()), dv(t.v.size());
    for (auto* x : {&dq, &dk, &dv})
      for (float& e : *x) e = quantized(rng, 1.0);
    double mag_forward = 0.0, mag_backward = 0.0;
    const double forward = directional_derivative(t, s, dq, dk, dv, mag_forward);
    const double backward = inner(g.dq, dq, mag_backward) + inner(g.dk, dk, mag_backward) + inner(g.dv, dv, mag_backward);
    const double used = std::fabs(forward - backward) / (1e-14 + 1e-12 * std::fmax(mag_forward, mag_backward));
    INFO("adjoint: <dout, J dx> = " << forward << ", <J^T dout, dx> = " << backward);
    CHECK(used <= 1.0);
    worst_adjoint = std::fmax(worst_adjoint, used);

    cross += t.nq != t.nk;
    masked += !t.qmask.empty() || !t.kmask.empty();
    partial += t.nq % t.config.scales[0] != 0 || t.nk % t.config.scales[0] != 0;
    priors += t.config.prior_first > 0 || t.config.prior_diagonal > 0;
    three += t.config.scales.size() == 3;
    sparse += t.config.mode == Mode::sparse;
    const auto cov = mra::ref::coverage(p, t.config, s);
    with_coarse += t.config.mode == Mode::full && cov.exact_entries < cov.total_entries && cov.exact_entries > 0;
  }

  void report(const std::string& what) const {
    MESSAGE(what << ": finite differences (h = 2^-8, atol " << kAtol << ", rtol " << kRtol << "): worst "
                 << 100 * worst_fd << "% of tolerance, max abs err " << worst_fd_abs << "; worst case "
                 << worst_fd_case);
    MESSAGE(what << ": adjoint identity: worst " << 100 * worst_adjoint
                 << "% of tolerance (rtol 1e-12 of the summed magnitudes)");
  }

  // The sweep of `problems` problems had as many of 3 levels as of 2 and as many sparse as full, at least `least`
  // with masks and `least` with partial blocks, and at least least / 2 with coarse components.
  void check_coverage(int problems, int least) const {
    CHECK(masked >= least);
    CHECK(partial >= least);
    CHECK(three == problems / 2);
    CHECK(sparse == problems / 2);
    CHECK(with_coarse >= least / 2);
  }
};

}  // namespace

TEST_CASE("backward: central finite differences and the adjoint identity on 240 random problems") {
  constexpr int kProblems = 240;
  const uint64_t seed = 0x9e3779b97f4a7c15ull;
  Rng rng(seed);
  Sweep sweep;
  for (int index = 0; index < kProblems; ++index) {
    Case t = random_case(rng, index);
    INFO("seed " << seed << ", " << t.text);
    sweep.check(t, rng);
  }
  sweep.report("240 problems");
  // The sweep must cover every kind of problem the definition distinguishes.
  CHECK(sweep.cross >= 40);
  CHECK(sweep.priors >= 40);
  sweep.check_coverage(kProblems, 40);
}

TEST_CASE("backward: causal attention, central finite differences and the adjoint identity on 96 problems") {
  // §9.7: problems of the sweep above made causal (policy row, per-row budgets small enough to leave coarse
  // components): δ = Nk - Nq cycles through 0, > 0 (prefill after a cache) and < 0 (the first -δ queries see
  // nothing), with masks, partial blocks, 2 and 3 levels and both modes. The finite differences see the causal
  // forward, so a gradient sent to a key a query does not see, or a coarse term over future keys, fails them.
  constexpr int kProblems = 96;
  const uint64_t seed = 0x2545f4914f6cdd1dull;
  Rng rng(seed);
  Sweep sweep;
  int prefill = 0, behind = 0, square = 0;
  for (int index = 0; index < kProblems; ++index) {
    Case t = random_case(rng, index);
    const int64_t top = t.config.scales[0];
    const int64_t kind = (index / 4) % 3;  // 0: δ = 0, 1: δ > 0, 2: δ < 0
    const int64_t n = 2 + rng.below(3 * top);
    t.nq = kind == 1 ? n : n + 1 + rng.below(top + 2);
    t.nk = kind == 2 ? n : kind == 0 ? t.nq : n + 1 + rng.below(2 * top + 2);
    draw_inputs(t, rng);
    if (!t.qmask.empty()) t.qmask = random_mask(rng, t.batch, t.nq, 0.75);
    if (!t.kmask.empty()) t.kmask = random_mask(rng, t.batch, t.nk, 0.75);
    t.causal = true;
    t.config.policy = mra::ref::Policy::row;
    t.config.budgets[0] = rng.below(3);
    if (t.config.budgets.size() == 2) t.config.budgets[1] = rng.below(4);
    prefill += t.nk > t.nq;
    behind += t.nk < t.nq;
    square += t.nk == t.nq;
    t.text = describe(t, index) + ", policy row";
    INFO("seed " << seed << ", " << t.text);
    sweep.check(t, rng);
  }
  sweep.report("96 causal problems");
  CHECK(prefill >= 24);
  CHECK(behind >= 24);
  CHECK(square >= 24);
  sweep.check_coverage(kProblems, 20);
}

TEST_CASE("backward: causal attention sends no gradient to a key a query does not see") {
  // §9.7. Nq 20, Nk 26 (δ = 6), the last 3 queries masked: the last real query (16) sees keys up to 22, so keys
  // 23 ... 25 get dk = dv = 0 exactly. Then every key and value after a cut (12) is redrawn: dq of a row whose
  // level-1 block ends before the cut's horizon stays bit for bit (mode full: the block's queries share q̄; mode
  // sparse: dq_i reads row i's exact entries only, so every row i with i + δ <= cut), and some later row changes.
  const uint64_t seed = 0x6a09e667f3bcc909ull;
  Rng rng(seed);
  INFO("seed " << seed);
  for (const auto& scales : {std::vector<int64_t>{4, 1}, std::vector<int64_t>{4, 2, 1}})
    for (const Mode mode : {Mode::full, Mode::sparse}) {
      Case t;
      t.batch = 1, t.heads = 2, t.nq = 20, t.nk = 26, t.dim = 3;
      t.causal = true;
      t.config.scales = scales;
      t.config.mode = mode;
      t.config.policy = mra::ref::Policy::row;
      t.config.budgets = scales.size() == 2 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 2};
      t.qmask = padding_mask(1, 20, {3});
      draw_inputs(t, rng);
      INFO(describe(t, 0));
      const Gradients g = mra::ref::mra_attention_backward(t.problem(), t.config, t.dout.data());
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t j = 0; j < 26; ++j)
          for (int64_t d = 0; d < 3; ++d) {
            const size_t at = size_t((h * 26 + j) * 3 + d);
            if (j > 22) {
              CHECK(g.dk[at] == 0.0);
              CHECK(g.dv[at] == 0.0);
            } else if (d == 0 && j >= 20) {
              CHECK((g.dk[at] != 0.0 || g.dv[at] != 0.0));  // keys 20 ... 22 are seen by query 14 ... 16
            }
          }
      constexpr int64_t kCut = 12, kDelta = 6;
      Case later = t;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t j = kCut + 1; j < 26; ++j)
          for (int64_t d = 0; d < 3; ++d) {
            later.k[size_t((h * 26 + j) * 3 + d)] = quantized(rng, 1.0);
            later.v[size_t((h * 26 + j) * 3 + d)] = quantized(rng, 1.0);
          }
      const Gradients moved = mra::ref::mra_attention_backward(later.problem(), later.config, later.dout.data());
      int kept = 0, changed = 0;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t i = 0; i < 17; ++i) {
          const int64_t last = mode == Mode::full ? std::min<int64_t>((i / 4 + 1) * 4, 20) - 1 : i;
          bool same = true;
          for (int64_t d = 0; d < 3; ++d) same = same && g.dq[size_t((h * 20 + i) * 3 + d)] == moved.dq[size_t((h * 20 + i) * 3 + d)];
          if (last + kDelta <= kCut) {
            INFO("head " << h << ", query " << i);
            CHECK(same);
            ++kept;
          } else {
            changed += !same;
          }
        }
      CHECK(kept >= 8);
      CHECK(changed > 0);
    }
}

TEST_CASE("backward: central finite differences with grouped K/V heads and strided inputs") {
  // §8: 16 problems of the sweep above redrawn with H = 4 query heads on H_kv = 2 or 1 (GQA, MQA), half of them
  // with q, k and v stored as [B, N, H, D]. dk and dv are per K/V head: the finite differences along a shared key
  // see every query head of its group, so they check the group sum; along a strided input's storage element they
  // check that the gradient lands at the logical index the strides name.
  const uint64_t seed = 0x51ed270b27a4c1d5ull;
  Rng rng(seed);
  double worst = 0.0, worst_abs = 0.0;
  std::string worst_case;
  for (int index = 0; index < 16; ++index) {
    Case t = random_case(rng, index);
    t.heads = 4;
    t.heads_kv = index % 4 < 2 ? 2 : 1;
    const bool strided = (index / 4) % 2 == 1;
    const Strides4 qx{t.batch, 4, t.nq, t.dim}, kx{t.batch, t.heads_kv, t.nk, t.dim};
    draw_inputs(t, rng);
    if (strided) {
      t.layout.q = bnhd_strides(4, t.nq, t.dim);
      t.layout.k = t.layout.v = bnhd_strides(t.heads_kv, t.nk, t.dim);
      t.q = scatter(t.q, qx, t.layout.q, 0.f);
      t.k = scatter(t.k, kx, t.layout.k, 0.f);
      t.v = scatter(t.v, kx, t.layout.v, 0.f);
    }
    t.text += ", H 4 on " + std::to_string(t.heads_kv) + (strided ? ", q k v [B, N, H, D]" : "");
    INFO("seed " << seed << ", " << t.text);
    const Problem p = t.problem();
    const Selection s = mra::ref::select(p, t.config);
    const Gradients g = mra::ref::attend_backward(p, t.config, s, t.dout.data());
    for (const Tensor& x : {Tensor{"dq", &t.q, &g.dq, qx, strided ? t.layout.q : contiguous(qx)},
                            Tensor{"dk", &t.k, &g.dk, kx, strided ? t.layout.k : contiguous(kx)},
                            Tensor{"dv", &t.v, &g.dv, kx, strided ? t.layout.v : contiguous(kx)}})
      check_finite_differences(t, s, x, worst, worst_abs, worst_case);
  }
  MESSAGE("finite differences, grouped K/V heads and strides: worst " << 100 * worst << "% of tolerance, max abs err "
                                                                       << worst_abs << "; " << worst_case);
}

TEST_CASE("backward: padding is never read, empty rows send nothing, a non-finite slice is NaN") {
  const uint64_t seed = 7;
  Rng rng(seed);
  INFO("seed " << seed);
  Case t;
  t.batch = 2, t.heads = 2, t.nq = 7, t.nk = 9, t.dim = 3;
  t.config.scales = {4, 1};
  t.config.budgets = {2};
  draw_inputs(t, rng);
  t.qmask = padding_mask(2, 7, {2, 0});
  t.kmask = padding_mask(2, 9, {0, 9});  // batch 1 has no real key: every row of it is empty
  const Gradients clean = mra::ref::mra_attention_backward(t.problem(), t.config, t.dout.data());
  const auto slice_of = [&](const std::vector<double>& x, int64_t n, int64_t b, int64_t h) {
    const auto first = x.begin() + (b * t.heads + h) * n * t.dim;
    return std::vector<double>(first, first + n * t.dim);
  };
  double norm = 0.0;
  for (double x : clean.dq) norm += x * x;
  CHECK(norm > 0.0);
  for (int64_t h = 0; h < 2; ++h) {  // batch 1: empty rows, and batch 0's padded query rows
    for (double x : slice_of(clean.dq, 7, 1, h)) CHECK(x == 0.0);
    for (double x : slice_of(clean.dk, 9, 1, h)) CHECK(x == 0.0);
    for (double x : slice_of(clean.dv, 9, 1, h)) CHECK(x == 0.0);
    for (int64_t d = 0; d < 3 * 2; ++d) CHECK(slice_of(clean.dq, 7, 0, h)[size_t(5 * 3 + d)] == 0.0);
  }

  // NaN where a mask says padding (q, k, v and dout of masked tokens) changes nothing.
  Case padded = t;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  padded.q[size_t((0 * 2 + 1) * 7 * 3 + 6 * 3)] = nan;   // b 0, h 1, query 6 (masked)
  padded.dout[size_t((0 * 2 + 0) * 7 * 3 + 5 * 3 + 1)] = nan;
  padded.k[size_t((1 * 2 + 0) * 9 * 3 + 4 * 3)] = nan;   // b 1: every key masked
  padded.v[size_t((1 * 2 + 1) * 9 * 3 + 8 * 3 + 2)] = nan;
  const Gradients same = mra::ref::mra_attention_backward(padded.problem(), padded.config, padded.dout.data());
  CHECK(same.dq == clean.dq);
  CHECK(same.dk == clean.dk);
  CHECK(same.dv == clean.dv);

  // A NaN in a real token's v (slice b 0, h 1), or an Inf in a real query's dout (slice b 0, h 0), poisons that
  // slice only: NaN on its real tokens, 0 on its padded ones; the other slices are unchanged.
  for (int which = 0; which < 2; ++which) {
    Case bad = t;
    const int64_t h = which == 0 ? 1 : 0;
    if (which == 0) bad.v[size_t((0 * 2 + 1) * 9 * 3 + 3 * 3 + 1)] = nan;
    else bad.dout[size_t((0 * 2 + 0) * 7 * 3 + 2 * 3)] = std::numeric_limits<float>::infinity();
    const Selection s = mra::ref::select(bad.problem(), bad.config);
    const Gradients g = mra::ref::attend_backward(bad.problem(), bad.config, s, bad.dout.data());
    const std::vector<double> dq = slice_of(g.dq, 7, 0, h), dk = slice_of(g.dk, 9, 0, h);
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t d = 0; d < 3; ++d) CHECK((i < 5 ? std::isnan(dq[size_t(i * 3 + d)]) : dq[size_t(i * 3 + d)] == 0.0));
    for (double x : dk) CHECK(std::isnan(x));
    CHECK(slice_of(g.dq, 7, 0, 1 - h) == slice_of(clean.dq, 7, 0, 1 - h));
    CHECK(slice_of(g.dv, 9, 0, 1 - h) == slice_of(clean.dv, 9, 0, 1 - h));
  }
}

TEST_CASE("backward: sparse mode without exact entries has zero gradients, bad arguments are reported") {
  Rng rng(11);
  Case t;
  t.nq = 6, t.nk = 6, t.dim = 2;
  t.config.scales = {3, 1};
  t.config.budgets = {0};
  t.config.mode = Mode::sparse;
  draw_inputs(t, rng);
  const Gradients g = mra::ref::mra_attention_backward(t.problem(), t.config, t.dout.data());
  for (const auto* x : {&g.dq, &g.dk, &g.dv})
    for (double e : *x) CHECK(e == 0.0);
  const Selection s = mra::ref::select(t.problem(), t.config);
  CHECK_THROWS_AS(mra::ref::attend_backward(t.problem(), t.config, s, nullptr), mra::ref::Error);
  Selection wrong = s;
  wrong.at(0, 0, 0) = {99};
  CHECK_THROWS_AS(mra::ref::attend_backward(t.problem(), t.config, wrong, t.dout.data()), mra::ref::Error);
}
