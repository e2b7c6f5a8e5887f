// tests/kernels/test_backward_kernels.cpp: the generated backward kernels (runtime/kernels/backward.cuh), run through
// the C API (the forward, then the backward on its workspace) against the reference backward in double
// (docs/semantics.md §7) given the kernels' own selection, read from the forward's workspace. test_backward_kernels
// runs them on the CPU emulation (backend_emulated.cpp); mra-gpu-kit (gpu_kit.cpp: CTest backward.cuda, built
// with nvcc, skipped without a GPU; tools/gpu-check.sh) runs the same cases on a GPU (backend_cuda.cpp).
//   ctest --test-dir build -L backward        or        build/tests/kernels/test_backward_kernels
//
// Tolerance (docs/kernels.md, "Backward"), calibrated as the forward's ("Tolerances"): naive_backward_f32 computes
// the same gradients the plain way in f32 on the same inputs and selection; its largest error E against the double
// reference, per tensor, is what f32 arithmetic alone costs on the case. A kernel gradient passes when every element
// has |x - ref| <= atol + rtol |ref| with atol = min(2 E + 4 u max|ref|, K u max|ref|) and rtol = 3 u (u = 2^-24):
// the multiple 2 and the 4 u floor as in the forward, and the worst-case bound of before (K = 4 (D + max(Nq, Nk)):
// f32 dot products of length D, sums of at most max(Nq, Nk) products) as the outer cap, which E must respect too.
// With 16-bit storage (f16, bf16) the inputs are rounded to the type first, the naive backward rounds where the
// kernels' pipeline rounds (the forward's P before P V and its stored output; the backward's exact P and dS, the A
// operands of its tensor-core products) and its gradients are rounded to the type as the kernels' final store; the
// rule adds the storage's unit roundoff u_T: rtol = 3 u + u_T, and the cap grows by 8 u_T max|ref| (docs/kernels.md,
// "Backward", 16-bit storage).
// The fraction used is printed per tensor; docs/kernels.md lists the worst and the mutants it kills.
#include "common/doctest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "backend.h"
#include "naive_f32.h"
#include "common/check.h"
#include "common/inputs.h"
#include "common/problem.h"
#include "common/skip.h"
#include "common/storage.h"
#include "common/strided.h"
#include "kernels/layout.h"
#include "mra.h"
#include "mra/reference.h"

