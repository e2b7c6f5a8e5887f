// tests/kernels/test_kernels.cpp: every generated configuration, run on the CPU emulation, against the reference.
//   cmake --build build -j && ctest --test-dir build -L kernels          (two test cases per configuration)
//   build/tests/kernels/test_kernels -tc=mra_fwd_r32x1_d64_bf16          (the small cases of one configuration)
//   build/tests/kernels/test_kernels -tc='mra_fwd_r32x1_d64_bf16 production'   (its production-size case)
//
// Stage by stage (docs/kernels.md, "Cross-checks"): pooled means, sums and counts; the level-1 row maxima of
// the pooled logits and the number of candidates; the refined blocks of every level against §2.4 applied to the kernels' own parents (a difference
// only between pairs whose reference score lies within the derived epsilon of the threshold, and counted); the
// output given the reference's selection; and end to end against the reference on its own selection (on the
// kernels' selection only in a slice where a near tie was counted). The output tolerance is calibrated: a
// plain f32 implementation (naive_f32.h) measures the error f32 arithmetic alone makes on the case, and the
// kernels may make a small multiple of it, never more than the derived worst-case bound. f16/bf16 inputs are
// rounded before the reference sees them. Outputs and workspaces are poisoned before each run.
#include "common/doctest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "backend.h"
#include "common/check.h"
#include "common/inputs.h"
#include "common/problem.h"
#include "common/skip.h"
#include "common/storage.h"
#include "common/strided.h"
#include "kernels/entry.h"
#include "kernels/layout.h"
#include "kernels/order.h"
#include "mra.h"
#include "mra/reference.h"
#include "naive_f32.h"

