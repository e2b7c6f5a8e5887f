// tests/kernels/test_kernels.cpp: every generated configuration, run on the CPU emulation, against the reference.
//   cmake --build build -j && ctest --test-dir build -L kernels          (one test case per configuration)
//   build/tests/kernels/test_kernels -tc=mra_fwd_r32x1_d64_bf16          (one configuration)
//
// Stage by stage (docs/kernels.md, "Cross-checks"): pooled means, sums and counts; the level-1 row maxima of
// the pooled logits and the number of candidates; the refined blocks of every level (a difference is allowed only between
// pairs whose reference score lies within the derived epsilon of the selection threshold, and is counted);
// the output given the reference's selection; and end to end, the output against the reference attending
// the kernels' own selection, under two emulation schedules that must agree bit for bit. f16/bf16 inputs are
// rounded before the reference sees them. Outputs are poisoned before each run and their norms checked.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend.h"
#include "common/check.h"
#include "common/inputs.h"
#include "kernels/entry.h"
#include "kernels/layout.h"
#include "kernels/order.h"
#include "mra.h"
#include "mra/reference.h"

namespace {

using mra::kern::Layout;
using mra::kern::Level;
namespace ref = mra::ref;
using mra::test::Rng;

constexpr double kU32 = 0x1.0p-24;  // unit roundoff of f32

struct Case {
  std::string what;
  int64_t batch = 1, heads = 1, nq = 0, nk = 0;
  std::vector<float> q, k, v;
  std::vector<uint8_t> qmask, kmask;  // empty: all real
  ref::Config config;
  std::vector<int64_t> bad_slices;   // slices holding a non-finite value in a real token
  bool exact_ties = false;           // every logit is exactly 0: the selection must equal the reference's
};

double unit_roundoff(mra_dtype t) { return t == MRA_DTYPE_F32 ? kU32 : t == MRA_DTYPE_F16 ? 0x1.0p-11 : 0x1.0p-8; }
size_t elem_size(mra_dtype t) { return t == MRA_DTYPE_F32 ? 4 : 2; }

// Rounds `x` to the storage type in place and returns its bytes in that type.
std::vector<unsigned char> to_storage(std::vector<float>& x, mra_dtype t) {
  std::vector<unsigned char> bytes(x.size() * elem_size(t));
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == MRA_DTYPE_F16) {
      const __half h = __float2half_rn(x[i]);
      x[i] = __half2float(h);
      std::memcpy(&bytes[2 * i], &h, 2);
    } else if (t == MRA_DTYPE_BF16) {
      const __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
      x[i] = __bfloat162float(h);
      std::memcpy(&bytes[2 * i], &h, 2);
    } else {
      std::memcpy(&bytes[4 * i], &x[i], 4);
    }
  }
  return bytes;
}

std::vector<float> from_storage(const std::vector<unsigned char>& bytes, mra_dtype t, size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == MRA_DTYPE_F16) {
      __half h;
      std::memcpy(&h, &bytes[2 * i], 2);
      x[i] = __half2float(h);
    } else if (t == MRA_DTYPE_BF16) {
      __nv_bfloat16 h;
      std::memcpy(&h, &bytes[2 * i], 2);
      x[i] = __bfloat162float(h);
    } else {
      std::memcpy(&x[i], &bytes[4 * i], 4);
    }
  }
  return x;
}

// Fills n elements of type t with a large finite value (f32 and bf16 0x7f7f..: 3.4e38, f16 0x7bff: 65504), so
// that an element the kernels leave unwritten fails any comparison instead of passing as NaN or zero.
void poison(unsigned char* out, size_t n, mra_dtype t) {
  const uint16_t half = t == MRA_DTYPE_F16 ? 0x7bffu : 0x7f7fu;
  for (size_t i = 0; i < n; ++i) {
    if (t == MRA_DTYPE_F32) std::memset(out + 4 * i, 0x7f, 4);
    else std::memcpy(out + 2 * i, &half, 2);
  }
}

// A 16-byte aligned byte buffer.
struct Buffer {
  std::vector<uint64_t> words;
  explicit Buffer(size_t bytes) : words((bytes + 15) / 8 + 2) {}
  unsigned char* data() {
    auto p = reinterpret_cast<uintptr_t>(words.data());
    return reinterpret_cast<unsigned char*>((p + 15) / 16 * 16);
  }
  template <class T>
  T* at(size_t offset) { return reinterpret_cast<T*>(data() + offset); }
};

struct Config {
  const char* name;
  mra_dtype dtype;
  int64_t dim;
  std::vector<int64_t> sides;
};

// The measured facts of one case, printed with every failure and at the end.
struct Report {
  int64_t near_ties = 0, levels_compared = 0, levels_skipped = 0;
};