namespace {

namespace ref = mra::ref;
using mra::test::Rng;
using mra::test::Strides4;

constexpr double kU32 = 0x1.0p-24;
constexpr double kStoredMultiple = 8.0;  // 16-bit storage: the cap's multiple of u_T max|ref| (header)

// A 16-byte aligned float buffer (the C API's alignment rule), filled with `fill` bytes.
struct Buffer {
  std::vector<float> words;
  explicit Buffer(size_t bytes, int fill = 0) : words(bytes / 4 + 8) { std::memset(words.data(), fill, words.size() * 4); }
  void* data() {
    auto p = reinterpret_cast<uintptr_t>(words.data());
    return reinterpret_cast<void*>((p + 15) / 16 * 16);
  }
  float* f() { return static_cast<float*>(data()); }
};

struct Case {
  std::string what;
  mra_dtype dtype = MRA_DTYPE_F32;  // storage of q, k, v, out, dout and the gradients
  int64_t batch = 1, heads = 1, nq = 0, nk = 0, dim = 0;
  double scale = 0.0;  // 0: the default 1/sqrt(D)
  std::vector<int64_t> sides;
  int64_t heads_kv = 0;       // §8: K/V heads (0: heads); k and v then hold [batch, heads_kv, nk, D]
  bool causal = false;        // §9 (policy row)
  // §8: q and dq, out and dout, k, v, dk and dv stored with these strides (all zero: contiguous). out's span must
  // be q's (the CUDA backend copies both with q's size).
  Strides4 q_strides{}, out_strides{}, kv_strides{};
  std::vector<float> q, k, v, dout;
  std::vector<uint8_t> qmask, kmask;
  ref::Config config;
};

Case random_case(uint64_t seed, std::vector<int64_t> sides, int64_t dim, int64_t batch, int64_t heads, int64_t nq,
                 int64_t nk, ref::Mode mode, double keep) {
  Rng rng(seed);
  Case c;
  c.batch = batch, c.heads = heads, c.nq = nq, c.nk = nk, c.dim = dim, c.sides = sides;
  c.q = mra::test::noise(rng, batch, heads, nq, dim);
  c.k = mra::test::noise(rng, batch, heads, nk, dim);
  c.v = mra::test::noise(rng, batch, heads, nk, dim);
  c.dout = mra::test::noise(rng, batch, heads, nq, dim);
  if (keep < 1.0) {
    c.qmask = mra::test::random_mask(rng, batch, nq, keep);
    c.kmask = mra::test::random_mask(rng, batch, nk, keep);
  }
  c.config.scales = sides;
  c.config.mode = mode;
  c.config.budgets = ref::budgets_from_blocks_per_row(sides, nq, nk, 2);
  c.config.prior_first = int64_t(seed % 2);
  if (seed % 3 == 0) c.scale = 0.3;  // a logit scale of the caller's
  c.what = "seed " + std::to_string(seed) + ", B " + std::to_string(batch) + " H " + std::to_string(heads) + " Nq " +
           std::to_string(nq) + " Nk " + std::to_string(nk) + " D " + std::to_string(dim) + ", " +
           (mode == ref::Mode::full ? "full" : "sparse") + (keep < 1.0 ? ", masked" : "") +
           (c.scale > 0 ? ", scale 0.3" : "");
  return c;
}

// A production-size case of the (32, 1) D = 64 configurations, B 1 H 2, mode full: structured q, k, v (locality,
// global tokens; tools/synthetic with `seed`) of Nq queries and Nk keys, dout iid normal from seed + 1. Budgets,
// policy and dtype are the caller's.
Case production_case(const std::string& what, int64_t nq, int64_t nk, uint64_t seed) {
  const mra::synthetic::Inputs in = mra::synthetic::structured(1, 2, nq, nk, 64, seed);
  Rng rng(seed + 1);
  Case c;
  c.what = what;
  c.batch = 1, c.heads = 2, c.nq = nq, c.nk = nk, c.dim = 64, c.sides = {32, 1};
  c.q = in.q, c.k = in.k, c.v = in.v;
  c.dout = mra::test::noise(rng, 1, 2, nq, 64);
  c.config.scales = c.sides;
  return c;
}

// The kernels' refined pairs of every level, from the forward's workspace, as a reference selection.
ref::Selection kernel_selection(const Case& c, const mra::kern::Layout& L, Buffer& ws) {
  ref::Selection s{c.batch, c.heads, L.steps, std::vector<std::vector<int64_t>>(size_t(c.batch * c.heads * L.steps))};
  const auto* base = static_cast<const unsigned char*>(ws.data());
  for (int64_t slice = 0; slice < c.batch * c.heads; ++slice)
    for (int li = 0; li < L.steps; ++li) {
      const mra::kern::Level& lv = L.level[li];
      const auto* rowptr = reinterpret_cast<const int32_t*>(base + lv.rowptr) + slice * (lv.nq + 1);
      const auto* col = reinterpret_cast<const int32_t*>(base + lv.col) + slice * lv.cap;
      for (int32_t r = 0; r < lv.nq; ++r)
        for (int32_t t = rowptr[r]; t < rowptr[r + 1]; ++t)
          s.at(slice / c.heads, slice % c.heads, li).push_back(int64_t(r) * lv.nk + col[t]);
    }
  return s;
}

struct Grads {
  std::vector<float> dq, dk, dv;
  ref::Gradients want;
  ref::Selection used;  // the forward kernels' selection, which the reference backward was given
  mra::test::GradientsF32 naive;  // the plain f32 backward (naive_f32.h) on the same selection: the calibration
};

int64_t kv_heads_of(const Case& c) { return c.heads_kv ? c.heads_kv : c.heads; }

// A contiguous [B, H, N, D] tensor (or none) stored in type t with strides s (contiguous when s is all zero) in a
// 16-byte aligned buffer; elements no index reaches hold the poison of tests/common/storage.h (3.4e38, f16 65504),
// like the outputs before they are written. x must be representable in t.
struct Stored {
  mra_dtype type;
  Strides4 extent, strides;
  size_t elems;
  Buffer buf;
  float fill;
  Stored(mra_dtype t, const std::vector<float>& x, Strides4 extent_, Strides4 s)
      : type(t),
        extent(extent_),
        strides(s == Strides4{} ? Strides4{extent_[1] * extent_[2] * extent_[3], extent_[2] * extent_[3], extent_[3], 1}
                                : s),
        elems(size_t(mra::test::span_of(strides, extent))),
        buf(elems * mra::test::elem_size(t)) {
    unsigned char* bytes = static_cast<unsigned char*>(buf.data());
    mra::test::poison(bytes, elems, t);
    fill = mra::test::from_storage(bytes, t, 1)[0];
    if (x.empty()) return;
    std::vector<float> all = mra::test::scatter(x, extent, strides, fill);
    const std::vector<unsigned char> stored = mra::test::to_storage(all, t);
    std::memcpy(bytes, stored.data(), stored.size());
  }
  size_t bytes() const { return elems * mra::test::elem_size(type); }
  // The [B, H, N, D] tensor back, as f32; CHECKs that nothing outside its elements was written.
  std::vector<float> gathered(const char* name, const std::string& what) {
    const std::vector<float> all = mra::test::from_storage(static_cast<unsigned char*>(buf.data()), type, elems);
    CHECK_MESSAGE(mra::test::written_outside(all, extent, strides, fill) == 0, what, ": ", std::string(name),
                  " written outside its elements");
    return mra::test::gather(all, extent, strides);
  }
};

// Forward, then backward, on the test's backend, with the case's storage type, K/V heads and strides; the reference
// backward on the kernels' selection (unless `reference` is false), from contiguous copies of the inputs. A 16-bit
// case first rounds q, k, v and dout to its type in place, so that the reference and the naive backward see the
// values the kernels read.
Grads run_backward(Case& c, bool reference = true) {
  for (std::vector<float>* x : {&c.q, &c.k, &c.v, &c.dout}) mra::test::to_storage(*x, c.dtype);
  mra_problem p =
      mra::test::mra_problem_of(c.config, c.batch, c.heads, c.nq, c.nk, c.dim, c.dtype, c.scale, c.heads_kv);
  p.causal = c.causal;
  for (int d = 0; d < 4; ++d) {
    p.strides.q[d] = c.q_strides[size_t(d)];
    p.strides.out[d] = c.out_strides[size_t(d)];
    p.strides.k[d] = p.strides.v[d] = c.kv_strides[size_t(d)];
  }
  mra::kern::Layout L;
  REQUIRE(mra::kern::make_layout(p, &L) == MRA_SUCCESS);
  size_t fbytes = 0, gbytes = 0;
  REQUIRE(mra_workspace_size(&p, &fbytes) == MRA_SUCCESS);
  REQUIRE(mra_backward_workspace_size(&p, &gbytes) == MRA_SUCCESS);
  const int64_t hkv = kv_heads_of(c);
  const Strides4 qx{c.batch, c.heads, c.nq, c.dim}, kx{c.batch, hkv, c.nk, c.dim};
  // out, dout and dq share q's strides, dk and dv those of k and v (runtime/mra.h).
  const mra_dtype ty = c.dtype;
  Stored q(ty, c.q, qx, c.q_strides), k(ty, c.k, kx, c.kv_strides), v(ty, c.v, kx, c.kv_strides);
  Stored dout(ty, c.dout, qx, c.out_strides), out(ty, {}, qx, c.out_strides), dq(ty, {}, qx, c.q_strides);
  REQUIRE(out.elems == q.elems);
  Stored dk(ty, {}, kx, c.kv_strides), dv(ty, {}, kx, c.kv_strides);  // poisoned: an unwritten element fails
  Buffer fws(fbytes, 0xff);
  const uint8_t* qm = c.qmask.empty() ? nullptr : c.qmask.data();
  const uint8_t* km = c.kmask.empty() ? nullptr : c.kmask.data();
  const size_t qn = q.bytes(), kn = k.bytes();
  const mra::test::Tensors t{q.buf.data(), k.buf.data(), v.buf.data(), qn, kn, qm, km};
  std::string error;
  const mra_status s = mra::test::run_backward(p, t, {dout.buf.data(), out.buf.data(), dq.buf.data(), dk.buf.data(),
                                                      dv.buf.data()}, fws.data(), fbytes, gbytes, &error);
  INFO(c.what, "; ", error);
  REQUIRE(s == MRA_SUCCESS);
  Grads g{dq.gathered("dq", c.what), dk.gathered("dk", c.what), dv.gathered("dv", c.what), {},
          kernel_selection(c, L, fws), {}};
  ref::Problem rp = ref::Problem::of(c.batch, c.heads, c.nq, c.nk, c.dim, c.q.data(), c.k.data(), c.v.data(), qm, km,
                                     c.scale);
  rp.heads_kv = c.heads_kv;
  rp.causal = c.causal;
  if (!reference) return g;
  g.want = ref::attend_backward(rp, c.config, g.used, c.dout.data());
  // The naive backward takes one K/V head per query head: K and V copied per head, then dk and dv of each group
  // summed in f32 in head order.
  const int64_t group = c.heads / hkv;
  const std::vector<float> k_all = mra::test::repeat_heads(c.k, c.batch, hkv, c.nk, c.dim, group);
  const std::vector<float> v_all = mra::test::repeat_heads(c.v, c.batch, hkv, c.nk, c.dim, group);
  ref::Problem expanded = ref::Problem::of(c.batch, c.heads, c.nq, c.nk, c.dim, c.q.data(), k_all.data(),
                                           v_all.data(), qm, km, c.scale);
  expanded.causal = c.causal;
  float (*round_stored)(float) = mra::test::rounding(c.dtype);
  mra::test::GradientsF32 per_head =
      mra::test::naive_backward_f32(expanded, c.config, g.used, c.dout.data(), round_stored);
  g.naive.dq = std::move(per_head.dq);
  g.naive.dk.assign(c.k.size(), 0.f);
  g.naive.dv.assign(c.v.size(), 0.f);
  const size_t row = size_t(c.nk * c.dim);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.heads; ++h)
      for (size_t e = 0; e < row; ++e) {
        const size_t to = size_t(b * hkv + h / group) * row + e, from = size_t(b * c.heads + h) * row + e;
        g.naive.dk[to] += per_head.dk[from];
        g.naive.dv[to] += per_head.dv[from];
      }
  for (std::vector<float>* x : {&g.naive.dq, &g.naive.dk, &g.naive.dv})  // the final store to the storage type
    for (float& e : *x) e = round_stored(e);
  return g;
}

