// tests/kernels/test_backward_kernels.cpp: the generated backward kernels (runtime/kernels/backward.cuh), run through
// the C API (the forward, then the backward on its workspace) against the reference backward in double
// (docs/semantics.md §7) given the kernels' own selection, read from the forward's workspace. test_backward_kernels
// runs them on the CPU emulation (backend_emulated.cpp); test_backward_kernels_cuda (CTest backward.cuda, built
// with nvcc, skipped without a GPU; tools/gpu-check.sh) runs the same cases on a GPU (backend_cuda.cpp).
//   ctest --test-dir build -L backward        or        build/tests/kernels/test_backward_kernels
//
// Tolerance (docs/kernels.md, "Backward"): per tensor, |x - ref| <= atol + rtol |ref| with rtol = K u and
// atol = K u max|ref|, u = 2^-24 and K = 4 (D + max(Nq, Nk)): a worst-case bound, not a calibration. An f32 dot
// product of length D (the logits, dout·v) and a sum of at most max(Nq, Nk) products (a gradient element sums over
// the keys of a row or the queries of a column) carry at most their length times u of the sum of the magnitudes,
// which the weights P (summing to 1 per row) keep near max|ref|. The measured use is printed: at most 2.7 % in
// these cases; the mutants of docs/kernels.md ("Backward") change the gradients by far more than the tolerance.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "backend.h"
#include "common/check.h"
#include "common/inputs.h"
#include "common/problem.h"
#include "common/skip.h"
#include "kernels/layout.h"
#include "mra.h"
#include "mra/reference.h"

namespace {

namespace ref = mra::ref;
using mra::test::Rng;

constexpr double kU32 = 0x1.0p-24;

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
  int64_t batch = 1, heads = 1, nq = 0, nk = 0, dim = 0;
  double scale = 0.0;  // 0: the default 1/sqrt(D)
  std::vector<int64_t> sides;
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
};

// Forward, then backward, on the test's backend; the reference backward on the kernels' selection (unless
// `reference` is false).
Grads run_backward(Case& c, bool reference = true) {
  const mra_problem p =
      mra::test::mra_problem_of(c.config, c.batch, c.heads, c.nq, c.nk, c.dim, MRA_DTYPE_F32, c.scale);
  mra::kern::Layout L;
  REQUIRE(mra::kern::make_layout(p, &L) == MRA_SUCCESS);
  size_t fbytes = 0, gbytes = 0;
  REQUIRE(mra_workspace_size(&p, &fbytes) == MRA_SUCCESS);
  REQUIRE(mra_backward_workspace_size(&p, &gbytes) == MRA_SUCCESS);
  const size_t qn = c.q.size(), kn = c.k.size();
  Buffer out(qn * 4, 0x7f), fws(fbytes, 0xff);
  Buffer dq(qn * 4, 0x7f), dk(kn * 4, 0x7f), dv(kn * 4, 0x7f);  // 3.4e38: an unwritten element fails
  const uint8_t* qm = c.qmask.empty() ? nullptr : c.qmask.data();
  const uint8_t* km = c.kmask.empty() ? nullptr : c.kmask.data();
  const mra::test::Tensors t{c.q.data(), c.k.data(), c.v.data(), qn * 4, kn * 4, qm, km};
  std::string error;
  const mra_status s = mra::test::run_backward(p, t, {c.dout.data(), out.data(), dq.data(), dk.data(), dv.data()},
                                               fws.data(), fbytes, gbytes, &error);
  INFO(c.what, "; ", error);
  REQUIRE(s == MRA_SUCCESS);
  Grads g{std::vector<float>(dq.f(), dq.f() + qn), std::vector<float>(dk.f(), dk.f() + kn),
          std::vector<float>(dv.f(), dv.f() + kn), {}, kernel_selection(c, L, fws)};
  const ref::Problem rp = ref::Problem::of(c.batch, c.heads, c.nq, c.nk, c.dim, c.q.data(), c.k.data(), c.v.data(), qm, km,
                                           c.scale);
  if (reference) g.want = ref::attend_backward(rp, c.config, g.used, c.dout.data());
  return g;
}

// One tensor against the reference with the tolerance of the file's header; returns the fraction used.
double check_tensor(const char* name, const std::vector<float>& got, const std::vector<double>& want, const Case& c,
                    int64_t n) {
  std::vector<float> ref32(want.begin(), want.end());
  double max_ref = 0.0;
  for (double x : want)
    if (std::isfinite(x)) max_ref = std::max(max_ref, std::fabs(x));
  const double kmul = 4.0 * double(c.dim + std::max(c.nq, c.nk));
  const mra::test::Comparison cmp =
      mra::test::compare(got.data(), ref32.data(), int64_t(got.size()), kmul * kU32 * max_ref, kmul * kU32,
                         {c.batch, c.heads, n, c.dim});
  MESSAGE(c.what, ": ", std::string(name), " ", cmp.report);
  CHECK_MESSAGE(cmp.ok, c.what, ": ", std::string(name), " ", cmp.report);
  return cmp.tolerance_used;
}

Grads check_case(Case& c) {
  Grads g = run_backward(c);
  // A vacuous pass on all-zero gradients is no pass.
  CHECK(mra::test::norm2(std::vector<float>(g.want.dq.begin(), g.want.dq.end())) > 0.0);
  CHECK(mra::test::norm2(std::vector<float>(g.want.dv.begin(), g.want.dv.end())) > 0.0);
  check_tensor("dq", g.dq, g.want.dq, c, c.nq);
  check_tensor("dk", g.dk, g.want.dk, c, c.nk);
  check_tensor("dv", g.dv, g.want.dv, c, c.nk);
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
  const mra::synthetic::Inputs in = mra::synthetic::structured(1, 2, 1024, 1024, 64, 7);
  Rng rng(8);
  Case c;
  c.what = "structured B 1 H 2 N 1024 D 64, full, 4 blocks per row";
  c.batch = 1, c.heads = 2, c.nq = 1024, c.nk = 1024, c.dim = 64, c.sides = {32, 1};
  c.q = in.q, c.k = in.k, c.v = in.v;
  c.dout = mra::test::noise(rng, 1, 2, 1024, 64);
  c.config.scales = c.sides;
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
  check_tensor("dq", g.dq, g.want.dq, c, c.nq);
  check_tensor("dk", g.dk, g.want.dk, c, c.nk);
  check_tensor("dv", g.dv, g.want.dv, c, c.nk);
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