class Runner {
 public:
  Runner(const Config& cfg, Case& c) : cfg_(cfg), c_(c) {
    problem_.batch = c.batch;
    problem_.heads = c.heads;
    problem_.nq = c.nq;
    problem_.nk = c.nk;
    problem_.dim = cfg.dim;
    problem_.dtype = cfg.dtype;
    problem_.levels = int32_t(cfg.sides.size());
    for (size_t l = 0; l < cfg.sides.size(); ++l) problem_.resolutions[l] = cfg.sides[l];
    for (size_t l = 0; l < c.config.budgets.size(); ++l) problem_.budgets[l] = c.config.budgets[l];
    problem_.mode = c.config.mode == ref::Mode::full ? MRA_MODE_FULL : MRA_MODE_SPARSE;
    problem_.prior_first = c.config.prior_first;
    problem_.prior_diagonal = c.config.prior_diagonal;
    qs_ = to_storage(c.q, cfg.dtype);
    ks_ = to_storage(c.k, cfg.dtype);
    vs_ = to_storage(c.v, cfg.dtype);
    p_.batch = c.batch;
    p_.heads = c.heads;
    p_.nq = c.nq;
    p_.nk = c.nk;
    p_.dim = cfg.dim;
    p_.q = c.q.data();
    p_.k = c.k.data();
    p_.v = c.v.data();
    p_.query_mask = c.qmask.empty() ? nullptr : c.qmask.data();
    p_.key_mask = c.kmask.empty() ? nullptr : c.kmask.data();
    for (auto [from, to] : {std::pair{&c.q, &qa_}, {&c.k, &ka_}, {&c.v, &va_}}) {
      *to = *from;
      for (float& x : *to) x = std::fabs(x);
    }
    pa_ = p_;
    pa_.q = qa_.data();
    pa_.k = ka_.data();
    pa_.v = va_.data();
    REQUIRE(mra::kern::make_layout(problem_, &layout_) == MRA_SUCCESS);
    size_t bytes = 0;
    REQUIRE(mra_workspace_size(&problem_, &bytes) == MRA_SUCCESS);
    REQUIRE(bytes == layout_.bytes);
  }

  const ref::Problem& problem() const { return p_; }
  // The same problem on |q|, |k|, |v|: its pooled values bound the rounding errors of the pooled values.
  const ref::Problem& abs_problem() const { return pa_; }
  size_t out_elems() const { return size_t(c_.batch * c_.heads * c_.nq * cfg_.dim); }

  // Runs the given stages on `ws` into a poisoned output; returns the output rounded to float.
  std::vector<float> run(Buffer& ws, unsigned stages) {
    Buffer q(qs_.size()), k(ks_.size()), v(vs_.size()), out(out_elems() * elem_size(cfg_.dtype));
    std::memcpy(q.data(), qs_.data(), qs_.size());
    std::memcpy(k.data(), ks_.data(), ks_.size());
    std::memcpy(v.data(), vs_.data(), vs_.size());
    poison(out.data(), out_elems(), cfg_.dtype);
    const mra::test::Tensors t{q.data(), k.data(), v.data(), qs_.size(), ks_.size(), p_.query_mask, p_.key_mask};
    std::string error;
    const mra_status s = mra::test::run_stages(problem_, t, out.data(), out_elems() * elem_size(cfg_.dtype),
                                               ws.data(), layout_.bytes, stages, &error);
    INFO("run failed: ", error);
    REQUIRE(s == MRA_SUCCESS);
    std::vector<unsigned char> bytes(out.data(), out.data() + out_elems() * elem_size(cfg_.dtype));
    return from_storage(bytes, cfg_.dtype, out_elems());
  }

  const Layout& layout() const { return layout_; }
  const mra_problem& api_problem() const { return problem_; }
  double scale() const { return 1.0 / std::sqrt(double(cfg_.dim)); }

 private:
  const Config& cfg_;
  Case& c_;
  mra_problem problem_{};
  ref::Problem p_, pa_;
  std::vector<float> qa_, ka_, va_;
  Layout layout_;
  std::vector<unsigned char> qs_, ks_, vs_;
};