// One tensor against the reference with the calibrated tolerance of the file's header.
void check_tensor(const char* name, const std::vector<float>& got, const std::vector<double>& want,
                    const std::vector<float>& naive, const Case& c, int64_t n) {
  std::vector<float> ref32(want.begin(), want.end());
  double max_ref = 0.0, naive_err = 0.0;
  for (size_t e = 0; e < want.size(); ++e) {
    if (!std::isfinite(want[e])) continue;
    max_ref = std::max(max_ref, std::fabs(want[e]));
    if (std::isfinite(naive[e])) naive_err = std::max(naive_err, std::fabs(double(naive[e]) - want[e]));
  }
  // The outer cap: the worst-case bound, K u of max|ref| and of |ref|; with 16-bit storage plus what its roundings
  // add (header: u_T of each stored value, the output's and the weights' of the forward that δ is taken from).
  const double us = c.dtype == MRA_DTYPE_F32 ? 0.0 : mra::test::unit_roundoff(c.dtype);
  const double kmul = 4.0 * double(c.dim + std::max(c.nq, c.nk)), cap = (kmul * kU32 + kStoredMultiple * us) * max_ref;
  CHECK_MESSAGE(naive_err <= cap, c.what, ": ", std::string(name), ": the naive f32 backward's error ", naive_err,
                " must be within the worst-case bound ", cap);
  const double atol = std::min(2.0 * naive_err + 4.0 * kU32 * max_ref, cap), rtol = 3.0 * kU32 + us;
  const int64_t heads = std::string(name) == "dq" ? c.heads : kv_heads_of(c);
  const mra::test::Comparison cmp =
      mra::test::compare(got.data(), ref32.data(), int64_t(got.size()), atol, rtol, {c.batch, heads, n, c.dim});
  const double in_ut = us > 0 ? naive_err / (us * max_ref) : 0.0;
  MESSAGE(c.what, ": ", std::string(name), " (naive error ", naive_err, " = ", in_ut, " u_T max|ref|) ", cmp.report);
  CHECK_MESSAGE(cmp.ok, c.what, ": ", std::string(name), " ", cmp.report);
}

void check_all(const Grads& g, const Case& c) {
  check_tensor("dq", g.dq, g.want.dq, g.naive.dq, c, c.nq);
  check_tensor("dk", g.dk, g.want.dk, g.naive.dk, c, c.nk);
  check_tensor("dv", g.dv, g.want.dv, g.naive.dv, c, c.nk);
}

Grads check_case(Case& c) {
  Grads g = run_backward(c);
  // A vacuous pass on all-zero gradients is no pass.
  CHECK(mra::test::norm2(std::vector<float>(g.want.dq.begin(), g.want.dq.end())) > 0.0);
  CHECK(mra::test::norm2(std::vector<float>(g.want.dv.begin(), g.want.dv.end())) > 0.0);
  check_all(g, c);
  return g;
}

}  // namespace

TEST_CASE("backward.r32x1_d64_f32 small") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  // Partial blocks (70, 45: not multiples of 32), cross-attention, masks, both modes, priors.
  int seed = 1;
  for (ref::Mode mode : {ref::Mode::full, ref::Mode::sparse})
    for (auto [nq, nk, keep] : {std::tuple{70, 45, 1.0}, std::tuple{64, 100, 0.7}, std::tuple{33, 33, 0.8}}) {
      Case c = random_case(uint64_t(seed++), {32, 1}, 64, 2, 2, nq, nk, mode, keep);
      check_case(c);
    }
}

TEST_CASE("backward.r16x4x1_d32_f32 small") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x4x1_d32_f32"})) return;
  // Three levels: coarse terms at levels 1 and 2.
  int seed = 100;
  for (ref::Mode mode : {ref::Mode::full, ref::Mode::sparse})
    for (auto [nq, nk, keep] : {std::tuple{50, 37, 1.0}, std::tuple{64, 64, 0.75}}) {
      Case c = random_case(uint64_t(seed++), {16, 4, 1}, 32, 2, 1, nq, nk, mode, keep);
      check_case(c);
    }
}