namespace {

using mra::kern::Layout;
using mra::kern::Level;
namespace ref = mra::ref;
using mra::test::Rng;
using mra::test::elem_size;
using mra::test::from_storage;
using mra::test::poison;
using mra::test::to_storage;
using mra::test::unit_roundoff;

constexpr double kU32 = 0x1.0p-24;  // unit roundoff of f32

// The calibrated output tolerance (docs/kernels.md, "Tolerances"): the kernels' error may be this multiple of
// the plain f32 implementation's, plus kFloorUlps f32 unit roundoffs of max|v|.
constexpr double kNaiveMultiple = 2.0;
constexpr double kFloorUlps = 4.0;

// How q, k, v and out lie in memory (docs/semantics.md §8): contiguous [B, H, N, D]; FlashAttention's
// [B, N, H, D]; or q, k, v with rows padded beyond D and gaps between heads (strides multiples of 16 bytes) and
// out in [B, N, H, D], so that no tensor shares another's strides.
enum class Storage { contiguous, bnhd, padded };

struct Case {
  std::string what;
  int64_t batch = 1, heads = 1, nq = 0, nk = 0;
  int64_t heads_kv = 0;  // §8: K/V heads (0: heads); k and v then hold [batch, heads_kv, nk, D]
  Storage storage = Storage::contiguous;
  bool causal = false;   // §9 (needs policy row)
  std::vector<float> q, k, v;
  std::vector<uint8_t> qmask, kmask;  // empty: all real
  ref::Config config;
  std::vector<int64_t> bad_slices;   // slices holding a non-finite value in a real token
  bool exact_ties = false;           // ties are exact in f32 and double alike: the selection must equal §2.4's
  bool near_ties = false;            // scores lie within the epsilon of a threshold (a production case checks it)
  bool production = false;           // one end-to-end run (no second schedule); the given-selection run only
                                     // when a near tie made the selections differ
  int64_t select_chunk = 0;          // levels l >= 2, global policy: slots per selection CTA (0: the layout's);
                                     // when set, every slice that is not poisoned must span more than 4 chunks
};

// The elements of a contiguous [B, H, N, D] tensor (`bytes`, `es` bytes each) placed with strides `s` into a
// buffer of the strides' span; positions no index reaches hold 0xff bytes (NaN in every dtype), so a kernel
// reading one would show it. Strides all zero: the bytes as they are.
std::vector<unsigned char> restride(const std::vector<unsigned char>& bytes, size_t es,
                                    const mra::test::Strides4& extent, const mra::test::Strides4& s) {
  if (s == mra::test::Strides4{}) return bytes;
  std::vector<unsigned char> out(size_t(mra::test::span_of(s, extent)) * es, 0xff);
  size_t t = 0;
  for (int64_t b = 0; b < extent[0]; ++b)
    for (int64_t h = 0; h < extent[1]; ++h)
      for (int64_t i = 0; i < extent[2]; ++i, t += size_t(extent[3]))
        std::memcpy(&out[size_t(b * s[0] + h * s[1] + i * s[2]) * es], &bytes[t * es], size_t(extent[3]) * es);
  return out;
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

// The measured facts of one case, printed at the end.
struct Report {
  int64_t near_ties = 0, levels_checked = 0, slices = 0, slices_agreeing = 0;
  // What the case exercised, so that a production case cannot shrink into a small one unnoticed: the most
  // candidates in one block row and the most refined blocks in one block row (any level), and the candidates
  // tied exactly with a level's threshold on either side of it (a tie the budget cuts through).
  // And the candidates within the epsilon of a threshold without tying it exactly (near ties).
  int64_t max_row_candidates = 0, max_row_refined = 0, ties_cut = 0, near_threshold = 0;
};

class Runner {
 public:
  Runner(const Config& cfg, Case& c) : cfg_(cfg), c_(c) {
    problem_ = mra::test::mra_problem_of(c.config, c.batch, c.heads, c.nq, c.nk, cfg.dim, cfg.dtype, 0.0, c.heads_kv);
    problem_.causal = c.causal;
    const int64_t hkv = c.heads_kv ? c.heads_kv : c.heads, es = int64_t(elem_size(cfg.dtype));
    q_extent_ = {c.batch, c.heads, c.nq, cfg.dim};
    kv_extent_ = {c.batch, hkv, c.nk, cfg.dim};
    if (c.storage == Storage::bnhd) {
      q_strides_ = out_strides_ = mra::test::bnhd_strides(c.heads, c.nq, cfg.dim);
      kv_strides_ = mra::test::bnhd_strides(hkv, c.nk, cfg.dim);
    } else if (c.storage == Storage::padded) {  // rows and heads 16-byte aligned, as §8 requires of the kernels
      q_strides_ = mra::test::padded_strides(c.heads, c.nq, cfg.dim, 3, 40, 16 / es);
      kv_strides_ = mra::test::padded_strides(hkv, c.nk, cfg.dim, 5, 24, 16 / es);
      out_strides_ = mra::test::bnhd_strides(c.heads, c.nq, cfg.dim);
    }
    for (int d = 0; d < 4; ++d) {
      problem_.strides.q[d] = q_strides_[size_t(d)];
      problem_.strides.out[d] = out_strides_[size_t(d)];
      problem_.strides.k[d] = problem_.strides.v[d] = kv_strides_[size_t(d)];
    }
    qs_ = restride(to_storage(c.q, cfg.dtype), size_t(es), q_extent_, q_strides_);
    ks_ = restride(to_storage(c.k, cfg.dtype), size_t(es), kv_extent_, kv_strides_);
    vs_ = restride(to_storage(c.v, cfg.dtype), size_t(es), kv_extent_, kv_strides_);
    p_ = ref::Problem::of(c.batch, c.heads, c.nq, c.nk, cfg.dim, c.q.data(), c.k.data(), c.v.data(),
                          c.qmask.empty() ? nullptr : c.qmask.data(), c.kmask.empty() ? nullptr : c.kmask.data());
    p_.heads_kv = c.heads_kv;
    p_.causal = c.causal;
    // The plain f32 implementation knows one K/V head per head: it gets the K/V heads copied to their groups.
    k_full_ = mra::test::repeat_heads(c.k, c.batch, hkv, c.nk, cfg.dim, c.heads / hkv);
    v_full_ = mra::test::repeat_heads(c.v, c.batch, hkv, c.nk, cfg.dim, c.heads / hkv);
    pn_ = p_;
    pn_.heads_kv = 0;
    pn_.k = k_full_.data();
    pn_.v = v_full_.data();
    for (auto [from, to] : {std::pair{&c.q, &qa_}, {&c.k, &ka_}, {&c.v, &va_}}) {
      *to = *from;
      for (float& x : *to) x = std::fabs(x);
    }
    pa_ = p_;
    pa_.q = qa_.data();
    pa_.k = ka_.data();
    pa_.v = va_.data();
    // The workspace is allocated at the API's size; the layout gives the offsets the checks read.
    REQUIRE(mra::kern::make_layout(problem_, &layout_) == MRA_SUCCESS);
    REQUIRE(mra_workspace_size(&problem_, &ws_bytes_) == MRA_SUCCESS);
    if (c.select_chunk > 0)
      for (int li = 1; li < layout_.steps; ++li) mra::kern::set_select_chunk(layout_.level[li], c.select_chunk);
  }

  // A workspace filled with 0xff bytes (NaN floats, -1 indices, the largest keys), so that whatever a kernel
  // reads before any kernel wrote it shows in the results.
  Buffer workspace() const {
    Buffer ws(ws_bytes_);
    std::memset(ws.data(), 0xff, ws_bytes_);
    return ws;
  }

  const ref::Problem& problem() const { return p_; }
  // The same problem with one K/V head per query head (copies), for the plain f32 implementation.
  const ref::Problem& naive_problem() const { return pn_; }
  // The same problem on |q|, |k|, |v|: its pooled values bound the rounding errors of the pooled values.
  const ref::Problem& abs_problem() const { return pa_; }
  size_t out_elems() const { return size_t(c_.batch * c_.heads * c_.nq * cfg_.dim); }

  // Runs the given stages on `ws` into a poisoned output (stored with its strides); returns the output rounded
  // to float, contiguous. An element of the output's buffer that no index reaches must keep its poison.
  std::vector<float> run(Buffer& ws, unsigned stages) {
    const size_t es = elem_size(cfg_.dtype);
    const bool strided = out_strides_ != mra::test::Strides4{};
    const size_t out_span = strided ? size_t(mra::test::span_of(out_strides_, q_extent_)) : out_elems();
    Buffer q(qs_.size()), k(ks_.size()), v(vs_.size()), out(out_span * es);
    std::memcpy(q.data(), qs_.data(), qs_.size());
    std::memcpy(k.data(), ks_.data(), ks_.size());
    std::memcpy(v.data(), vs_.data(), vs_.size());
    poison(out.data(), out_span, cfg_.dtype);
    const mra::test::Tensors t{q.data(), k.data(), v.data(), qs_.size(), ks_.size(), p_.query_mask, p_.key_mask};
    std::string error;
    const mra_status s =
        mra::test::run_stages(problem_, t, out.data(), out_span * es, ws.data(), ws_bytes_, stages, &error);
    INFO("run failed: ", error);
    REQUIRE(s == MRA_SUCCESS);
    const std::vector<float> all = from_storage(out.data(), cfg_.dtype, out_span);
    if (!strided) return all;
    std::vector<unsigned char> one(es);
    poison(one.data(), 1, cfg_.dtype);
    CHECK(mra::test::written_outside(all, q_extent_, out_strides_, from_storage(one.data(), cfg_.dtype, 1)[0]) == 0);
    return mra::test::gather(all, q_extent_, out_strides_);
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
  size_t ws_bytes_ = 0;
  std::vector<unsigned char> qs_, ks_, vs_;
  std::vector<float> k_full_, v_full_;
  ref::Problem pn_;
  mra::test::Strides4 q_extent_{}, kv_extent_{}, q_strides_{}, kv_strides_{}, out_strides_{};
};

// The reference's pooling of every coarse level, of the inputs and of their absolute values (which bound the
// rounding errors), and each level's selection-score epsilon; computed once per case.
// With a selection shared by groups of heads (§8.4), `ranked` holds the pooling the selection ranks: every head's
// pooled query replaced by its group's mean (else it is `pooled`).
struct Levels {
  std::vector<ref::Pooled> pooled, abs, ranked;
  std::vector<double> eps;
};

// Bound on the error of a kernel selection score at one level, from the pooling of |q| and |k| (`abs_pooled`):
// each factor of a pooled logit carries (s + 1) u of its absolute pooling, the f32 dot product D u + u of
// sigma sum |q_d k_d| <= sigma |q|abs |k|abs; a score is the difference of two such logits.
// A group's mean pooled query (§8.4) adds the f32 rounding of a sum of `group` means (group u relative to the mean
// of their absolute values; the division by a power of two is exact), counted as `group` more terms.
double score_epsilon(const ref::Pooled& abs_pooled, int64_t dim, double scale, int64_t group) {
  const ref::Pooled& pooled = abs_pooled;
  double mq = 0, mk = 0;
  for (size_t i = 0; i < pooled.q_mean.size(); i += size_t(dim)) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += pooled.q_mean[i + size_t(d)] * pooled.q_mean[i + size_t(d)];
    if (std::isfinite(s)) mq = std::max(mq, std::sqrt(s));
  }
  for (size_t i = 0; i < pooled.k_mean.size(); i += size_t(dim)) {
    double s = 0;
    for (int64_t d = 0; d < dim; ++d) s += pooled.k_mean[i + size_t(d)] * pooled.k_mean[i + size_t(d)];
    if (std::isfinite(s)) mk = std::max(mk, std::sqrt(s));
  }
  return 2.0 * scale * double(2 * pooled.side + dim + 4 + 2 * group) * kU32 * mq * mk;
}

// The pooled queries of every head replaced by the mean over its group of `heads / heads_kv` heads (§8.4).
ref::Pooled group_mean(const ref::Pooled& pooled, const ref::Problem& p) {
  ref::Pooled out = pooled;
  const int64_t group = p.heads / p.kv_heads(), row = pooled.nq_blocks * p.dim;
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t e = 0; e < row; ++e) {
        double sum = 0.0;
        for (int64_t t = h - h % group; t < h - h % group + group; ++t) sum += pooled.q_mean[size_t((b * p.heads + t) * row + e)];
        out.q_mean[size_t((b * p.heads + h) * row + e)] = sum / double(group);
      }
  return out;
}

Levels pool_levels(const Runner& run, int64_t dim) {
  Levels L;
  const bool shared = run.layout().shared != 0;
  const ref::Problem& p = run.problem();
  const int64_t group = shared ? p.heads / p.kv_heads() : 0;
  for (int li = 0; li < run.layout().steps; ++li) {
    const int64_t side = run.layout().level[li].side;
    L.pooled.push_back(ref::pool(p, side));
    L.abs.push_back(ref::pool(run.abs_problem(), side));
    L.ranked.push_back(shared ? group_mean(L.pooled.back(), p) : L.pooled.back());
    L.eps.push_back(score_epsilon(shared ? group_mean(L.abs.back(), p) : L.abs.back(), dim, run.scale(), group));
  }
  return L;
}

// ----------------------------------------------------------------------------------------------------------
// Stage 1: pooling. Each pooled value is a sum of at most s terms in f32 (then divided by the count): its
// error is at most (s + 1) u times the same pooling of |x|.
void check_pooling(const Runner& run, const Levels& levels, Buffer& ws) {
  for (int li = 0; li < run.layout().steps; ++li) {
    const Level& lv = run.layout().level[li];
    const ref::Pooled& want = levels.pooled[size_t(li)];
    const ref::Pooled& bound = levels.abs[size_t(li)];
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

// The candidates of one level of one slice (§2.5) as the reference scores them (§2.4), in the order of §2.4.
struct Candidates {
  std::vector<int64_t> flat;
  std::vector<int> priority;
  std::vector<double> score;
  std::vector<size_t> ranked;   // indices into the above, best first
  std::vector<double> row_max;  // per block row, -inf when it has no candidate
  std::vector<int64_t> forced;  // causal attention (§9.3): the active crossing pairs, refined besides the budget
};

// The candidates of level li of slice (b, h): every active pair at level 1, else the active children of
// `parents` (the refined pairs of level li - 1, `parent_nk` blocks per row, side ratio rho). Under causal
// attention (§9.3) only the visible ones; the crossing ones are forced, the future ones dropped.
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
    const int place = p.causal ? mra::order::causal_place(r, col, pooled.side, p.nq, p.nk) : int(mra::order::kVisible);
    if (place == mra::order::kCrossing) c.forced.push_back(r * pooled.nk_blocks + col);
    if (place != mra::order::kVisible) continue;
    active.push_back({r, col});
    logit.push_back(l);
    row_max[size_t(r)] = std::max(row_max[size_t(r)], l);
  }
  for (size_t i = 0; i < active.size(); ++i) {
    const auto [r, col] = active[i];
    c.flat.push_back(r * pooled.nk_blocks + col);
    c.priority.push_back(li > 0 ? 0 : mra::order::level1_priority(r, col, cfg.prior_first, cfg.prior_diagonal));
    c.score.push_back(logit[i] - row_max[size_t(r)]);
    c.ranked.push_back(i);
  }
  c.row_max = row_max;
  std::sort(c.ranked.begin(), c.ranked.end(), [&](size_t x, size_t y) {
    return mra::order::ranks_before(c.priority[x], c.score[x], c.flat[x], c.priority[y], c.score[y], c.flat[y]);
  });
  return c;
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

// The level-1 row maxima of a slice (a logit carries half a score's error) and, when `counted` (policy global),
// its number of candidates, against the reference's.
void check_level1_state(Buffer& ws, const Level& lv, int64_t slice, const Candidates& cand, double eps,
                        bool counted) {
  const float* rowmax = ws.at<float>(lv.rowmax) + slice * lv.nq;
  int64_t mismatched = 0;
  for (int32_t r = 0; r < lv.nq; ++r) {
    const double want_max = cand.row_max[size_t(r)];
    if (want_max == -INFINITY ? rowmax[r] != -INFINITY : !(std::fabs(rowmax[r] - want_max) <= eps / 2)) ++mismatched;
  }
  // The state after the last radix pass's pick (one per pass and slice).
  const auto* state = ws.at<mra::kern::SelectState>(lv.state) + slice * mra::kern::kPasses + mra::kern::kPasses - 1;
  INFO("level-1: ", state->candidates, " candidates in the kernel, ", cand.flat.size(),
       " in the reference; row maxima outside eps / 2 = ", eps / 2, ": ", mismatched);
  if (counted) CHECK(state->candidates == cand.flat.size());  // the global radix select counts them (§2.4)
  CHECK(mismatched == 0);
}

// The kernels' selection (in `ws`), and per slice whether it equals the reference's at every level.
struct KernelSelection {
  ref::Selection got;
  std::vector<bool> agrees;
};

// Checks every level of every slice against §2.4 applied to the kernels' own refined pairs of the level above
// (so each level is checked, also below a level where a near tie made the kernels refine other blocks): the
// refined set must be the first min(budget, candidates) candidates in the order of §2.4, except for pairs
// whose reference score lies within the level's epsilon of the threshold (the last pair taken), at the
// threshold's priority; those are counted. A poisoned slice must select nothing (§2.7).
KernelSelection check_selection(const Runner& run, const Levels& levels, Buffer& ws, const Case& c,
                                const ref::Selection& want, Report& report) {
  const ref::Problem& p = run.problem();
  const Layout& L = run.layout();
  const Layout G = L.shared ? mra::kern::group_layout(run.api_problem(), L) : L;
  KernelSelection out{{c.batch, c.heads, L.steps, {}}, std::vector<bool>(size_t(c.batch * c.heads), true)};
  out.got.refined.resize(size_t(c.batch * c.heads * L.steps));
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h) {
      const int64_t slice = b * c.heads + h;
      const bool poisoned = std::count(c.bad_slices.begin(), c.bad_slices.end(), slice) > 0;
      ++report.slices;
      for (int li = 0; li < L.steps; ++li) {
        const Level& lv = L.level[li];
        std::vector<int64_t>& g = out.got.at(b, h, li);
        g = kernel_refined(ws, lv, slice);
        INFO("slice ", slice, ", level ", li + 1, " (side ", lv.side, ")");
        CHECK(std::is_sorted(g.begin(), g.end()));
        CHECK(std::adjacent_find(g.begin(), g.end()) == g.end());
        if (g != want.at(b, h, li)) out.agrees[size_t(slice)] = false;
        if (poisoned) {  // §2.7: nothing is ranked in a slice with a non-finite real input
          CHECK(g.empty());
          continue;
        }
        const int64_t rho = li == 0 ? 0 : L.level[li - 1].side / lv.side;
        const Candidates cand = candidates(p, c.config, levels.ranked[size_t(li)], b, h, li, rho,
                                           li ? &out.got.at(b, h, li - 1) : nullptr, li ? L.level[li - 1].nk : 0);
        const double eps = levels.eps[size_t(li)];
        // A shared selection (§8.4) is made in the group region, on slice (batch, K/V head), for every head alike.
        if (li == 0 && L.shared)
          check_level1_state(ws, G.level[0], b * p.kv_heads() + h / (p.heads / p.kv_heads()), cand, eps,
                             c.config.policy == ref::Policy::global);
        else if (li == 0)
          check_level1_state(ws, lv, slice, cand, eps, c.config.policy == ref::Policy::global);
        if (L.shared && h % (p.heads / p.kv_heads()) != 0) {  // every head of a group has the group's T_l
          INFO("head ", h, " against the first head of its group");
          CHECK(g == out.got.at(b, h - h % (p.heads / p.kv_heads()), li));
        }
        // §2.4 (policy global): the first min(budget, candidates) of the slice in rank order; §10 (policy row): of
        // every block row. `group` is the slice (global) or a candidate's block row (row); per group the last
        // candidate taken and the first one not taken mark its threshold.
        const int64_t budget = c.config.budgets[size_t(li)];
        const bool by_row = c.config.policy == ref::Policy::row;
        const auto group = [&](size_t i) { return by_row ? size_t(cand.flat[i] / lv.nk) : size_t(0); };
        constexpr size_t kNone = ~size_t(0);
        std::vector<int64_t> taken(size_t(lv.nq) + 1, 0);
        std::vector<size_t> last(size_t(lv.nq) + 1, kNone), next(size_t(lv.nq) + 1, kNone);
        std::vector<int64_t> expected = cand.forced;
        for (size_t i : cand.ranked) {
          const size_t gi = group(i);
          if (taken[gi] < budget) {
            expected.push_back(cand.flat[i]);
            ++taken[gi];
            last[gi] = i;
          } else if (next[gi] == kNone) {
            next[gi] = i;
          }
        }
        std::sort(expected.begin(), expected.end());
        std::vector<int64_t> per_row(size_t(lv.nq)), refined_per_row(size_t(lv.nq));
        for (int64_t f : cand.flat) ++per_row[size_t(f / lv.nk)];
        for (int64_t f : expected) ++refined_per_row[size_t(f / lv.nk)];
        report.max_row_candidates = std::max(report.max_row_candidates, *std::max_element(per_row.begin(), per_row.end()));
        report.max_row_refined =
            std::max(report.max_row_refined, *std::max_element(refined_per_row.begin(), refined_per_row.end()));
        for (size_t gi = 0; gi < last.size(); ++gi) {
          if (last[gi] == kNone || next[gi] == kNone) continue;
          if (cand.priority[last[gi]] == cand.priority[next[gi]] && cand.score[last[gi]] == cand.score[next[gi]])
            ++report.ties_cut;
          for (size_t i = 0; i < cand.flat.size(); ++i)
            report.near_threshold += group(i) == gi && i != last[gi] && cand.priority[i] == cand.priority[last[gi]] &&
                                     cand.score[i] != cand.score[last[gi]] &&
                                     std::fabs(cand.score[i] - cand.score[last[gi]]) <= eps;
        }
        ++report.levels_checked;
        CHECK(g.size() == expected.size());
        if (g == expected) continue;
        std::vector<int64_t> diff;
        std::set_symmetric_difference(g.begin(), g.end(), expected.begin(), expected.end(), std::back_inserter(diff));
        INFO(diff.size(), " pairs differ from the selection of ", by_row ? "§10" : "§2.4");
        int64_t far = 0;
        for (int64_t f : diff) {
          const size_t i = size_t(std::find(cand.flat.begin(), cand.flat.end(), f) - cand.flat.begin());
          const size_t at = i == cand.flat.size() ? kNone : last[group(i)];
          if (at == kNone || cand.priority[i] != cand.priority[at] || !(std::fabs(cand.score[i] - cand.score[at]) <= eps))
            ++far;
        }
        CHECK(far == 0);
        CHECK_FALSE(c.exact_ties);
        report.near_ties += int64_t(diff.size());
      }
      report.slices_agreeing += out.agrees[size_t(slice)];
    }
  return out;
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
// Stage 3: the output.
struct Tolerance {
  double atol, rtol;
};

// The derived worst-case bound, the outer cap (docs/kernels.md, "Tolerances"): every weight exp(logit - m)
// carries the logit error delta (exact logits: D u |q||k| sigma; coarse: the selection epsilon) plus expf's;
// the output, a weighted mean of values, moves by at most twice that relative error times max|v|, plus the f32
// accumulation over at most Nk + 2 s_1 terms; then it is rounded once to the storage type (rtol).
Tolerance derived_bound(const Runner& run, const Case& c, const Config& cfg, const Levels& levels) {
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
  const double selection_eps = *std::max_element(levels.eps.begin(), levels.eps.end());
  // D + 3 roundings of a logit: the dot product, the scale, and (tensor-core path) the factor log2 e of its
  // base-2 exponential.
  const double exact_delta = run.scale() * double(cfg.dim + 3) * kU32 * max_norm(c.q) * max_norm(c.k);
  const double delta = std::max(exact_delta, selection_eps) + 4 * kU32;
  const double terms = double(p.nk + 2 * cfg.sides[0] + 8);
  // f16/bf16 (tensor cores): P is rounded to the dtype before P V, a relative error u_T on each exact weight of
  // the numerator only, so the output moves by at most u_T max|v| (docs/kernels.md, "Precision").
  const double p_round = cfg.dtype == MRA_DTYPE_F32 ? 0.0 : unit_roundoff(cfg.dtype) * vmax;
  return {2.0 * (2.0 * delta + terms * kU32) * vmax + p_round + 1e-30, unit_roundoff(cfg.dtype) + 2 * kU32};
}

// The expected output of one selection, and the tolerance calibrated on it: the plain f32 implementation's
// largest error E against the reference (before any rounding to the dtype) gives
// atol = kNaiveMultiple (1 + u_T) E + kFloorUlps u max|v|, capped by the derived bound; rtol = u_T + 2u stays
// (the one rounding of the output to the dtype, and the reference's own rounding to float).
struct Expected {
  std::vector<float> out;
  Tolerance tol, cap;
  double naive_error;
};
Expected expected_output(const Runner& run, const Case& c, const Config& cfg, const Tolerance& cap,
                         const ref::Selection& sel) {
  Expected e{std::vector<float>(run.out_elems()), cap, cap, 0};
  ref::attend(run.problem(), c.config, sel, e.out.data());
  const std::vector<float> naive = mra::test::naive_attention_f32(run.naive_problem(), c.config, sel, mra::test::rounding(cfg.dtype));
  double vmax = 0;
  for (float x : c.v)
    if (std::isfinite(x)) vmax = std::max(vmax, double(std::fabs(x)));
  // The plain implementation poisons slice by slice; a shared selection (§8.4) poisons the whole group, so there
  // the reference may have more NaN rows (the kernels' output is held to the reference's NaN rows).
  const bool shared = c.config.selection == ref::Scope::group;
  for (size_t i = 0; i < naive.size(); ++i) {
    if (shared)
      CHECK((!std::isnan(naive[i]) || std::isnan(e.out[i])));
    else
      CHECK(std::isnan(naive[i]) == std::isnan(e.out[i]));
    if (!std::isnan(e.out[i])) e.naive_error = std::max(e.naive_error, std::fabs(double(naive[i]) - e.out[i]));
  }
  INFO("plain f32 error ", e.naive_error, " against the derived bound atol ", cap.atol);
  CHECK(e.naive_error <= cap.atol);  // the derivation must bound plain f32 arithmetic too
  const double calibrated =
      kNaiveMultiple * (1 + unit_roundoff(cfg.dtype)) * e.naive_error + kFloorUlps * kU32 * vmax;
  e.tol.atol = std::min(calibrated, cap.atol);
  return e;
}

// Compares with the calibrated tolerance; returns the fractions of it and of the derived bound used.
std::pair<double, double> check_output(const std::vector<float>& got, const Expected& e, const Case& c,
                                       const Config& cfg, const std::string& what) {
  const std::vector<int64_t> dims{c.batch, c.heads, c.nq, cfg.dim};
  const auto cmp = mra::test::compare(got.data(), e.out.data(), int64_t(got.size()), e.tol.atol, e.tol.rtol, dims);
  const auto against_cap =
      mra::test::compare(got.data(), e.out.data(), int64_t(got.size()), e.cap.atol, e.cap.rtol, dims);
  INFO(what, ": ", cmp.report, "; plain f32 error ", e.naive_error, "; derived bound: ", against_cap.report);
  CHECK(cmp.ok);
  return {cmp.tolerance_used, against_cap.tolerance_used};
}

// The level-1 coarse components in the workspace (coarse_level1_kernel, mode full) against a double-precision
// recomputation from the same workspace: the kernels' pooled values and their T_1 (both checked elsewhere). Per
// block row r over the candidates not in T_1: max M = max λ, den = Σ e^(λ−M) ck, num = Σ e^(λ−M) V. The kernel's
// (max, den, num) are brought to the reference's M (× e^(max−M)) and den and num normalized by the row's scale
// (den, and Σ e^(λ−M) max_d |V_d|), so one tolerance holds for every row: four logit errors (γ_{D+2} σ Σ|q̄ k̄|,
// the largest of the slice) plus a sum of n_1 + 16 roundings.
void check_level1_coarse(const Runner& run, Buffer& ws, const Case& c, int64_t dim) {
  const Level& lv = run.layout().level[0];
  const double scale = run.scale();
  for (int64_t slice = 0; slice < c.batch * c.heads; ++slice) {
    if (std::count(c.bad_slices.begin(), c.bad_slices.end(), slice) > 0) continue;
    const int64_t b = slice / c.heads;
    const float* qmean = ws.at<float>(lv.qmean) + slice * lv.nq * dim;
    const float* kmean = ws.at<float>(lv.kmean) + slice * lv.nk * dim;
    const float* vsum = ws.at<float>(lv.vsum) + slice * lv.nk * dim;
    const float* qcount = ws.at<float>(lv.qcount) + b * lv.nq;
    const float* kcount = ws.at<float>(lv.kcount) + b * lv.nk;
    const int32_t* rowptr = ws.at<int32_t>(lv.rowptr) + slice * (lv.nq + 1);
    const int32_t* col = ws.at<int32_t>(lv.col) + slice * lv.cap;
    const float* cmax = ws.at<float>(lv.cmax) + slice * lv.nq;
    const float* cden = ws.at<float>(lv.cden) + slice * lv.nq;
    const float* cnum = ws.at<float>(lv.cnum) + slice * lv.nq * dim;
    double spread = 0.0;  // the largest σ Σ_d |q̄_d k̄_d| of the slice
    for (int32_t r = 0; r < lv.nq; ++r)
      for (int32_t k = 0; k < lv.nk; ++k) {
        double a = 0.0;
        for (int64_t d = 0; d < dim; ++d) a += std::fabs(double(qmean[r * dim + d]) * kmean[k * dim + d]);
        spread = std::max(spread, scale * a);
      }
    const double tol = 4.0 * double(dim + 2) * kU32 * spread + double(lv.nk + 16) * kU32;
    std::vector<float> got, want;
    int64_t empty_rows = 0, bad_empty = 0, bad_max = 0;
    for (int32_t r = 0; r < lv.nq; ++r) {
      std::vector<double> logit(size_t(lv.nk), -INFINITY);
      double m = -INFINITY;
      for (int32_t k = 0; k < lv.nk; ++k) {
        const bool refined = std::binary_search(col + rowptr[r], col + rowptr[r + 1], k);
        if (qcount[r] <= 0.f || kcount[k] <= 0.f || refined) continue;
        if (c.causal && mra::order::causal_place(r, k, lv.side, int32_t(c.nq), int32_t(c.nk)) != mra::order::kVisible)
          continue;  // §9.3: only visible pairs are coarse components
        double a = 0.0;
        for (int64_t d = 0; d < dim; ++d) a += double(qmean[r * dim + d]) * kmean[k * dim + d];
        logit[size_t(k)] = scale * a;
        m = std::max(m, logit[size_t(k)]);
      }
      if (m == -INFINITY) {  // no coarse candidate: (-inf, 0, 0)
        ++empty_rows;
        bool zero = cmax[r] == -INFINITY && cden[r] == 0.f;
        for (int64_t d = 0; d < dim; ++d) zero = zero && cnum[r * dim + d] == 0.f;
        bad_empty += !zero;
        continue;
      }
      bad_max += !(std::fabs(double(cmax[r]) - m) <= 2.0 * double(dim + 2) * kU32 * spread + kU32 * std::fabs(m));
      double den = 0.0, vscale = 0.0;
      std::vector<double> num(size_t(dim), 0.0);
      for (int32_t k = 0; k < lv.nk; ++k) {
        if (logit[size_t(k)] == -INFINITY) continue;
        const double w = std::exp(logit[size_t(k)] - m);
        den += w * kcount[k];
        double vmax = 0.0;
        for (int64_t d = 0; d < dim; ++d) {
          num[size_t(d)] += w * vsum[k * dim + d];
          vmax = std::max(vmax, std::fabs(double(vsum[k * dim + d])));
        }
        vscale += w * vmax;
      }
      const double shift = std::exp(double(cmax[r]) - m);
      got.push_back(float(cden[r] * shift / den));
      want.push_back(1.f);
      for (int64_t d = 0; d < dim; ++d) {
        got.push_back(float(cnum[r * dim + d] * shift / (vscale > 0.0 ? vscale : 1.0)));
        want.push_back(float(num[size_t(d)] / (vscale > 0.0 ? vscale : 1.0)));
      }
    }
    const mra::test::Comparison cmp =
        mra::test::compare(got.data(), want.data(), int64_t(got.size()), tol, tol, {int64_t(got.size())});
    INFO("slice ", slice, ": level-1 coarse components of ", lv.nq, " block rows (", empty_rows,
         " without coarse candidates), tolerance ", tol, ": ", cmp.report);
    CHECK(bad_empty == 0);
    CHECK(bad_max == 0);
    CHECK(cmp.ok);
  }
}

// The reference's own selection in every slice where the kernels' equals it at every level; the kernels'
// selection in a slice where a counted near tie made them differ.
ref::Selection comparison_selection(const ref::Selection& theirs, const KernelSelection& mine) {
  ref::Selection s = theirs;
  for (int64_t slice = 0; slice < s.batch * s.heads; ++slice)
    if (!mine.agrees[size_t(slice)])
      for (int64_t li = 0; li < s.steps; ++li)
        s.at(slice / s.heads, slice % s.heads, li) = mine.got.at(slice / s.heads, slice % s.heads, li);
  return s;
}

std::string dtype_name(mra_dtype t) { return t == MRA_DTYPE_F32 ? "f32" : t == MRA_DTYPE_F16 ? "f16" : "bf16"; }

void check_case(const Config& cfg, Case& c) {
  Runner run(cfg, c);
  INFO("case: ", c.what, " (B ", c.batch, ", H ", c.heads, ", Nq ", c.nq, ", Nk ", c.nk, ")");
  Report report;
  const Levels levels = pool_levels(run, cfg.dim);
  const Tolerance cap = derived_bound(run, c, cfg, levels);
  const ref::Selection theirs = ref::select(run.problem(), c.config);

  // Stages 1-2, then stage 3 on the kernels' own selection: the end-to-end output.
  mra::test::set_schedule(0);
  Buffer ws = run.workspace();
  run.run(ws, mra::kern::kStagePrepare);
  check_pooling(run, levels, ws);
  const KernelSelection mine = check_selection(run, levels, ws, c, theirs, report);
  for (int64_t slice = 0; slice < c.batch * c.heads; ++slice)  // no refined pair written beyond the CSR total
    for (int li = 0; li < run.layout().steps; ++li) {
      const Level& lv = run.layout().level[li];
      const int32_t* col = ws.at<int32_t>(lv.col) + slice * lv.cap;
      const int32_t total = ws.at<int32_t>(lv.rowptr)[slice * (lv.nq + 1) + lv.nq];
      int64_t touched = 0;
      for (int32_t t = total; t < lv.cap; ++t) touched += uint32_t(col[t]) != 0xffffffffu;
      INFO("slice ", slice, ", level ", li + 1, ": refined-list entries written beyond the CSR total ", total);
      CHECK(touched == 0);
    }
  for (int li = 1; c.select_chunk > 0 && li < run.layout().steps; ++li)  // the selection spread over many CTAs
    for (int64_t slice = 0; slice < c.batch * c.heads; ++slice) {
      if (std::count(c.bad_slices.begin(), c.bad_slices.end(), slice) != 0) continue;
      const Level& up = run.layout().level[li - 1];
      const int64_t rho = up.side / run.layout().level[li].side;
      const int64_t used = rho * rho * ws.at<int32_t>(up.rowptr)[slice * (up.nq + 1) + up.nq];
      INFO("slice ", slice, ", level ", li + 1, ": ", used, " key slots in chunks of ", c.select_chunk);
      CHECK(used > 4 * c.select_chunk);
    }
  const std::vector<float> out = run.run(ws, mra::kern::kStageAttend);
  if (c.config.mode == ref::Mode::full) check_level1_coarse(run, ws, c, cfg.dim);
  const Expected e2e = expected_output(run, c, cfg, cap, comparison_selection(theirs, mine));
  const auto [used, used_cap] = check_output(out, e2e, c, cfg, "end to end");
  CHECK(mra::test::norm2(c.k) > 0);
  CHECK(std::isfinite(mra::test::norm2(out)) == c.bad_slices.empty());
  if (c.bad_slices.empty()) CHECK(mra::test::norm2(out) > 0);

  // Stage 3 alone on the reference's selection (the same comparison as above unless a near tie intervened).
  const bool all_agree = report.slices_agreeing == report.slices;
  if (!c.production || !all_agree) {
    inject_selection(ws, run.layout(), theirs);
    const Expected given = all_agree ? e2e : expected_output(run, c, cfg, cap, theirs);
    check_output(run.run(ws, mra::kern::kStageAttend), given, c, cfg, "attend on the reference's selection");
  }
  // Small cases once more end to end under the shuffled thread order: the same bits.
  if (!c.production) {
    mra::test::set_schedule(1);
    Buffer ws2 = run.workspace();
    const std::vector<float> again = run.run(ws2, mra::kern::kStageAll);
    mra::test::set_schedule(0);
    CHECK(std::memcmp(out.data(), again.data(), out.size() * sizeof(float)) == 0);
    for (int64_t slice = 0; slice < c.batch * c.heads; ++slice)  // the selection is reproducible too
      for (int li = 0; li < run.layout().steps; ++li) {
        INFO("selection of slice ", slice, ", level ", li + 1, " under both schedules");
        const Level& lv = run.layout().level[li];
        CHECK(kernel_refined(ws2, lv, slice) == mine.got.at(slice / c.heads, slice % c.heads, li));
      }
  }

  if (c.production) {  // the sizes promised in production_cases()
    CHECK(report.max_row_candidates > 256);
    CHECK(report.max_row_refined >= 64);
    CHECK(run.layout().level[0].slots > 2 * 256);
    if (c.exact_ties) CHECK(report.ties_cut > 0);
    if (c.near_ties) CHECK(report.near_threshold > 0);
  }
  // One line per case, read by docs/kernels.md's tolerance table.
  MESSAGE("tolerance ", dtype_name(cfg.dtype), " ", std::string(cfg.name), " / ", c.what, ": used ", 100 * used,
          "% of the calibrated (atol ", e2e.tol.atol, ", rtol ", e2e.tol.rtol, "), ", 100 * used_cap,
          "% of the derived bound (atol ", cap.atol, "); plain f32 error ", e2e.naive_error, "; ",
          report.levels_checked, " slice-levels checked against §2.4, ", report.near_ties, " near-tie pairs, ",
          report.slices_agreeing, " of ", report.slices, " slices equal to the reference's selection; at most ",
          report.max_row_candidates, " candidates and ", report.max_row_refined, " refined blocks in a block row, ",
          report.ties_cut,
          " levels whose threshold cuts an exact tie, ", report.near_threshold, " candidates near a threshold");
}

// ----------------------------------------------------------------------------------------------------------
// The cases: sizes come from the configuration (block side s_1). Every configuration runs five small cases
// (each under two thread orders) and three production-size cases (docs/kernels.md, "Cross-checks").

// Policy row (§10) when `by_row`: the budget is blocks_per_row for every block row of every level.
ref::Config mra_config(const Config& cfg, int64_t nq, int64_t nk, int64_t blocks_per_row, ref::Mode mode,
                       int64_t first = 0, int64_t diagonal = 0, bool by_row = false) {
  ref::Config c;
  c.scales = cfg.sides;
  c.budgets = by_row ? std::vector<int64_t>(cfg.sides.size() - 1, blocks_per_row)
                     : ref::budgets_from_blocks_per_row(cfg.sides, nq, nk, blocks_per_row);
  c.policy = by_row ? ref::Policy::row : ref::Policy::global;
  c.mode = mode;
  c.prior_first = first;
  c.prior_diagonal = diagonal;
  return c;
}

// FNV-1a of a name: a fixed seed per configuration and case family, on any platform.
uint64_t seed_of(const std::string& name) {
  uint64_t seed = 1469598103934665603u;
  for (char ch : name) seed = (seed ^ uint64_t(uint8_t(ch))) * 1099511628211u;
  return seed;
}

// Structured inputs (tools/synthetic: local windows and global tokens) of B x H slices; masks, priors and
// budgets are the caller's.
Case structured_case(const Config& cfg, const char* what, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
                     uint64_t seed) {
  Case c;
  c.what = what;
  c.batch = batch;
  c.heads = heads;
  c.nq = nq;
  c.nk = nk;
  auto st = mra::synthetic::structured(batch, heads, nq, nk, cfg.dim, seed);
  c.q = std::move(st.q);
  c.k = std::move(st.k);
  c.v = std::move(st.v);
  return c;
}

// iid normal inputs (mra::test::noise) of one batch of `heads` slices, drawn from `rng` in the order q, k, v; with
// `zero_q`, q is all zero (every score ties exactly) and only k and v are drawn. Masks, priors and budgets are the
// caller's.
Case noise_case(const Config& cfg, Rng& rng, const char* what, int64_t heads, int64_t nq, int64_t nk,
                bool zero_q = false) {
  Case c;
  c.what = what;
  c.heads = heads;
  c.nq = nq;
  c.nk = nk;
  if (zero_q)
    c.q.assign(size_t(heads * nq * cfg.dim), 0.f);
  else
    c.q = mra::test::noise(rng, 1, heads, nq, cfg.dim);
  c.k = mra::test::noise(rng, 1, heads, nk, cfg.dim);
  c.v = mra::test::noise(rng, 1, heads, nk, cfg.dim);
  return c;
}

// §8: structured inputs with `heads_kv` K/V heads (the first heads_kv heads of a structured draw, so every group
// sees structure) and 4 query heads, stored as `storage`; masks and priors as the structured case.
Case grouped_case(const Config& cfg, Rng& rng, int64_t heads_kv, Storage storage, int64_t nq, int64_t nk,
                  int64_t blocks_per_row) {
  Case c = structured_case(cfg, "grouped", 2, 4, nq, nk, rng.seed() + 7);
  c.heads_kv = heads_kv;
  c.storage = storage;
  std::vector<float> k, v;
  for (int64_t b = 0; b < 2; ++b) {
    const auto first = size_t(b * 4 * nk * cfg.dim), count = size_t(heads_kv * nk * cfg.dim);
    k.insert(k.end(), c.k.begin() + first, c.k.begin() + first + count);
    v.insert(v.end(), c.v.begin() + first, c.v.begin() + first + count);
  }
  c.k = std::move(k);
  c.v = std::move(v);
  c.qmask = mra::test::padding_mask(2, nq, {0, 5});
  c.kmask = mra::test::random_mask(rng, 2, nk, 0.9);
  c.config = mra_config(cfg, nq, nk, blocks_per_row, ref::Mode::full, 1, 3);
  return c;
}

// §9.4, the causal guarantee on the kernels: changing the keys and values after a cut (real and padded ones)
// leaves bit for bit unchanged every query row i with i + Nk - Nq <= cut, and changes some later row. Prefill
// after cached keys (Nk - Nq = s_1 + 3, so the diagonal crosses blocks), partial blocks, query padding and random
// key masks, priors, mode full (coarse components at every level); the cut falls inside a level-1 query block,
// so rows of one block and of one attention tile lie on both sides. Trial 0 writes other finite values; trial 1
// NaN and Inf, which must make exactly the real rows that see them NaN (§9.5) and no other.
void causal_future_keys(const Config& cfg, Rng& rng) {
  const int64_t s1 = cfg.sides[0], D = cfg.dim;
  Case c;
  c.what = "causal, future keys";
  c.causal = true;
  c.batch = 2;
  c.nq = 3 * s1 + 5;
  c.nk = c.nq + s1 + 3;
  const int64_t delta = c.nk - c.nq;
  auto st = mra::synthetic::structured(2, 1, c.nq, c.nk, D, rng.seed() + 11);
  c.q = st.q;
  c.k = st.k;
  c.v = st.v;
  c.qmask = mra::test::padding_mask(2, c.nq, {0, 3});
  c.kmask = mra::test::random_mask(rng, 2, c.nk, 0.9);
  c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 3, true);
  const auto output = [&](Case& x) {
    Runner run(cfg, x);
    Buffer ws = run.workspace();
    return run.run(ws, mra::kern::kStageAll);
  };
  const std::vector<float> before = output(c);
  for (int trial = 0; trial < 2; ++trial) {
    const int64_t cut_row = s1 + s1 / 2 + trial, cut = cut_row + delta;  // rows <= cut_row see no key after cut
    Case d = c;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t j = cut + 1; j < c.nk; ++j)
        for (int64_t e = 0; e < D; ++e) {
          const size_t at = size_t((b * c.nk + j) * D + e);
          const float x = mra::test::grid_value(rng, 1000, 0x1p-6f);
          d.k[at] = trial == 1 && e == 0 && j == cut + 2 ? NAN : x;
          d.v[at] = trial == 1 && e == 1 && j == cut + 4 ? INFINITY : -x;
        }
    const std::vector<float> after = output(d);
    int64_t changed_before = 0, later_changed = 0, nan_wrong = 0;
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < c.nq; ++i) {
        const size_t row = size_t((b * c.nq + i) * D);
        const bool same = std::memcmp(&before[row], &after[row], size_t(D) * sizeof(float)) == 0;
        if (i <= cut_row) changed_before += !same;
        else later_changed += !same;
        if (trial == 1) {  // §9.5: NaN exactly in the real rows that see a real key holding NaN or Inf
          int64_t first_bad = c.nk;
          for (int64_t j : {cut + 2, cut + 4})
            if (j < c.nk && c.kmask[size_t(b * c.nk + j)] && j < first_bad) first_bad = j;
          const bool real = c.qmask[size_t(b * c.nq + i)] != 0;
          const bool want_nan = real && i + delta >= first_bad;
          nan_wrong += want_nan != std::isnan(after[row]);
        }
      }
    INFO("trial ", trial, ": cut after key ", cut, " (rows <= ", cut_row, " see none of the changed keys)");
    CHECK(changed_before == 0);
    CHECK(later_changed > 0);
    CHECK(nan_wrong == 0);
  }
}