// ----------------------------------------------------------------------------------------------------------
// Stage 1: pooling. Each pooled value is a sum of at most s terms in f32 (then divided by the count): its
// error is at most (s + 1) u times the same pooling of |x|.
void check_pooling(Runner& run, Buffer& ws) {
  const ref::Problem& p = run.problem();
  for (int li = 0; li < run.layout().steps; ++li) {
    const Level& lv = run.layout().level[li];
    const ref::Pooled want = ref::pool(p, lv.side), bound = ref::pool(run.abs_problem(), lv.side);
    const double gamma = double(lv.side + 1) * kU32;
    auto check = [&](const char* what, size_t offset, const std::vector<double>& r, const std::vector<double>& a) {
      const float* got = ws.at<float>(offset);
      int64_t bad = 0, worst = -1;
      for (size_t i = 0; i < r.size(); ++i) {
        if (std::isnan(r[i])) continue;  // a block of a poisoned slice
        if (!(std::fabs(got[i] - r[i]) <= gamma * a[i] + 1e-30)) {
          ++bad;
          if (worst < 0) worst = int64_t(i);
        }
      }
      INFO("level ", li + 1, " (side ", lv.side, ") ", what, ": first bad element ", worst,
           worst >= 0 ? " got " + std::to_string(got[worst]) + " want " + std::to_string(r[size_t(worst)]) : "");
      CHECK(bad == 0);
    };
    check("q mean", lv.qmean, want.q_mean, bound.q_mean);
    check("k mean", lv.kmean, want.k_mean, bound.k_mean);
    check("v sum", lv.vsum, want.v_sum, bound.v_sum);
    const float* qc = ws.at<float>(lv.qcount);
    const float* kc = ws.at<float>(lv.kcount);
    bool counts_ok = true;
    for (size_t i = 0; i < want.q_count.size(); ++i) counts_ok &= double(qc[i]) == double(want.q_count[i]);
    for (size_t i = 0; i < want.k_count.size(); ++i) counts_ok &= double(kc[i]) == double(want.k_count[i]);
    INFO("level ", li + 1, " token counts");
    CHECK(counts_ok);
  }
}

// ----------------------------------------------------------------------------------------------------------
// Stage 2: selection.

// The reference's view of the candidates of one level of one slice: flat index, priority, score (§2.4).
struct Candidates {
  std::vector<int64_t> flat;
  std::vector<int> priority;
  std::vector<double> score;
  std::vector<double> row_max;  // per block row, -inf when it has no candidate
};

int priority(const ref::Config& c, int li, int64_t r, int64_t col) {
  return li > 0 ? 0 : mra::order::level1_priority(r, col, c.prior_first, c.prior_diagonal);
}

Candidates candidates(const ref::Problem& p, const ref::Config& cfg, const ref::Pooled& pooled, int64_t b,
                      int64_t h, int li, int64_t rho, const std::vector<int64_t>* parents, int64_t parent_nk) {
  Candidates c;
  std::vector<std::pair<int64_t, int64_t>> pairs;
  if (li == 0) {
    for (int64_t r = 0; r < pooled.nq_blocks; ++r)
      for (int64_t col = 0; col < pooled.nk_blocks; ++col) pairs.push_back({r, col});
  } else {
    for (int64_t f : *parents)
      for (int64_t tr = 0; tr < rho; ++tr)
        for (int64_t tc = 0; tc < rho; ++tc) pairs.push_back({f / parent_nk * rho + tr, f % parent_nk * rho + tc});
  }
  std::vector<double> row_max(size_t(pooled.nq_blocks), -INFINITY), logit;
  std::vector<std::pair<int64_t, int64_t>> active;
  for (auto [r, col] : pairs) {
    if (r >= pooled.nq_blocks || col >= pooled.nk_blocks) continue;
    const double l = ref::coarse_logit(p, pooled, b, h, r, col);
    if (l == -INFINITY) continue;
    active.push_back({r, col});
    logit.push_back(l);
    row_max[size_t(r)] = std::max(row_max[size_t(r)], l);
  }
  for (size_t i = 0; i < active.size(); ++i) {
    const auto [r, col] = active[i];
    c.flat.push_back(r * pooled.nk_blocks + col);
    c.priority.push_back(priority(cfg, li, r, col));
    c.score.push_back(logit[i] - row_max[size_t(r)]);
  }
  c.row_max = row_max;
  return c;
}

// Bound on the error of a kernel selection score at one level, from the pooling of |q| and |k| (`abs_pooled`):
// each factor of a pooled logit carries (s + 1) u of its absolute pooling, the f32 dot product D u + u of
// sigma sum |q_d k_d| <= sigma |q|abs |k|abs; a score is the difference of two such logits.
double score_epsilon(const ref::Pooled& abs_pooled, int64_t dim, double scale) {
  const ref::Pooled& pooled = abs_pooled;
  double mq = 0, mk = 0;
  for (size_t i = 0; i < pooled.q_mean.size(); i += size_t(dim)) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += pooled.q_mean[i + size_t(d)] * pooled.q_mean[i + size_t(d)];
    mq = std::max(mq, std::sqrt(s));
  }
  for (size_t i = 0; i < pooled.k_mean.size(); i += size_t(dim)) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += pooled.k_mean[i + size_t(d)] * pooled.k_mean[i + size_t(d)];
    mk = std::max(mk, std::sqrt(s));
  }
  return 2.0 * scale * double(2 * pooled.side + dim + 4) * kU32 * mq * mk;
}