TEST_CASE("backward.policy row") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32", "mra_fwd_r16x4x1_d32_f32"})) return;
  // §10: every block row refines its own budget; the backward reads the forward's per-row CSR selection like the
  // global one's, so the gradients must match the reference on that selection at 2 and 3 levels, both modes.
  int seed = 200;
  for (ref::Mode mode : {ref::Mode::full, ref::Mode::sparse})
    for (auto [sides, dim, nq, nk] : {std::tuple{std::vector<int64_t>{32, 1}, 64, 100, 77},
                                      std::tuple{std::vector<int64_t>{16, 4, 1}, 32, 64, 50}}) {
      Case c = random_case(uint64_t(seed++), sides, dim, 1, 2, nq, nk, mode, 0.8);
      c.config.policy = ref::Policy::row;
      c.config.budgets = std::vector<int64_t>(sides.size() - 1, 2);
      c.what += ", policy row";
      const Grads g = check_case(c);
      // The forward really spent the budget per row: its selection is the reference's row selection (§10).
      const ref::Problem rp = ref::Problem::of(c.batch, c.heads, c.nq, c.nk, c.dim, c.q.data(), c.k.data(), c.v.data(),
                                               c.qmask.data(), c.kmask.data(), c.scale);
      ref::Selection want = ref::select(rp, c.config), got = g.used;
      for (auto* s : {&want, &got})
        for (auto& list : s->refined) std::sort(list.begin(), list.end());
      CHECK_MESSAGE(got.refined == want.refined, c.what, ": the forward's selection is not the row policy's");
    }
}

TEST_CASE("backward.r32x1_d64_f32 production") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  // Structured inputs (locality, global tokens) at N = 1024 with 4 blocks per row, as mra-base-512-4 uses.
  Case c = production_case("structured B 1 H 2 N 1024 D 64, full, 4 blocks per row", 1024, 1024, 7);
  c.config.budgets = ref::budgets_from_blocks_per_row(c.sides, 1024, 1024, 4);
  check_case(c);
}

TEST_CASE("backward.non-finite and padding") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  // §7.5: a NaN in a real value of slice (0, 1) and an Inf in dout of a real query of slice (1, 0) poison those
  // slices only (NaN in their real tokens' gradients, 0 in padded ones); NaN in padded tokens is never read.
  Case c = random_case(21, {32, 1}, 64, 2, 2, 70, 45, ref::Mode::full, 0.7);
  auto first_real = [](const std::vector<uint8_t>& m, int64_t b, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      if (m[size_t(b * n + i)]) return i;
    return int64_t(-1);
  };
  auto padded = [](const std::vector<uint8_t>& m, int64_t b, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
      if (!m[size_t(b * n + i)]) return i;
    return int64_t(-1);
  };
  const int64_t D = c.dim, j = first_real(c.kmask, 0, c.nk), i = first_real(c.qmask, 1, c.nq);
  const int64_t pj = padded(c.kmask, 1, c.nk), pi = padded(c.qmask, 0, c.nq);
  REQUIRE((j >= 0 && i >= 0 && pj >= 0 && pi >= 0));
  c.v[size_t(((0 * 2 + 1) * c.nk + j) * D + 3)] = NAN;
  c.dout[size_t(((1 * 2 + 0) * c.nq + i) * D + 5)] = INFINITY;
  c.q[size_t(((0 * 2 + 0) * c.nq + pi) * D)] = NAN;     // padded query of batch 0
  c.dout[size_t(((0 * 2 + 1) * c.nq + pi) * D)] = NAN;  // ... and its dout
  c.k[size_t(((1 * 2 + 1) * c.nk + pj) * D)] = NAN;     // padded key of batch 1
  const Grads g = run_backward(c);
  int64_t nan_slices_ok = 0;
  for (int64_t slice = 0; slice < 4; ++slice) {
    const int64_t b = slice / 2;
    const bool poisoned = slice == 1 || slice == 2;
    bool ok = true;
    for (int64_t t = 0; t < c.nq; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const float x = g.dq[size_t((slice * c.nq + t) * D + d)];
        ok &= c.qmask[size_t(b * c.nq + t)] ? std::isnan(x) == poisoned : x == 0.f;
      }
    for (int64_t t = 0; t < c.nk; ++t)
      for (int64_t d = 0; d < D; ++d) {
        const float x = g.dk[size_t((slice * c.nk + t) * D + d)], y = g.dv[size_t((slice * c.nk + t) * D + d)];
        ok &= c.kmask[size_t(b * c.nk + t)] ? std::isnan(x) == poisoned && std::isnan(y) == poisoned
                                             : x == 0.f && y == 0.f;
      }
    INFO("slice ", slice, poisoned ? " (poisoned)" : "");
    CHECK(ok);
    nan_slices_ok += ok;
  }
  CHECK(nan_slices_ok == 4);
  // The reference agrees element by element, NaN where it has NaN.
  check_all(g, c);
}

TEST_CASE("backward.deterministic") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x4x1_d32_f32"})) return;
  // No float atomics, every sum in a fixed order: another order of the emulated threads between barriers gives the
  // same bits (on a GPU: a second run).
  Case c = random_case(31, {16, 4, 1}, 32, 1, 2, 64, 48, ref::Mode::full, 0.8);
  mra::test::set_schedule(0);
  const Grads a = run_backward(c, false);
  mra::test::set_schedule(1);
  const Grads b = run_backward(c, false);
  mra::test::set_schedule(0);
  CHECK(std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * 4) == 0);
  CHECK(std::memcmp(a.dk.data(), b.dk.data(), a.dk.size() * 4) == 0);
  CHECK(std::memcmp(a.dv.data(), b.dv.data(), a.dv.size() * 4) == 0);
}

TEST_CASE("backward.deterministic, tensor cores") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_bf16"})) return;
  // The f16/bf16 exact part on tensor cores (two warps per CTA in both kernels here): the same bits under another
  // order of the emulated threads.
  Case c = random_case(32, {32, 1}, 64, 1, 2, 80, 70, ref::Mode::full, 0.8);
  c.dtype = MRA_DTYPE_BF16;
  mra::test::set_schedule(0);
  const Grads a = run_backward(c, false);
  mra::test::set_schedule(1);
  const Grads b = run_backward(c, false);
  mra::test::set_schedule(0);
  CHECK(std::memcmp(a.dq.data(), b.dq.data(), a.dq.size() * 4) == 0);
  CHECK(std::memcmp(a.dk.data(), b.dk.data(), a.dk.size() * 4) == 0);
  CHECK(std::memcmp(a.dv.data(), b.dv.data(), a.dv.size() * 4) == 0);
}