void small_cases(const Config& cfg) {
  const int64_t s1 = cfg.sides[0];
  Rng rng(seed_of(cfg.name));
  INFO("seed ", rng.seed());
  SUBCASE("random, length not a multiple of s_1") {
    Case c = noise_case(cfg, rng, "random", 2, 4 * s1 + 3, 4 * s1 + 3);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full);
    check_case(cfg, c);
  }
  SUBCASE("structured cross-attention, masks, priors, empty rows") {
    Case c = structured_case(cfg, "structured", 2, 1, 3 * s1 + 7, 4 * s1 + 1, rng.seed() + 1);
    // Batch 0: padded queries covering the whole last block and a few keys; batch 1: no real key at all.
    c.qmask = mra::test::padding_mask(2, c.nq, {s1 + 5, 0});
    c.kmask = mra::test::random_mask(rng, 2, c.nk, 0.8);
    std::fill(c.kmask.begin() + c.nk, c.kmask.end(), 0);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 3);
    check_case(cfg, c);
  }
  SUBCASE("sparse mode") {
    Case c = structured_case(cfg, "sparse", 1, 1, 3 * s1 + 1, 3 * s1 + 1, rng.seed() + 2);
    c.config = mra_config(cfg, c.nq, c.nk, 1, ref::Mode::sparse);
    check_case(cfg, c);
  }
  SUBCASE("exact ties: zero queries, the order is priority then flat index") {
    Case c = noise_case(cfg, rng, "ties", 1, 3 * s1 + 5, 5 * s1 - 3, true);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 1);
    c.exact_ties = true;
    check_case(cfg, c);
  }
  SUBCASE("policy row: structured cross-attention, masks, priors, a budget per block row") {
    Case c = structured_case(cfg, "row policy", 2, 1, 3 * s1 + 7, 5 * s1 + 1, rng.seed() + 3);
    c.qmask = mra::test::padding_mask(2, c.nq, {s1 + 5, 0});
    c.kmask = mra::test::random_mask(rng, 2, c.nk, 0.8);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 3, true);
    check_case(cfg, c);
  }
  SUBCASE("policy row: exact ties, the order is priority then column in every row") {
    Case c = noise_case(cfg, rng, "row policy ties", 2, 3 * s1 + 5, 5 * s1 - 3, true);
    c.v[size_t((c.nk + 3) * cfg.dim)] = NAN;  // head 1 poisoned: it selects nothing (§2.7)
    c.bad_slices = {1};
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::sparse, 0, 1, true);
    c.exact_ties = true;
    check_case(cfg, c);
  }
  SUBCASE("non-finite input in a real token poisons its slice only") {
    Case c = noise_case(cfg, rng, "non-finite", 2, 2 * s1 + 3, 2 * s1 + 3);
    c.kmask = mra::test::padding_mask(1, c.nk, {2});
    c.v[size_t((c.nk + 5) * cfg.dim + 1)] = NAN;           // head 1, real key 5
    c.k[size_t((c.nk - 1) * cfg.dim + 3)] = INFINITY;      // head 0, padded key: never read
    c.bad_slices = {1};
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full);
    check_case(cfg, c);
  }
  if (cfg.sides.size() > 2) {
    // Levels l >= 2 select across the GPU: with chunks of 256 slots the level-2 keys of a slice spread over
    // about 8 CTAs (2048 / (4 rho^2) level-1 block rows, 4 refined pairs each, rho^2 children per pair), whose
    // histograms, counts and offsets are merged.
    const int64_t rho = cfg.sides[0] / cfg.sides[1], nq = (2048 / (4 * rho * rho)) * s1 + 5;
    SUBCASE("three levels, level-2 selection over many CTAs: masks, priors, partial blocks, a poisoned slice") {
      Case c = structured_case(cfg, "many CTAs per slice", 1, 3, nq, nq + s1 / 2, rng.seed() + 11);
      c.qmask = mra::test::padding_mask(1, c.nq, {3});
      c.kmask = mra::test::random_mask(rng, 1, c.nk, 0.9);
      c.v[size_t((2 * c.nk + 7) * cfg.dim + 2)] = NAN;  // head 2 poisoned: nothing refined at any level
      if (c.kmask[7] == 0) c.kmask[7] = 1;
      c.bad_slices = {2};
      c.config = mra_config(cfg, c.nq, c.nk, 4, ref::Mode::full, 1, 2);
      c.select_chunk = mra::kern::kSelectThreads;
      check_case(cfg, c);
    }
    SUBCASE("three levels, level-2 selection over many CTAs: exact ties cut across chunks, sparse") {
      Case c = noise_case(cfg, rng, "many CTAs per slice, ties", 1, nq, nq - 3, true);
      c.config = mra_config(cfg, c.nq, c.nk, 4, ref::Mode::sparse, 1, 1);
      c.exact_ties = true;
      c.select_chunk = mra::kern::kSelectThreads;
      check_case(cfg, c);
    }
  }
  SUBCASE("causal: self-attention, partial blocks, masks, priors") {
    Case c;
    c.what = "causal";
    c.causal = true;
    c.batch = 2;
    c.nq = c.nk = 3 * s1 + 5;
    auto st = mra::synthetic::structured(2, 1, c.nq, c.nk, cfg.dim, rng.seed() + 9);
    c.q = st.q;
    c.k = st.k;
    c.v = st.v;
    c.qmask = mra::test::padding_mask(2, c.nq, {s1 + 2, 0});
    c.kmask = mra::test::random_mask(rng, 2, c.nk, 0.85);
    c.config = mra_config(cfg, c.nq, c.nk, 2, ref::Mode::full, 1, 3, true);
    check_case(cfg, c);
  }
  SUBCASE("causal: prefill after cached keys and more queries than keys, sparse") {
    // Nk - Nq = 2 s_1 - 2: the diagonal crosses blocks at every level.
    Case c = noise_case(cfg, rng, "causal prefill", 2, 2 * s1 + 3, 4 * s1 + 1);
    c.causal = true;
    c.config = mra_config(cfg, c.nq, c.nk, 1, ref::Mode::sparse, 0, 0, true);
    check_case(cfg, c);
    // The first Nq - Nk queries see no key: their rows are 0.
    Case d = noise_case(cfg, rng, "causal, Nq > Nk", 1, 3 * s1 + 1, 2 * s1 + 6);
    d.causal = true;
    d.config = mra_config(cfg, d.nq, d.nk, 1, ref::Mode::full, 0, 1, true);
    check_case(cfg, d);
  }
  SUBCASE("causal: changing a future key changes nothing") { causal_future_keys(cfg, rng); }
  SUBCASE("grouped K/V heads (GQA, 4 heads on 2) in FlashAttention's [B, N, H, D] layout") {
    Case c = grouped_case(cfg, rng, 2, Storage::bnhd, 3 * s1 + 5, 4 * s1 - 3, 2);
    c.what = "GQA [B, N, H, D]";
    check_case(cfg, c);
  }
  SUBCASE("one K/V head (MQA), padded rows and heads") {
    Case c = grouped_case(cfg, rng, 1, Storage::padded, 2 * s1 + 3, 3 * s1 + 1, 1);
    c.what = "MQA padded";
    check_case(cfg, c);
  }
  SUBCASE("selection shared by the group (§8.4): GQA 4 on 2, [B, N, H, D], policy global, full, priors") {
    Case c = grouped_case(cfg, rng, 2, Storage::bnhd, 3 * s1 + 5, 4 * s1 - 3, 2);
    c.what = "GQA, group selection";
    c.config.selection = ref::Scope::group;
    check_case(cfg, c);
  }
  SUBCASE("selection shared by the group: MQA 4 on 1, causal, policy row, sparse, padded rows") {
    Case c = grouped_case(cfg, rng, 1, Storage::padded, 2 * s1 + 3, 3 * s1 + 1, 1);
    c.what = "MQA causal, group selection";
    c.causal = true;
    c.config = mra_config(cfg, c.nq, c.nk, 1, ref::Mode::sparse, 1, 3, true);
    c.config.selection = ref::Scope::group;
    check_case(cfg, c);
  }
  SUBCASE("selection shared by the group: a NaN query poisons its group; a group of one head selects per head") {
    Case c = grouped_case(cfg, rng, 2, Storage::contiguous, 2 * s1 + 3, 2 * s1 + 7, 2);
    c.what = "GQA non-finite, group selection";
    c.config.selection = ref::Scope::group;
    c.q[size_t((1 * c.nq + 4) * cfg.dim + 1)] = NAN;  // batch 0, head 1, a real query
    c.bad_slices = {0, 1};                              // heads 0 and 1 share K/V head 0 and its selection
    check_case(cfg, c);
    Case head = grouped_case(cfg, rng, 4, Storage::contiguous, 2 * s1 + 3, 3 * s1 + 1, 2);
    Case group = head;
    group.config.selection = ref::Scope::group;
    Runner by_head(cfg, head), by_group(cfg, group);
    CHECK(by_group.layout().shared == 0);
    Buffer ws_head = by_head.workspace(), ws_group = by_group.workspace();
    const std::vector<float> a = by_head.run(ws_head, mra::kern::kStageAll), b = by_group.run(ws_group, mra::kern::kStageAll);
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  }
}