// The kernels' T_l of one slice (CSR: row offsets and sorted columns) as sorted flat indices.
std::vector<int64_t> kernel_refined(Buffer& ws, const Level& lv, int64_t slice) {
  const int32_t* rowptr = ws.at<int32_t>(lv.rowptr) + slice * (lv.nq + 1);
  const int32_t* col = ws.at<int32_t>(lv.col) + slice * lv.cap;
  std::vector<int64_t> flat;
  for (int32_t r = 0; r < lv.nq; ++r)
    for (int32_t t = rowptr[r]; t < rowptr[r + 1]; ++t) flat.push_back(int64_t(r) * lv.nk + col[t]);
  return flat;
}

// Compares the kernels' selection (in `ws`) with the reference's, level by level and slice by slice; returns
// the kernels' selection in the reference's form.
ref::Selection check_selection(Runner& run, Buffer& ws, const Case& c, int64_t dim, Report& report) {
  const ref::Problem& p = run.problem();
  const ref::Selection want = ref::select(p, c.config);
  const Layout& L = run.layout();
  ref::Selection got{c.batch, c.heads, L.steps, {}};
  got.refined.resize(size_t(c.batch * c.heads * L.steps));
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t slice = b * c.heads + h;
      const bool poisoned = std::count(c.bad_slices.begin(), c.bad_slices.end(), slice) > 0;
      bool comparable = !poisoned;
      for (int li = 0; li < L.steps; ++li) {
        const Level& lv = L.level[li];
        got.at(b, h, li) = kernel_refined(ws, lv, slice);
        INFO("slice ", slice, ", level ", li + 1, " (side ", lv.side, ")");
        // Sorted, in range, at most the budget (any set is ordered and nested by construction: checked by
        // ref::attend's validate_selection in the end-to-end stage).
        const auto& g = got.at(b, h, li);
        CHECK(std::is_sorted(g.begin(), g.end()));
        CHECK(int64_t(g.size()) <= lv.budget);
        if (poisoned) {  // §2.7: nothing is ranked in a slice with a non-finite real input
          CHECK(g.empty());
          continue;
        }
        if (!comparable) {
          ++report.levels_skipped;
          continue;
        }
        const ref::Pooled pooled = ref::pool(p, lv.side);
        const int64_t rho = li == 0 ? 0 : L.level[li - 1].side / lv.side;
        const Candidates cand = candidates(p, c.config, pooled, b, h, li, rho, li ? &want.at(b, h, li - 1) : nullptr,
                                           li ? L.level[li - 1].nk : 0);
        const double eps = score_epsilon(ref::pool(run.abs_problem(), lv.side), dim, run.scale());
        if (li == 0) {  // the level-1 row maxima (a logit carries half a score's error) and the candidates
          const float* rowmax = ws.at<float>(lv.rowmax) + slice * lv.nq;
          int64_t mismatched = 0;
          for (int32_t r = 0; r < lv.nq; ++r) {
            const double want_max = cand.row_max[size_t(r)];
            if (want_max == -INFINITY ? rowmax[r] != -INFINITY : !(std::fabs(rowmax[r] - want_max) <= eps / 2))
              ++mismatched;
          }
          const auto* state = ws.at<mra::kern::SelectState>(lv.state) + slice;
          INFO("level-1: ", state->candidates, " candidates in the kernel, ", cand.flat.size(),
               " in the reference; row maxima outside eps / 2 = ", eps / 2, ": ", mismatched);
          CHECK(state->candidates == cand.flat.size());
          CHECK(mismatched == 0);
        }
        // Rank the reference's candidates; the threshold is the last one it selected.
        std::vector<size_t> order(cand.flat.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(), [&](size_t x, size_t y) {
          return mra::order::ranks_before(cand.priority[x], cand.score[x], cand.flat[x], cand.priority[y],
                                          cand.score[y], cand.flat[y]);
        });
        const auto& w = want.at(b, h, li);
        CHECK(g.size() == w.size());
        if (g == w) {
          ++report.levels_compared;
          continue;
        }
        std::vector<int64_t> diff;
        std::set_symmetric_difference(g.begin(), g.end(), w.begin(), w.end(), std::back_inserter(diff));
        REQUIRE(!w.empty());  // the reference selected nothing, so the kernels had to select nothing too
        const size_t last = order[w.size() - 1];
        int64_t far = 0;
        for (int64_t f : diff) {
          const size_t i = size_t(std::find(cand.flat.begin(), cand.flat.end(), f) - cand.flat.begin());
          if (i == cand.flat.size() || cand.priority[i] != cand.priority[last] ||
              !(std::fabs(cand.score[i] - cand.score[last]) <= eps))
            ++far;
        }
        INFO(diff.size(), " pairs differ from the reference's selection; threshold score ", cand.score[last],
             ", eps ", eps);
        CHECK(far == 0);
        CHECK_FALSE(c.exact_ties);
        report.near_ties += int64_t(diff.size());
        comparable = false;  // deeper levels refine different blocks: compared end to end only
      }
    }
  }
  return got;
}