namespace {

enum class Storage { bnhd, padded };

// §8: the case with `heads_kv` K/V heads (k and v drawn again with that many) and every tensor stored in
// `storage`: FlashAttention's [B, N, H, D], or rows padded by 12 elements with gaps between heads.
void group_and_stride(Case& c, int64_t heads_kv, Storage storage, uint64_t seed) {
  Rng rng(seed);
  c.heads_kv = heads_kv;
  c.k = mra::test::noise(rng, c.batch, heads_kv, c.nk, c.dim);
  c.v = mra::test::noise(rng, c.batch, heads_kv, c.nk, c.dim);
  const bool bnhd = storage == Storage::bnhd;
  c.q_strides = c.out_strides = bnhd ? mra::test::bnhd_strides(c.heads, c.nq, c.dim)
                                     : mra::test::padded_strides(c.heads, c.nq, c.dim, 12, 20, 4);
  c.kv_strides = bnhd ? mra::test::bnhd_strides(heads_kv, c.nk, c.dim)
                      : mra::test::padded_strides(heads_kv, c.nk, c.dim, 12, 20, 4);
  c.what += ", " + std::to_string(c.heads) + " heads on " + std::to_string(heads_kv) +
            (bnhd ? ", [B, N, H, D]" : ", padded rows");
}

}  // namespace

TEST_CASE("backward.grouped K/V heads and strides") {
  // §8: dk and dv of a K/V head are the sums over the query heads of its group; q, out and dout are read and dq
  // written with q's strides, k, v, dk and dv with k's; nothing outside the gradients' elements is written.
  // GQA and MQA, 2 and 3 levels, both modes, masks, partial blocks, [B, N, H, D] and padded rows.
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32", "mra_fwd_r16x4x1_d32_f32"})) return;
  struct Shape {
    uint64_t seed;
    std::vector<int64_t> sides;
    int64_t dim, batch, heads, heads_kv, nq, nk;
    ref::Mode mode;
    double keep;
    Storage storage;
  };
  for (const Shape& s : {Shape{300, {32, 1}, 64, 2, 4, 2, 70, 45, ref::Mode::full, 0.8, Storage::bnhd},
                         Shape{301, {32, 1}, 64, 1, 4, 1, 64, 100, ref::Mode::sparse, 1.0, Storage::padded},
                         Shape{302, {16, 4, 1}, 32, 2, 4, 2, 50, 37, ref::Mode::full, 0.75, Storage::bnhd},
                         Shape{303, {16, 4, 1}, 32, 1, 4, 1, 64, 64, ref::Mode::full, 1.0, Storage::padded},
                         Shape{304, {16, 4, 1}, 32, 1, 2, 2, 48, 40, ref::Mode::sparse, 0.8, Storage::bnhd}}) {
    Case c = random_case(s.seed, s.sides, s.dim, s.batch, s.heads, s.nq, s.nk, s.mode, s.keep);
    group_and_stride(c, s.heads_kv, s.storage, s.seed + 1000);
    check_case(c);
  }
  // q (and dq) contiguous, out and dout in [B, N, H, D], k and v padded: every tensor with strides of its own.
  Case c = random_case(305, {32, 1}, 64, 2, 4, 45, 70, ref::Mode::full, 0.8);
  group_and_stride(c, 2, Storage::padded, 1305);
  c.q_strides = {};
  c.out_strides = mra::test::bnhd_strides(c.heads, c.nq, c.dim);
  c.what += "; q contiguous, out [B, N, H, D]";
  check_case(c);
}

TEST_CASE("backward.a selection shared by each group of heads") {
  // §8.4: the forward kernels select once per (batch, K/V head), ranked by the group's mean query, and the backward
  // differentiates with that selection held fixed. The kernels' selection must be the reference's group
  // selection (one per group, every head of the group the same) and the gradients the reference's on it. (A group
  // mean that pools its first head only, mutant group-pool-first-head-only, fails it; 0.8 s.)
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32", "mra_fwd_r16x4x1_d32_f32"})) return;
  for (const auto& [seed, sides, dim, policy] : {std::tuple{320, std::vector<int64_t>{32, 1}, 64, ref::Policy::global},
                                                 std::tuple{321, std::vector<int64_t>{16, 4, 1}, 32, ref::Policy::row}}) {
    Case c = random_case(uint64_t(seed), sides, dim, 2, 4, 70, 70, ref::Mode::full, 0.8);
    group_and_stride(c, 2, Storage::bnhd, uint64_t(seed) + 1000);
    c.config.selection = ref::Scope::group;
    c.config.policy = policy;
    c.what += ", selection group";
    const Grads g = check_case(c);
    ref::Problem rp = ref::Problem::of(c.batch, c.heads, c.nq, c.nk, c.dim, c.q.data(), c.k.data(), c.v.data(),
                                       c.qmask.data(), c.kmask.data(), c.scale);
    rp.heads_kv = c.heads_kv;
    const ref::Selection want = ref::select(rp, c.config);
    int64_t refined = 0;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t l = 0; l < int64_t(sides.size()) - 1; ++l) {
          CAPTURE(b);
          CAPTURE(h);
          CAPTURE(l);
          CHECK(g.used.at(b, h, l) == want.at(b, h, l));
          CHECK(g.used.at(b, h, l) == g.used.at(b, h - h % 2, l));  // the group's first head's
          refined += int64_t(g.used.at(b, h, l).size());
        }
    CHECK(refined > 0);
  }
}

TEST_CASE("backward.grouped K/V heads: a poisoned query head") {
  // §7.5 with §8: an Inf in dout of a real query of head 3 (batch 0) makes dq of that slice and dk, dv of its K/V
  // head (1 of 2) NaN on real tokens; the other query head of the group and the other K/V head are finite.
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  Case c = random_case(310, {32, 1}, 64, 2, 4, 70, 45, ref::Mode::full, 0.8);
  group_and_stride(c, 2, Storage::bnhd, 1310);
  int64_t i = 0;
  while (!c.qmask[size_t(i)]) ++i;
  c.dout[size_t(((0 * 4 + 3) * c.nq + i) * c.dim + 7)] = INFINITY;
  const Grads g = run_backward(c);
  int64_t nan_dk = 0, real_keys = 0;
  for (float x : g.dk) nan_dk += std::isnan(x);
  for (int64_t j = 0; j < c.nk; ++j) real_keys += c.kmask[size_t(j)] != 0;
  CHECK(nan_dk == real_keys * c.dim);  // exactly the real keys of (batch 0, K/V head 1)
  bool all_nan = true;  // on the real keys of (batch 0, K/V head 1)
  for (int64_t j = 0; j < c.nk; ++j)
    for (int64_t d = 0; c.kmask[size_t(j)] && d < c.dim; ++d) {
      const size_t t = size_t(((0 * 2 + 1) * c.nk + j) * c.dim + d);
      all_nan &= std::isnan(g.dk[t]) && std::isnan(g.dv[t]);
    }
  CHECK(all_nan);
  check_all(g, c);
}