// Keys whose every token of key block c (side s_1) is pattern[(c + shift) % patterns.size()]; the patterns are
// multiples of 1/8 in [-2, 2], so that every masked mean of a block, in f32 or double, is the pattern itself.
std::vector<float> patterned_keys(Rng& rng, int64_t slices, int64_t nk, int64_t dim, int64_t s1, int64_t patterns) {
  std::vector<float> k(size_t(slices * nk * dim));
  for (int64_t slice = 0; slice < slices; ++slice) {
    std::vector<float> pattern(size_t(patterns * dim));
    for (float& x : pattern) x = mra::test::grid_value(rng, 16, 0x1p-3f);
    for (int64_t j = 0; j < nk; ++j)
      for (int64_t d = 0; d < dim; ++d)
        k[size_t((slice * nk + j) * dim + d)] = pattern[size_t(((j / s1 + slice) % patterns) * dim + d)];
  }
  return k;
}

// Production sizes: Nk = 300 s_1 - 37 (300 level-1 key blocks, the last partial), so a block row has more
// coarse candidates than any kernel has threads (128 or 256) and every selection pass runs many 256-key
// chunks; 40-75 refined blocks per row on average with a heavy row of 64 and more (priors or ties put them
// there); three-level configurations then have several hundred level-2 candidates per row. Checked after each
// run (check_case), so that a case cannot shrink unnoticed.
void production_cases(const Config& cfg) {
  const int64_t s1 = cfg.sides[0], D = cfg.dim;
  Rng rng(seed_of(std::string(cfg.name) + " production"));
  INFO("seed ", rng.seed());
  Case c;
  SUBCASE("long keys") {
    // Structured cross-attention, partial blocks, padded queries, random and whole-block key padding, both
    // priors: block row 0 (a global row) takes most of the budget, rows 1-2 fold ~300 coarse candidates.
    c = structured_case(cfg, "production: long keys, masks, priors, a heavy row", 2, 1, 2 * s1 + 5, 300 * s1 - 37,
                        rng.seed() + 1);
    c.qmask = mra::test::padding_mask(2, c.nq, {7, 0});
    const std::vector<uint8_t> random = mra::test::random_mask(rng, 2, c.nq, 0.9);
    std::copy(random.begin() + c.nq, random.end(), c.qmask.begin() + c.nq);
    c.kmask = mra::test::random_mask(rng, 2, c.nk, 0.9);
    std::fill(c.kmask.begin() + 10 * s1, c.kmask.begin() + 13 * s1, 0);      // batch 0: key blocks 10-12
    std::fill(c.kmask.end() - (s1 + 3), c.kmask.end(), 0);                   // batch 1: the last block and 3
    c.config = mra_config(cfg, c.nq, c.nk, 40, ref::Mode::full, 1, 3);
  }
  SUBCASE("exact ties") {
    // Exact ties at scale: 4 key patterns, one per key block in turn, so each block row holds ~75 pairs of each
    // pattern with bit-identical scores in f32 and in double. The ~225 pairs scoring 0 outnumber the budget of
    // 120: the threshold falls inside a tie group that spans block rows and selection chunks, and only the
    // flat-index tie-break decides (after the diagonal prior).
    c.what = "production: exact ties across selection chunks";
    c.heads = 2;
    c.nq = 2 * s1 + 5;
    c.nk = 300 * s1 - 37;
    c.q = mra::test::noise(rng, 1, 2, c.nq, D);
    c.k = patterned_keys(rng, 2, c.nk, D, s1, 4);
    c.v = mra::test::noise(rng, 1, 2, c.nk, D);
    c.kmask = mra::test::random_mask(rng, 1, c.nk, 0.97);
    std::fill(c.kmask.begin() + 5 * s1, c.kmask.begin() + 7 * s1, 0);
    c.config = mra_config(cfg, c.nq, c.nk, 40, ref::Mode::full, 0, 1);
    c.exact_ties = true;
  }
  SUBCASE("near ties") {
    // Near ties at scale, sparse mode: the patterns above with a per-block offset of 0, 1 or 2 times 2^-22 in
    // one feature, so same-pattern pairs differ by less than the score epsilon in f32 and the kernels' f32
    // means round differently from the reference's (in 16 bits the offset rounds away: exact ties); ~70
    // refined blocks per row.
    c.what = "production: near ties, sparse";
    c.batch = 2;
    c.nq = 3 * s1 + 1;
    c.nk = 300 * s1 + 5;
    c.q = mra::test::noise(rng, 2, 1, c.nq, D);
    c.k = patterned_keys(rng, 2, c.nk, D, s1, 4);
    for (int64_t j = 0; j < 2 * c.nk; ++j) c.k[size_t(j * D)] += float(j % c.nk / s1 % 3) * 0x1.0p-22f;
    c.v = mra::test::noise(rng, 2, 1, c.nk, D);
    c.qmask = mra::test::random_mask(rng, 2, c.nq, 0.9);
    c.kmask = mra::test::padding_mask(2, c.nk, {0, 2 * s1 + 3});
    c.config = mra_config(cfg, c.nq, c.nk, 70, ref::Mode::sparse);
    c.near_ties = cfg.dtype == MRA_DTYPE_F32;
  }
  SUBCASE("policy row") {
    // Policy row at scale (§10): the long-keys shape with 70 blocks per block row at every level, so each row
    // ranks ~300 coarse candidates on its own and keeps exactly 70 (the globally best rows get no more).
    c = structured_case(cfg, "production: policy row, 70 blocks per row", 1, 2, 3 * s1 + 5, 300 * s1 - 37,
                        rng.seed() + 4);
    c.kmask = mra::test::random_mask(rng, 1, c.nk, 0.95);
    c.config = mra_config(cfg, c.nq, c.nk, 70, ref::Mode::full, 0, 3, true);
  }
  c.production = true;
  check_case(cfg, c);
}