// Writes a selection into the workspace (CSR row offsets and sorted columns), as the selection kernels would.
void inject_selection(Buffer& ws, const Layout& L, const ref::Selection& s) {
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int li = 0; li < L.steps; ++li) {
        const Level& lv = L.level[li];
        const int64_t slice = b * s.heads + h;
        const auto& list = s.at(b, h, li);
        REQUIRE(int64_t(list.size()) <= lv.cap);
        int32_t* col = ws.at<int32_t>(lv.col) + slice * lv.cap;
        int32_t* rowptr = ws.at<int32_t>(lv.rowptr) + slice * (lv.nq + 1);
        for (size_t i = 0; i < list.size(); ++i) col[i] = int32_t(list[i] % lv.nk);
        for (int32_t r = 0; r <= lv.nq; ++r)
          rowptr[r] = int32_t(std::lower_bound(list.begin(), list.end(), int64_t(r) * lv.nk) - list.begin());
      }
}

// ----------------------------------------------------------------------------------------------------------
// Stage 3: the output. Tolerance (docs/kernels.md, "Tolerances"): every weight exp(logit - m) carries the
// logit error delta (exact logits: D u |q||k| sigma; coarse: the selection epsilon) plus expf's; the output,
// a weighted mean of values, moves by at most twice that relative error times max|v|, plus the f32
// accumulation over at most Nk + 2 s_1 terms; then it is rounded once to the storage type (rtol).
struct Tolerance {
  double atol, rtol;
};
Tolerance output_tolerance(const Runner& run, const Case& c, const Config& cfg, double selection_eps) {
  const ref::Problem& p = run.problem();
  auto max_norm = [&](const std::vector<float>& t) {
    double m = 0;
    for (size_t i = 0; i < t.size(); i += size_t(cfg.dim)) {
      double s = 0;
      for (int64_t d = 0; d < cfg.dim; ++d) s += double(t[i + size_t(d)]) * t[i + size_t(d)];
      if (std::isfinite(s)) m = std::max(m, std::sqrt(s));
    }
    return m;
  };
  double vmax = 0;
  for (float x : c.v)
    if (std::isfinite(x)) vmax = std::max(vmax, double(std::fabs(x)));
  const double exact_delta = run.scale() * double(cfg.dim + 2) * kU32 * max_norm(c.q) * max_norm(c.k);
  const double delta = std::max(exact_delta, selection_eps) + 4 * kU32;
  const double terms = double(p.nk + 2 * cfg.sides[0] + 8);
  return {2.0 * (2.0 * delta + terms * kU32) * vmax + 1e-30, unit_roundoff(cfg.dtype) + 2 * kU32};
}

// Returns the fraction of the tolerance used.
double check_output(const std::vector<float>& got, const std::vector<float>& want, const Case& c, const Config& cfg,
                    const Tolerance& tol, const char* what) {
  const auto cmp = mra::test::compare(got.data(), want.data(), int64_t(got.size()), tol.atol, tol.rtol,
                                      {c.batch, c.heads, c.nq, cfg.dim});
  INFO(what, ": ", cmp.report);
  CHECK(cmp.ok);
  return cmp.tolerance_used;
}

double selection_eps(const Runner& run, const Config& cfg) {
  double eps = 0;
  for (int li = 0; li < run.layout().steps; ++li)
    eps = std::max(eps, score_epsilon(ref::pool(run.abs_problem(), run.layout().level[li].side), cfg.dim, run.scale()));
  return eps;
}