namespace {

// The generated configurations of this build with 16-bit storage: (name, dtype, head dim, block sides).
struct Built16 {
  std::string name;
  mra_dtype dtype;
  int64_t dim;
  std::vector<int64_t> sides;
};
std::vector<Built16> built_16bit() {
  std::vector<Built16> out;
#define MRA_CONFIG(cname, dtype, dim, levels, s1, s2, s3, s4)                                             \
  if (dtype != MRA_DTYPE_F32 && mra::test::configuration_built(#cname)) {                                   \
    const int64_t all[4] = {s1, s2, s3, s4};                                                                \
    out.push_back({#cname, dtype, dim, std::vector<int64_t>(all, all + levels)});                          \
  }
#include "registry.inc"
#undef MRA_CONFIG
  return out;
}

// §9.7: the case made causal under policy row with `per_row` blocks per block row at every level.
void make_causal(Case& c, int64_t per_row) {
  c.causal = true;
  c.config.policy = ref::Policy::row;
  c.config.budgets = std::vector<int64_t>(c.sides.size() - 1, per_row);
  c.what += ", causal (delta " + std::to_string(c.nk - c.nq) + "), policy row " + std::to_string(per_row);
}

}  // namespace

TEST_CASE("backward.16-bit storage, every configuration") {
  // Every f16/bf16 configuration built: q, k, v, dout rounded to the type, the forward's stored output, the
  // gradients stored in the type (docs/kernels.md, "Backward", 16-bit storage). Partial blocks (Nq = 2 s_1 + 5,
  // Nk = 2 s_1 - 3), masks, mode full (every level's coarse gradients); f16 on one K/V head per query head, bf16
  // with 2 query heads on 1 K/V head (§8) and in mode sparse every other configuration; every third configuration
  // causal (§9.7, policy row, 1 block per row; δ = Nk − Nq = −8: the first queries see nothing).
  const std::vector<Built16> configs = built_16bit();
  if (configs.empty()) {
    MESSAGE("skipped: this build has no f16/bf16 configuration (MRA_KERNELS)");
    mra::test::case_skipped = true;
    return;
  }
  uint64_t seed = 400;
  int64_t geometry = 0;  // counts the (sides, D) pairs, each built as f16 and as bf16
  for (const Built16& cfg : configs) {
    const int64_t s1 = cfg.sides[0];
    const bool bf16 = cfg.dtype == MRA_DTYPE_BF16;
    const ref::Mode mode = bf16 && geometry++ % 2 ? ref::Mode::sparse : ref::Mode::full;
    Case c = random_case(seed, cfg.sides, cfg.dim, 1, 2, 2 * s1 + 5, 2 * s1 - 3, mode, 0.85);
    c.dtype = cfg.dtype;
    if (bf16) {
      Rng rng(seed + 1000);
      c.heads_kv = 1;
      c.k = mra::test::noise(rng, c.batch, 1, c.nk, c.dim);
      c.v = mra::test::noise(rng, c.batch, 1, c.nk, c.dim);
      c.what += ", 2 heads on 1";
    }
    if (seed % 3 == 2) make_causal(c, 1);
    c.what = cfg.name + ": " + c.what;
    check_case(c);
    ++seed;
  }
}

TEST_CASE("backward.r32x1_d64_bf16 production") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_bf16"})) return;
  // Structured inputs at N = 1024 with 4 blocks per row, as the f32 production case, in bf16 storage.
  Case c = production_case("bf16, structured B 1 H 2 N 1024 D 64, full, 4 blocks per row", 1024, 1024, 9);
  c.dtype = MRA_DTYPE_BF16;
  c.config.budgets = ref::budgets_from_blocks_per_row(c.sides, 1024, 1024, 4);
  check_case(c);
}

TEST_CASE("backward.causal on every f32 configuration") {
  // §9.7 on every f32 configuration this build has (each has a backward): one case each, cycling through δ = 0,
  // prefill (δ = s_1 + 3, so the diagonal crosses blocks at every level) and δ < 0 (Nq > Nk: the first queries see
  // nothing), both modes, masks, partial blocks, 1 block per row (coarse components at every level in mode full).
  int index = 0, run = 0;
  std::string missing;
  const auto one = [&](const char* name, mra_dtype dtype, int64_t dim, std::vector<int64_t> sides) {
    if (dtype != MRA_DTYPE_F32) return;
    const int64_t s1 = sides[0], kind = index % 3;
    const int64_t nq = 2 * s1 + 3, nk = kind == 0 ? nq : kind == 1 ? nq + s1 + 3 : nq - s1 / 2 - 1;
    const ref::Mode mode = index % 2 == 0 ? ref::Mode::full : ref::Mode::sparse;
    Case c = random_case(uint64_t(400 + index), sides, dim, 1, 2, nq, nk, mode, 0.85);
    make_causal(c, 1);
    c.what = std::string(name) + ", " + c.what;
    check_case(c);
    ++index;
    ++run;
  };
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4)                  \
  {                                                                           \
    const std::vector<int64_t> all{s1, s2, s3, s4};                           \
    one(#name, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels)); \
  }
#include "registry.inc"
#undef MRA_CONFIG
  if (run == 0 && !mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  MESSAGE(run, " f32 configurations checked with causal attention");
}

TEST_CASE("backward.causal production") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  // A decoder's shape: structured inputs, N = 1024, 4 blocks per row, mode full, plus 64 cached keys (δ = 64).
  Case c = production_case("structured B 1 H 2 Nq 1024 Nk 1088 D 64, full", 1024, 1088, 17);
  make_causal(c, 4);
  check_case(c);
}

TEST_CASE("backward.causal: no gradient from a query to a key it does not see") {
  // §9.7 on the kernels. Nq = 3 s_1 + 5, Nk = Nq + s_1 + 3, the last 9 queries padded: the keys past the last real
  // query's horizon get dk = dv = 0 exactly. Then every key and value after a cut inside a level-1 block is
  // redrawn: dq stays bit for bit on every row whose level-1 block (mode full: the block's queries share q̄) or own
  // horizon (mode sparse) ends before the cut, and some later row changes. 2 and 3 levels, both modes.
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32", "mra_fwd_r16x4x1_d32_f32"})) return;
  int seed = 500;
  for (auto [sides, dim] : {std::tuple{std::vector<int64_t>{32, 1}, int64_t(64)},
                            std::tuple{std::vector<int64_t>{16, 4, 1}, int64_t(32)}})
    for (ref::Mode mode : {ref::Mode::full, ref::Mode::sparse}) {
      const int64_t s1 = sides[0], nq = 3 * s1 + 5, nk = nq + s1 + 3, delta = nk - nq, D = dim;
      Case c = random_case(uint64_t(seed++), sides, dim, 1, 2, nq, nk, mode, 1.0);
      c.qmask = mra::test::padding_mask(1, nq, {9});
      make_causal(c, 1);
      INFO(c.what);
      const Grads g = run_backward(c, false);
      const int64_t last_seen = nq - 10 + delta;  // the last real query's horizon
      // Every seen key has a gradient in mode full (a coarse term or an exact entry covers it); in mode sparse the
      // last seen key at least (its pair crosses the diagonal: refined).
      int64_t unseen_nonzero = 0, seen_zero = 0, last_zero = 0;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t j = 0; j < nk; ++j) {
          bool zero = true;
          for (int64_t d = 0; d < D; ++d)
            zero = zero && g.dk[size_t((h * nk + j) * D + d)] == 0.f && g.dv[size_t((h * nk + j) * D + d)] == 0.f;
          if (j > last_seen) unseen_nonzero += !zero;
          else seen_zero += zero;
          if (j == last_seen) last_zero += zero;
        }
      CHECK(unseen_nonzero == 0);
      CHECK((mode == ref::Mode::sparse || seen_zero == 0));
      CHECK(last_zero == 0);
      const int64_t cut = s1 + s1 / 2 + delta;  // keys after the cut are redrawn
      Case d = c;
      Rng rng(uint64_t(seed) * 7);
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t j = cut + 1; j < nk; ++j)
          for (int64_t e = 0; e < D; ++e) {
            d.k[size_t((h * nk + j) * D + e)] = mra::test::grid_value(rng, 1000, 0x1p-8f);
            d.v[size_t((h * nk + j) * D + e)] = mra::test::grid_value(rng, 1000, 0x1p-8f);
          }
      const Grads moved = run_backward(d, false);
      int64_t kept = 0, kept_changed = 0, later_changed = 0;
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t i = 0; i < nq - 9; ++i) {
          const int64_t last = mode == ref::Mode::full ? std::min((i / s1 + 1) * s1, nq) - 1 : i;
          const size_t row = size_t((h * nq + i) * D);
          const bool same = std::memcmp(&g.dq[row], &moved.dq[row], size_t(D) * sizeof(float)) == 0;
          if (last + delta <= cut) {
            ++kept;
            kept_changed += !same;
          } else {
            later_changed += !same;
          }
        }
      CHECK(kept >= 2 * (mode == ref::Mode::full ? s1 : s1 + s1 / 2));
      CHECK(kept_changed == 0);
      CHECK(later_changed > 0);
    }
}