// On a GPU (mra-gpu-kit check, CTest kernels.cuda) the run reports itself skipped before any case runs when there
// is no device (gpu_kit.cpp); a case that finds no backend anyway fails.
void require_backend() {
  std::string why;
  const bool ok = mra::test::available(&why);
  INFO(why);
  REQUIRE(ok);
}

// A generated configuration by name, for the cases that run a few fixed ones. When the build left it out
// (-DMRA_KERNELS) the running case is marked skipped (tests/common/skip.h: it is then reported skipped, not
// passed, unless another of its configurations fails) and there is nothing to run.
std::optional<Config> built(const std::string& name) {
  if (!mra::test::skip_unless_built({name})) return std::nullopt;
  require_backend();
#define MRA_CONFIG(cname, dtype, dim, levels, s1, s2, s3, s4)                                    \
  if (name == #cname) {                                                                          \
    const std::vector<int64_t> all{s1, s2, s3, s4};                                              \
    return Config{#cname, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels)}; \
  }
#include "registry.inc"
#undef MRA_CONFIG
  return std::nullopt;
}

// Long context (docs/kernels.md, "Selection"): sizes where the level-1 selection spans several 64-row bands and
// 64-column tiles and the radix passes decide the threshold. kind 0: structured inputs with priors; 1: every
// score 0 and no priors, so every candidate ties and the flat index alone decides (the quota ends inside a row);
// 2: random, two heads, a key mask, sparse mode.
void run_long(const char* name, int64_t n, int64_t blocks_per_row, int kind) {
  const std::optional<Config> cfg = built(name);
  if (!cfg) return;
  Rng rng(0x6c6f6e67u + uint64_t(n));
  INFO("seed ", rng.seed());
  Case c;
  if (kind == 0) {
    c = structured_case(*cfg, "long structured", 1, 1, n, n, rng.seed());
    c.config = mra_config(*cfg, n, n, blocks_per_row, ref::Mode::full, 2, 3);
  } else if (kind == 1) {
    c = noise_case(*cfg, rng, "long ties", 1, n, n, true);
    c.config = mra_config(*cfg, n, n, blocks_per_row, ref::Mode::full);  // no priors: one tie class
    c.exact_ties = true;
  } else {
    c = noise_case(*cfg, rng, "long random", 2, n, n);
    c.kmask = mra::test::random_mask(rng, 1, n, 0.9);
    c.config = mra_config(*cfg, n, n, blocks_per_row, ref::Mode::sparse);
  }
  check_case(*cfg, c);
}

}  // namespace