void check_case(const Config& cfg, Case& c) {
  Runner run(cfg, c);
  INFO("case: ", c.what, " (B ", c.batch, ", H ", c.heads, ", Nq ", c.nq, ", Nk ", c.nk, ")");
  Report report;
  const double eps = selection_eps(run, cfg);
  const Tolerance tol = output_tolerance(run, c, cfg, eps);

  // Stages 1-2 in a poisoned workspace: the kernels initialize what they read, and write no refined pair
  // beyond the CSR total.
  Buffer ws(run.layout().bytes);
  std::memset(ws.data(), 0xa5, run.layout().bytes);
  run.run(ws, mra::kern::kStagePrepare);
  check_pooling(run, ws);
  const ref::Selection mine = check_selection(run, ws, c, cfg.dim, report);
  for (int64_t slice = 0; slice < c.batch * c.heads; ++slice)
    for (int li = 0; li < run.layout().steps; ++li) {
      const Level& lv = run.layout().level[li];
      const int32_t* col = ws.at<int32_t>(lv.col) + slice * lv.cap;
      const int32_t total = ws.at<int32_t>(lv.rowptr)[slice * (lv.nq + 1) + lv.nq];
      int64_t touched = 0;
      for (int32_t t = total; t < lv.cap; ++t) touched += uint32_t(col[t]) != 0xa5a5a5a5u;
      INFO("slice ", slice, ", level ", li + 1, ": refined-list entries written beyond the CSR total ", total);
      CHECK(touched == 0);
    }

  // Stage 3 on the reference's selection.
  const ref::Selection theirs = ref::select(run.problem(), c.config);
  inject_selection(ws, run.layout(), theirs);
  std::vector<float> want(run.out_elems());
  ref::attend(run.problem(), c.config, theirs, want.data());
  const double used_attend =
      check_output(run.run(ws, mra::kern::kStageAttend), want, c, cfg, tol, "attend on the reference's selection");

  // End to end, under two schedules: the same bits, and the reference's output on the kernels' selection.
  mra::test::set_schedule(0);
  Buffer ws2(run.layout().bytes);
  const std::vector<float> out = run.run(ws2, mra::kern::kStageAll);
  mra::test::set_schedule(1);
  Buffer ws3(run.layout().bytes);
  const std::vector<float> again = run.run(ws3, mra::kern::kStageAll);
  mra::test::set_schedule(0);
  CHECK(std::memcmp(out.data(), again.data(), out.size() * sizeof(float)) == 0);
  for (int64_t slice = 0; slice < c.batch * c.heads; ++slice)  // the selection is reproducible too
    for (int li = 0; li < run.layout().steps; ++li) {
      INFO("selection of slice ", slice, ", level ", li + 1, " under both schedules");
      const Level& lv = run.layout().level[li];
      CHECK(kernel_refined(ws2, lv, slice) == kernel_refined(ws, lv, slice));
      CHECK(kernel_refined(ws3, lv, slice) == kernel_refined(ws, lv, slice));
    }
  ref::attend(run.problem(), c.config, mine, want.data());
  const double used_e2e = check_output(out, want, c, cfg, tol, "end to end (reference on the kernels' selection)");
  CHECK(mra::test::norm2(c.k) > 0);
  CHECK(std::isfinite(mra::test::norm2(out)) == c.bad_slices.empty());
  if (c.bad_slices.empty()) CHECK(mra::test::norm2(out) > 0);

  MESSAGE(std::string(cfg.name), " / ", c.what, ": ", report.levels_compared, " slice-levels equal to the reference, ",
          report.near_ties, " near-tie pairs (score within ", eps, " of the threshold), ", report.levels_skipped,
          " skipped (poisoned slice or below a near tie); output atol ", tol.atol, ", rtol ", tol.rtol,
          ", tolerance used ", 100 * used_attend, "% (given selection), ", 100 * used_e2e, "% (end to end)");
}

// ----------------------------------------------------------------------------------------------------------
// The cases: sizes come from the configuration (block side s_1), small enough for the emulation.

ref::Config mra_config(const Config& cfg, int64_t nq, int64_t nk, int64_t blocks_per_row, ref::Mode mode,
                       int64_t first = 0, int64_t diagonal = 0) {
  ref::Config c;
  c.scales = cfg.sides;
  c.budgets = ref::budgets_from_blocks_per_row(cfg.sides, nq, nk, blocks_per_row);
  c.mode = mode;
  c.prior_first = first;
  c.prior_diagonal = diagonal;
  return c;
}