TEST_CASE("backward.causal: a non-finite value poisons the slice") {
  // §9.7 (§7.5 under causal attention): a NaN in the last real key of slice (0, 1), which only the last queries see,
  // and an Inf in a real query of slice (1, 0) make every real token's gradient of those slices NaN, though the
  // forward poisons rows only (§9.5); the other slices are finite and match the reference.
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  Case c = random_case(520, {32, 1}, 64, 2, 2, 70, 90, ref::Mode::full, 0.8);
  make_causal(c, 1);
  int64_t j = c.nk - 1, i = 0;
  while (!c.kmask[size_t(j)]) --j;
  while (!c.qmask[size_t(c.nq + i)]) ++i;
  c.k[size_t(((0 * 2 + 1) * c.nk + j) * c.dim + 2)] = NAN;
  c.q[size_t(((1 * 2 + 0) * c.nq + i) * c.dim + 4)] = INFINITY;
  const Grads g = run_backward(c);
  for (int64_t slice = 0; slice < 4; ++slice) {
    const int64_t b = slice / 2;
    const bool poisoned = slice == 1 || slice == 2;
    int64_t wrong = 0;
    for (int64_t t = 0; t < c.nq; ++t)
      for (int64_t d = 0; d < c.dim; ++d) {
        const float x = g.dq[size_t((slice * c.nq + t) * c.dim + d)];
        wrong += c.qmask[size_t(b * c.nq + t)] ? std::isnan(x) != poisoned : x != 0.f;
      }
    for (int64_t t = 0; t < c.nk; ++t)
      for (int64_t d = 0; d < c.dim; ++d) {
        const float x = g.dk[size_t((slice * c.nk + t) * c.dim + d)], y = g.dv[size_t((slice * c.nk + t) * c.dim + d)];
        wrong += c.kmask[size_t(b * c.nk + t)] ? (std::isnan(x) != poisoned) + (std::isnan(y) != poisoned)
                                                : (x != 0.f) + (y != 0.f);
      }
    INFO("slice ", slice, poisoned ? " (poisoned)" : "");
    CHECK(wrong == 0);
  }
  check_all(g, c);
}

namespace {

// x (a multiple of 2^-6 in [-2, 2]: exact in every storage type) as the bits of `dtype`, appended to `out`.
void store_as(mra_dtype dtype, float x, std::vector<uint8_t>& out) {
  uint32_t bits = 0;
  std::memcpy(&bits, &x, 4);
  uint16_t half = 0;
  if (dtype == MRA_DTYPE_BF16) half = uint16_t(bits >> 16);
  if (dtype == MRA_DTYPE_F16 && x != 0.f)  // normal and exact: exponent rebased from 127 to 15, mantissa cut to 10 bits
    half = uint16_t(((bits >> 16) & 0x8000u) | ((((bits >> 23) & 0xffu) - 112u) << 10) | ((bits >> 13) & 0x3ffu));
  const auto* p = dtype == MRA_DTYPE_F32 ? reinterpret_cast<const uint8_t*>(&x) : reinterpret_cast<const uint8_t*>(&half);
  out.insert(out.end(), p, p + (dtype == MRA_DTYPE_F32 ? 4 : 2));
}

// Whether the element at `bytes` of storage `dtype` is zero (either sign).
bool stored_zero(mra_dtype dtype, const uint8_t* bytes) {
  uint32_t bits = 0;
  std::memcpy(&bits, bytes, dtype == MRA_DTYPE_F32 ? 4 : 2);
  return (bits & (dtype == MRA_DTYPE_F32 ? 0x7fffffffu : 0x7fffu)) == 0;
}

}  // namespace