#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4)                                   \
  TEST_CASE(#name) {                                                                           \
    const std::vector<int64_t> all{s1, s2, s3, s4};                                            \
    require_backend();                                                                         \
    small_cases(Config{#name, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels)}); \
  }                                                                                            \
  TEST_CASE(#name " production") {                                                             \
    const std::vector<int64_t> all{s1, s2, s3, s4};                                            \
    require_backend();                                                                         \
    production_cases(Config{#name, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels)}); \
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

// §8 at production size, one configuration per dtype (those this build has): 4 query heads on 2 K/V heads in
// [B, N, H, D], 300 key blocks, 40 blocks per row with priors (a heavy row, as "long keys" above).
TEST_CASE("grouped K/V heads and strides: production sizes") {
  for (const char* name : {"mra_fwd_r32x1_d64_f32", "mra_fwd_r32x1_d64_f16", "mra_fwd_r16x4x1_d32_bf16"}) {
    const std::optional<Config> cfg = built(name);
    if (!cfg) continue;
    Rng rng(seed_of(std::string(name) + " gqa production"));
    INFO("seed ", rng.seed());
    const int64_t s1 = cfg->sides[0];
    Case c = grouped_case(*cfg, rng, 2, Storage::bnhd, 2 * s1 + 5, 300 * s1 - 37, 40);
    c.what = "production: GQA 4 on 2, [B, N, H, D]";
    c.production = true;
    check_case(*cfg, c);
  }
}

// §8.4 at production size: the selection shared by each group, 4 query heads on 2 K/V heads in [B, N, H, D], 300 key
// blocks, 40 blocks per row with priors; a 2-level f32 and a 3-level bf16 configuration (when built).
TEST_CASE("selection shared by the group: production sizes") {
  for (const char* name : {"mra_fwd_r32x1_d32_f32", "mra_fwd_r16x4x1_d32_bf16"}) {
    std::string why;
    const std::optional<Config> cfg = built(name);
    if (!cfg || !mra::test::available(&why)) {
      MESSAGE(std::string(name), " not built or no backend (", why, "): group-selection production case skipped");
      continue;
    }
    Rng rng(seed_of(std::string(name) + " group selection production"));
    INFO("seed ", rng.seed());
    const int64_t s1 = cfg->sides[0];
    Case c = grouped_case(*cfg, rng, 2, Storage::bnhd, 2 * s1 + 5, 300 * s1 - 37, 40);
    c.what = "production: GQA 4 on 2, selection shared by the group";
    c.config.selection = ref::Scope::group;
    c.production = true;
    check_case(*cfg, c);
  }
}

TEST_CASE("long context: N = 65536 end to end") {
  run_long("mra_fwd_r32x1_d32_f32", 65536, 4, 0);
}

// One million tokens (R = (32, 1), B = H = 1, D = 64, 4 blocks per row): the kernels accept it, the workspace is
// O(N D / s_1 + budgets + histogram) and every index the kernels form fits its type.
TEST_CASE("long context: workspace and index ranges at N = 2^20") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;  // mra_workspace_size needs it built
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
  // Pooled q, k, v and the coarse numerators (4 n D f32); per block row or column 40 bytes (counts, row
  // offsets, row maxima, per-row counts, block flags, coarse max and denominator); the three radix histograms;
  // the refined columns; the three selection states and the slice flag; per query row its saved stabilizer and
  // denominator (8 bytes, for the backward): about 44 MB. The (N/32)^2 keys of a stored level 1 would be 8 GiB.
  const double pooled = 4.0 * 32768 * 64 * 4,
               rest = 32768.0 * 40 + 8.0 * 3 * 4097 + 4.0 * 131072 + 32 * 3 + 4 + 8.0 * n;
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