void run_config(const Config& cfg) {
  std::string why;
  if (!mra::test::available(&why)) {
    MESSAGE(std::string(cfg.name), " skipped: ", why);
    return;
  }
  const int64_t s1 = cfg.sides[0];
  uint64_t seed = 1469598103934665603u;  // FNV-1a of the name: a fixed seed per configuration, on any platform
  for (const char* ch = cfg.name; *ch; ++ch) seed = (seed ^ uint64_t(uint8_t(*ch))) * 1099511628211u;
  Rng rng(seed);
  INFO("seed ", seed);
  SUBCASE("random, length not a multiple of s_1") {
    Case c;
    c.what = "random";
    c.heads = 2;
    c.nq = c.nk = 4 * s1 + 3;
    c.q = mra::test::noise(rng, 1, 2, c.nq, cfg.dim);
    c.k = mra::test::noise(rng, 1, 2, c.nk, cfg.dim);
    c.v = mra::test::noise(rng, 1, 2, c.nk, cfg.dim);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full);
    check_case(cfg, c);
  }
  SUBCASE("structured cross-attention, masks, priors, empty rows") {
    Case c;
    c.what = "structured";
    c.batch = 2;
    c.nq = 3 * s1 + 7;
    c.nk = 4 * s1 + 1;
    auto st = mra::synthetic::structured(2, 1, c.nq, c.nk, cfg.dim, rng.seed() + 1);
    c.q = st.q;
    c.k = st.k;
    c.v = st.v;
    // Batch 0: padded queries covering the whole last block and a few keys; batch 1: no real key at all.
    c.qmask = mra::test::padding_mask(2, c.nq, {s1 + 5, 0});
    c.kmask = mra::test::random_mask(rng, 2, c.nk, 0.8);
    std::fill(c.kmask.begin() + c.nk, c.kmask.end(), 0);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 3);
    check_case(cfg, c);
  }
  SUBCASE("sparse mode") {
    Case c;
    c.what = "sparse";
    c.nq = 3 * s1 + 1;
    c.nk = 3 * s1 + 1;
    auto st = mra::synthetic::structured(1, 1, c.nq, c.nk, cfg.dim, rng.seed() + 2);
    c.q = st.q;
    c.k = st.k;
    c.v = st.v;
    c.config = mra_config(cfg, c.nq, c.nk, 1, ref::Mode::sparse);
    check_case(cfg, c);
  }
  SUBCASE("exact ties: zero queries, the order is priority then flat index") {
    Case c;
    c.what = "ties";
    c.nq = 3 * s1 + 5;
    c.nk = 5 * s1 - 3;
    c.q.assign(size_t(c.nq * cfg.dim), 0.f);
    c.k = mra::test::noise(rng, 1, 1, c.nk, cfg.dim);
    c.v = mra::test::noise(rng, 1, 1, c.nk, cfg.dim);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 1);
    c.exact_ties = true;
    check_case(cfg, c);
  }
  SUBCASE("non-finite input in a real token poisons its slice only") {
    Case c;
    c.what = "non-finite";
    c.heads = 2;
    c.nq = c.nk = 2 * s1 + 3;
    c.q = mra::test::noise(rng, 1, 2, c.nq, cfg.dim);
    c.k = mra::test::noise(rng, 1, 2, c.nk, cfg.dim);
    c.v = mra::test::noise(rng, 1, 2, c.nk, cfg.dim);
    c.kmask = mra::test::padding_mask(1, c.nk, {2});
    c.v[size_t((c.nk + 5) * cfg.dim + 1)] = NAN;           // head 1, real key 5
    c.k[size_t((c.nk - 1) * cfg.dim + 3)] = INFINITY;      // head 0, padded key: never read
    c.bad_slices = {1};
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full);
    check_case(cfg, c);
  }
}

// Long context (docs/kernels.md, "Selection"): sizes where the level-1 selection spans several 64-row bands and
// 64-column tiles and the radix passes decide the threshold, for the configurations this build has
// (`-DMRA_KERNELS`); a case whose configuration is not built says so and passes nothing off as checked.
std::optional<Config> built(const std::string& name) {
#define MRA_CONFIG(cname, dtype, dim, levels, s1, s2, s3, s4)                                    \
  if (name == #cname) {                                                                          \
    const std::vector<int64_t> all{s1, s2, s3, s4};                                              \
    return Config{#cname, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels)}; \
  }
#include "registry.inc"
#undef MRA_CONFIG
  return std::nullopt;
}

// kind 0: structured inputs with priors; 1: every score 0 and no priors, so every candidate ties and the flat
// index alone decides (the quota ends inside a row); 2: random, two heads, a key mask, sparse mode.
void run_long(const char* name, int64_t n, int64_t blocks_per_row, int kind) {
  std::string why;
  const std::optional<Config> cfg = built(name);
  if (!cfg || !mra::test::available(&why)) {
    MESSAGE(name, " not built or no backend (", why, "): long-context case skipped");
    return;
  }
  Rng rng(0x6c6f6e67u + uint64_t(n));
  INFO("seed ", rng.seed());
  Case c;
  c.nq = c.nk = n;
  if (kind == 0) {
    c.what = "long structured";
    auto st = mra::synthetic::structured(1, 1, n, n, cfg->dim, rng.seed());
    c.q = st.q;
    c.k = st.k;
    c.v = st.v;
    c.config = mra_config(*cfg, n, n, blocks_per_row, ref::Mode::full, 2, 3);
  } else if (kind == 1) {
    c.what = "long ties";
    c.q.assign(size_t(n * cfg->dim), 0.f);
    c.k = mra::test::noise(rng, 1, 1, n, cfg->dim);
    c.v = mra::test::noise(rng, 1, 1, n, cfg->dim);
    c.config = mra_config(*cfg, n, n, blocks_per_row, ref::Mode::full);  // no priors: one tie class
    c.exact_ties = true;
  } else {
    c.what = "long random";
    c.heads = 2;
    c.q = mra::test::noise(rng, 1, 2, n, cfg->dim);
    c.k = mra::test::noise(rng, 1, 2, n, cfg->dim);
    c.v = mra::test::noise(rng, 1, 2, n, cfg->dim);
    c.kmask = mra::test::random_mask(rng, 1, n, 0.9);
    c.config = mra_config(*cfg, n, n, blocks_per_row, ref::Mode::sparse);
  }
  check_case(*cfg, c);
}

}  // namespace