TEST_CASE("backward.causal: every configuration with a backward sends nothing to unseen keys") {
  // §9.7 on every configuration of the build, whatever its dtype, whose backward accepts causal attention (every
  // one: f32 on CUDA cores, f16/bf16 with the exact part on tensor cores). Nq = 2 s_1 + 5,
  // Nk = Nq + s_1 + 3, the last 7 queries padded, mode full, 1 block per row: dk and dv are exactly 0 on the keys
  // past the last real query's horizon (some of them inside refined crossing pairs) and not all 0 before; after the
  // keys and values past a cut are redrawn, dq is bit for bit unchanged on the rows of the level-1 blocks that end
  // before the cut. Exact comparisons only, so no tolerance per dtype is needed.
  int checked = 0, refused = 0;
  const auto one = [&](const char* name, mra_dtype dtype, int64_t dim, std::vector<int64_t> sides) {
    const int64_t s1 = sides[0], nq = 2 * s1 + 5, nk = nq + s1 + 3, delta = nk - nq, heads = 2;
    ref::Config config;
    config.scales = sides;
    config.policy = ref::Policy::row;
    config.budgets = std::vector<int64_t>(sides.size() - 1, 1);
    mra_problem p = mra::test::mra_problem_of(config, 1, heads, nq, nk, dim, dtype);
    p.causal = 1;
    size_t fbytes = 0, gbytes = 0;
    if (mra_backward_workspace_size(&p, &gbytes) != MRA_SUCCESS) {
      ++refused;
      return;
    }
    REQUIRE(mra_workspace_size(&p, &fbytes) == MRA_SUCCESS);
    INFO(name);
    Rng rng(uint64_t(nq * 1000 + dim));
    const auto draw = [&](int64_t n) {
      std::vector<uint8_t> x;
      for (int64_t e = 0; e < heads * n * dim; ++e) store_as(dtype, mra::test::grid_value(rng, 128, 0x1p-6f), x);
      return x;
    };
    const size_t es = dtype == MRA_DTYPE_F32 ? 4 : 2, qn = size_t(heads * nq * dim) * es, kn = size_t(heads * nk * dim) * es;
    const std::vector<uint8_t> q = draw(nq), dout = draw(nq), qmask = mra::test::padding_mask(1, nq, {7});
    std::vector<uint8_t> k = draw(nk), v = draw(nk);
    const auto run = [&](std::vector<uint8_t>& dq, std::vector<uint8_t>& dk, std::vector<uint8_t>& dv) {
      Buffer bq(qn), bk(kn), bv(kn), bd(qn), bo(qn), bdq(qn), bdk(kn), bdv(kn), fws(fbytes);
      std::memcpy(bq.data(), q.data(), qn);
      std::memcpy(bk.data(), k.data(), kn);
      std::memcpy(bv.data(), v.data(), kn);
      std::memcpy(bd.data(), dout.data(), qn);
      std::string error;
      const mra_status st = mra::test::run_backward(p, {bq.data(), bk.data(), bv.data(), qn, kn, qmask.data(), nullptr},
                                                    {bd.data(), bo.data(), bdq.data(), bdk.data(), bdv.data()},
                                                    fws.data(), fbytes, gbytes, &error);
      INFO(error);
      REQUIRE(st == MRA_SUCCESS);
      const auto* x = static_cast<const uint8_t*>(bdq.data());
      dq.assign(x, x + qn);
      x = static_cast<const uint8_t*>(bdk.data());
      dk.assign(x, x + kn);
      x = static_cast<const uint8_t*>(bdv.data());
      dv.assign(x, x + kn);
    };
    std::vector<uint8_t> dq, dk, dv, dq2, dk2, dv2;
    run(dq, dk, dv);
    const int64_t last_seen = nq - 8 + delta;
    int64_t unseen_nonzero = 0, seen_nonzero = 0;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < nk; ++j)
        for (int64_t d = 0; d < dim; ++d) {
          const size_t at = size_t((h * nk + j) * dim + d) * es;
          const bool zero = stored_zero(dtype, &dk[at]) && stored_zero(dtype, &dv[at]);
          (j > last_seen ? unseen_nonzero : seen_nonzero) += !zero;
        }
    CHECK(unseen_nonzero == 0);
    CHECK(seen_nonzero > 0);
    const int64_t cut = s1 + s1 / 2 + delta;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = cut + 1; j < nk; ++j)
        for (int64_t d = 0; d < dim; ++d) {
          const size_t at = size_t((h * nk + j) * dim + d) * es;
          std::vector<uint8_t> x;
          store_as(dtype, mra::test::grid_value(rng, 128, 0x1p-6f), x);
          std::memcpy(&k[at], x.data(), es);
          store_as(dtype, mra::test::grid_value(rng, 128, 0x1p-6f), x);
          std::memcpy(&v[at], x.data() + es, es);
        }
    run(dq2, dk2, dv2);
    const size_t block = size_t(s1 * dim) * es;  // level-1 query block 0 of each head ends before the cut
    int64_t kept_changed = 0;
    for (int64_t h = 0; h < heads; ++h)
      kept_changed += std::memcmp(&dq[size_t(h * nq * dim) * es], &dq2[size_t(h * nq * dim) * es], block) != 0;
    CHECK(kept_changed == 0);
    CHECK(dq != dq2);
    ++checked;
  };
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4)                           \
  {                                                                                    \
    const std::vector<int64_t> all{s1, s2, s3, s4};                                    \
    one(#name, dtype, dim, std::vector<int64_t>(all.begin(), all.begin() + levels));   \
  }
#include "registry.inc"
#undef MRA_CONFIG
  if (checked == 0 && !mra::test::skip_unless_built({"mra_fwd_r32x1_d64_f32"})) return;
  MESSAGE(checked, " configurations checked, ", refused, " without a causal backward");
  CHECK(checked > 0);
}