#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4)                                   \
  TEST_CASE(#name) {                                                                           \
    const std::vector<int64_t> all{s1, s2, s3, s4};                                            \
    run_config(Config{#name, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels)}); \
  }
#include "registry.inc"
#undef MRA_CONFIG

TEST_CASE("long context: level-1 selection over many bands and column tiles") {
  run_long("mra_fwd_r32x1_d64_f32", 4099, 4, 0);
  run_long("mra_fwd_r32x1_d64_f32", 4099, 3, 1);
  run_long("mra_fwd_r32x1_d64_f32", 2500, 6, 2);
  run_long("mra_fwd_r16x4x1_d32_bf16", 2051, 4, 0);
  run_long("mra_fwd_r16x4x1_d32_bf16", 1500, 2, 2);
}

TEST_CASE("long context: N = 65536 end to end") { run_long("mra_fwd_r32x1_d32_f32", 65536, 4, 0); }

// One million tokens (R = (32, 1), B = H = 1, D = 64, 4 blocks per row): the kernels accept it, the workspace is
// O(N D / s_1 + budgets + histogram) and every index the kernels form fits its type.
TEST_CASE("long context: workspace and index ranges at N = 2^20") {
  auto problem = [](int64_t n) {
    mra_problem p{};
    p.batch = p.heads = 1;
    p.nq = p.nk = n;
    p.dim = 64;
    p.dtype = MRA_DTYPE_F32;
    p.levels = 2;
    p.resolutions[0] = 32;
    p.resolutions[1] = 1;
    p.budgets[0] = 4 * (n / 32);
    p.mode = MRA_MODE_FULL;
    return p;
  };
  const int64_t n = int64_t(1) << 20;
  const mra_problem p = problem(n);
  Layout L;
  REQUIRE(mra::kern::make_layout(p, &L) == MRA_SUCCESS);
  size_t bytes = 0;
  REQUIRE(mra_workspace_size(&p, &bytes) == MRA_SUCCESS);
  CHECK(bytes == L.bytes);
  const Level& l1 = L.level[0];
  CHECK(l1.nq == 32768);
  CHECK(l1.nk == 32768);
  CHECK(l1.slots == int64_t(1) << 30);  // pairs, never stored
  CHECK(l1.cap == 131072);
  CHECK(l1.keys == 0);                  // no key array at level 1
  // Pooled q, k, v (3 n D f32); per block row or column 40 bytes (counts, row offsets, row maxima, per-row
  // counts, tie bases, block flags); the histogram; the refined columns; the selection state and slice flag:
  // about 26.9 MB. The (N/32)^2 keys of a stored level 1 would be 8 GiB.
  const double pooled = 3.0 * 32768 * 64 * 4, rest = 32768.0 * 40 + 8 * 4096 + 4.0 * 131072 + 32 + 4;
  INFO("workspace ", bytes, " bytes, pooled values ", pooled);
  CHECK(double(bytes) >= pooled + rest);
  CHECK(double(bytes) <= pooled + rest + 64 * 256);  // the rest is alignment padding
  // Linear in N: twice the tokens, twice the workspace (not four times).
  size_t half = 0;
  const mra_problem q = problem(n / 2);
  REQUIRE(mra_workspace_size(&q, &half) == MRA_SUCCESS);
  CHECK(double(bytes) / double(half) < 2.01);
  // Indices: columns and CSR offsets are int32, the largest column is nk - 1 and the list holds cap pairs; the
  // rank value's tie counts are 64-bit; slices * nq * D stays far from 2^63.
  CHECK(int64_t(l1.nk) - 1 <= INT32_MAX);
  CHECK(int64_t(l1.cap) <= INT32_MAX);
  CHECK(64 * int64_t(l1.nk) < (int64_t(1) << 32));  // a 64-row band's histogram counts in 32 bits
}
