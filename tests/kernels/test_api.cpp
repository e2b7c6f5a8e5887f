// tests/kernels/test_api.cpp: the C API's contract (runtime/mra.h): statuses and their strings, argument and
// shape checks (of the forward and the backward), unsupported configurations, the workspace size, and use from C
// (api_from_c.c).
//   ctest --test-dir build -L kernels -R api
#include "common/doctest.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "../common/problem.h"
#include "../common/skip.h"
#include "mra.h"

extern "C" int mra_test_c_api(void);

namespace {

// small_problem's configuration, and the f32 one of the backward checks: a case needing one this build leaves out
// (-DMRA_KERNELS) reports itself skipped.
constexpr std::string_view kSmall = "mra_fwd_r16x4x1_d64_bf16", kF32 = "mra_fwd_r32x1_d64_f32";

mra_problem small_problem() {
  return mra::test::mra_problem_of(2, 3, 100, 70, 64, MRA_DTYPE_BF16, {16, 4, 1}, {10, 40});
}

mra_status size_of(const mra_problem& p) {
  size_t bytes = 0;
  return mra_workspace_size(&p, &bytes);
}

}  // namespace

TEST_CASE("api.c_caller") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x1_d32_f32"})) return;  // the configuration api_from_c.c runs
  CHECK(mra_test_c_api() == 0);
}

TEST_CASE("api.status_strings") {
  for (mra_status s : {MRA_SUCCESS, MRA_ERROR_BAD_ARGUMENT, MRA_ERROR_BAD_SHAPE, MRA_ERROR_UNSUPPORTED_CONFIG,
                       MRA_ERROR_LAUNCH_FAILED})
    CHECK(std::strlen(mra_status_string(s)) > 0);
  CHECK(std::string(mra_status_string(static_cast<mra_status>(99))) == "unknown status");
}

TEST_CASE("api.workspace_size") {
  if (!mra::test::skip_unless_built({kSmall})) return;
  mra_problem p = small_problem();
  size_t bytes = 0;
  REQUIRE(mra_workspace_size(&p, &bytes) == MRA_SUCCESS);
  CHECK(bytes > 0);
  CHECK(bytes % 256 == 0);
  size_t more = 0;
  p.budgets[1] = 1000;  // larger budgets need more key slots and longer refined lists
  REQUIRE(mra_workspace_size(&p, &more) == MRA_SUCCESS);
  CHECK(more > bytes);
  CHECK(mra_workspace_size(nullptr, &bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_workspace_size(&p, nullptr) == MRA_ERROR_BAD_ARGUMENT);
}

TEST_CASE("api.bad_shapes") {
  if (!mra::test::skip_unless_built({kSmall, "mra_fwd_r16x1_d64_bf16"})) return;  // the shapes that pass
  for (int which = 0; which < 5; ++which) {
    mra_problem p = small_problem();
    int64_t* field[] = {&p.batch, &p.heads, &p.nq, &p.nk, &p.dim};
    *field[which] = 0;
    CHECK(size_of(p) == MRA_ERROR_BAD_SHAPE);
    *field[which] = -4;
    CHECK(size_of(p) == MRA_ERROR_BAD_SHAPE);
  }
  // The kernels' index ranges (docs/kernels.md, "Selection"): 2^26 level-1 block rows or columns, ...
  mra_problem p = small_problem();
  p.levels = 2;
  p.resolutions[0] = 2;
  p.resolutions[1] = 1;
  p.nq = p.nk = (int64_t(1) << 27) - 2;  // 2^26 - 1 blocks
  CHECK(size_of(p) == MRA_ERROR_UNSUPPORTED_CONFIG);  // the shape passes; no kernel is generated for R = (2, 1)
  p.nq = (int64_t(1) << 27) - 1;
  CHECK(size_of(p) == MRA_ERROR_BAD_SHAPE);
  // ... 2^31 refined pairs at a level, ...
  p = small_problem();
  p.nq = p.nk = int64_t(1) << 20;  // 2^32 level-1 pairs: fine, they are never stored
  p.levels = 2;
  p.resolutions[1] = 1;
  p.budgets[0] = (int64_t(1) << 31) - 1;
  CHECK(size_of(p) == MRA_SUCCESS);
  p.budgets[0] = int64_t(1) << 31;
  CHECK(size_of(p) == MRA_ERROR_BAD_SHAPE);
  // ... and 2^31 candidate slots at a level l >= 2 (rho^2 per refined pair above).
  p = small_problem();
  p.nq = p.nk = int64_t(1) << 20;
  p.budgets[0] = (int64_t(1) << 27) - 1;  // rho = 4: 16 (2^27 - 1) slots
  CHECK(size_of(p) == MRA_SUCCESS);
  p.budgets[0] = int64_t(1) << 27;
  CHECK(size_of(p) == MRA_ERROR_BAD_SHAPE);
}

TEST_CASE("api.bad_arguments") {
  if (!mra::test::skip_unless_built({kSmall})) return;
  auto bad = [](auto change) {
    mra_problem p = small_problem();
    change(p);
    return size_of(p);
  };
  CHECK(bad([](mra_problem& p) { p.levels = 1; }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(bad([](mra_problem& p) { p.levels = MRA_MAX_LEVELS + 1; }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(bad([](mra_problem& p) { p.resolutions[1] = 3; }) == MRA_ERROR_BAD_ARGUMENT);   // does not divide 16
  CHECK(bad([](mra_problem& p) { p.resolutions[2] = 2; }) == MRA_ERROR_BAD_ARGUMENT);   // does not end at 1
  CHECK(bad([](mra_problem& p) { p.budgets[0] = -1; }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(bad([](mra_problem& p) { p.prior_first = -1; }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(bad([](mra_problem& p) { p.scale = -1.0; }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(bad([](mra_problem& p) { p.dtype = static_cast<mra_dtype>(7); }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(bad([](mra_problem& p) { p.mode = static_cast<mra_mode>(7); }) == MRA_ERROR_BAD_ARGUMENT);

  mra_problem p = small_problem();
  size_t bytes = 0;
  REQUIRE(mra_workspace_size(&p, &bytes) == MRA_SUCCESS);
  std::vector<float> buf(size_t(1) << 16);
  void* a = buf.data();
  void* misaligned = reinterpret_cast<char*>(buf.data()) + 2;
  CHECK(mra_forward_host(nullptr, a, a, a, nullptr, nullptr, a, a, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, nullptr, a, a, nullptr, nullptr, a, a, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, a, a, a, nullptr, nullptr, nullptr, a, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, a, a, a, nullptr, nullptr, a, nullptr, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, misaligned, a, a, nullptr, nullptr, a, a, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, a, a, a, nullptr, nullptr, a, a, bytes - 1) == MRA_ERROR_BAD_ARGUMENT);
}

TEST_CASE("api.unsupported_configurations") {
  if (!mra::test::skip_unless_built({kSmall})) return;
  auto status = [](auto change) {
    mra_problem p = small_problem();
    change(p);
    return size_of(p);
  };
  CHECK(status([](mra_problem& p) { p.dim = 48; }) == MRA_ERROR_UNSUPPORTED_CONFIG);
  CHECK(status([](mra_problem& p) { p.resolutions[0] = 8; }) == MRA_ERROR_UNSUPPORTED_CONFIG);
  CHECK(status([](mra_problem& p) {
          p.levels = 2;
          p.resolutions[0] = 128;
          p.resolutions[1] = 1;
        }) == MRA_ERROR_UNSUPPORTED_CONFIG);
  CHECK(status([](mra_problem&) {}) == MRA_SUCCESS);
}

// docs/semantics.md §8: grouped K/V heads and strides. Each rule broken alone gets its status; the layouts the
// section lists pass.
TEST_CASE("api.grouped_heads_and_strides") {
  if (!mra::test::skip_unless_built({kSmall, kF32})) return;
  auto status = [](auto change) {
    mra_problem p = small_problem();  // bf16, B 2, H 3, Nq 100, Nk 70, D 64
    change(p);
    return size_of(p);
  };
  auto set = [](int64_t (&s)[4], int64_t b, int64_t h, int64_t n, int64_t d) {
    s[0] = b, s[1] = h, s[2] = n, s[3] = d;
  };
  CHECK(status([](mra_problem& p) { p.heads_kv = 1; }) == MRA_SUCCESS);  // MQA
  CHECK(status([](mra_problem& p) { p.heads_kv = 3; }) == MRA_SUCCESS);
  CHECK(status([](mra_problem& p) { p.heads_kv = 2; }) == MRA_ERROR_BAD_SHAPE);  // does not divide 3
  CHECK(status([](mra_problem& p) { p.heads_kv = 6; }) == MRA_ERROR_BAD_SHAPE);
  CHECK(status([](mra_problem& p) { p.heads_kv = -1; }) == MRA_ERROR_BAD_SHAPE);
  // FlashAttention's [B, N, H, D] for every tensor, K/V with one head.
  CHECK(status([&](mra_problem& p) {
          p.heads_kv = 1;
          set(p.strides.q, 100 * 3 * 64, 64, 3 * 64, 1);
          set(p.strides.out, 100 * 3 * 64, 64, 3 * 64, 1);
          set(p.strides.k, 70 * 64, 64, 64, 1);
          set(p.strides.v, 0, 64, 64, 1);  // one V for both batch elements
        }) == MRA_SUCCESS);
  CHECK(status([&](mra_problem& p) { set(p.strides.q, 100 * 3 * 64, 64, 3 * 64, 2); }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(status([&](mra_problem& p) { set(p.strides.k, 70 * 64, -64, 64, 1); }) == MRA_ERROR_BAD_ARGUMENT);
  // Rows must start 16-byte aligned: 68 bf16 elements are 136 bytes; 72 are 144.
  CHECK(status([&](mra_problem& p) { set(p.strides.v, 3 * 70 * 72, 70 * 72, 68, 1); }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(status([&](mra_problem& p) { set(p.strides.v, 3 * 70 * 72, 70 * 72, 72, 1); }) == MRA_SUCCESS);
  CHECK(status([&](mra_problem& p) { set(p.strides.k, int64_t(1) << 61, 64, 64, 1); }) == MRA_ERROR_BAD_ARGUMENT);
  // An output whose elements overlap: every head on the same rows, or rows closer than D.
  CHECK(status([&](mra_problem& p) { set(p.strides.out, 100 * 64, 0, 64, 1); }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(status([&](mra_problem& p) { set(p.strides.out, 3 * 100 * 64, 100 * 64, 32, 1); }) == MRA_ERROR_BAD_ARGUMENT);
  // f32 rows: multiples of 4 elements.
  CHECK(status([&](mra_problem& p) {
          p.dtype = MRA_DTYPE_F32;
          set(p.strides.q, 3 * 100 * 66, 100 * 66, 66, 1);
        }) == MRA_ERROR_BAD_ARGUMENT);

  // An output sharing memory with an input is refused by the forward call, which has the pointers.
  mra_problem p = small_problem();
  size_t bytes = 0;
  REQUIRE(mra_workspace_size(&p, &bytes) == MRA_SUCCESS);
  const size_t q_bytes = size_t(2 * 3 * 100 * 64 * 2), kv_bytes = size_t(2 * 3 * 70 * 64 * 2);
  std::vector<float> buf((q_bytes * 2 + kv_bytes * 2 + bytes) / 4 + 16);
  auto* base = reinterpret_cast<unsigned char*>(buf.data());
  base += (16 - reinterpret_cast<uintptr_t>(base) % 16) % 16;
  unsigned char *q = base, *k = q + q_bytes, *v = k + kv_bytes, *out = v + kv_bytes, *ws = out + q_bytes;
  CHECK(mra_forward_host(&p, q, k, v, nullptr, nullptr, q + 16, ws, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, q, k, v, nullptr, nullptr, v + kv_bytes - 16, ws, bytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_forward_host(&p, q, k, v, nullptr, nullptr, out, ws, bytes) == MRA_SUCCESS);

  // The backward kernels take grouped K/V heads and strides as the forward does (§8).
  auto backward = [](auto change) {
    mra_problem f = mra::test::mra_problem_of(2, 3, 100, 70, 64, MRA_DTYPE_F32, {32, 1}, {10});
    change(f);
    size_t b = 0;
    return mra_backward_workspace_size(&f, &b);
  };
  CHECK(backward([](mra_problem&) {}) == MRA_SUCCESS);
  CHECK(backward([&](mra_problem& f) { set(f.strides.q, 3 * 100 * 64, 100 * 64, 64, 1); }) == MRA_SUCCESS);
  CHECK(backward([](mra_problem& f) { f.heads_kv = 3; }) == MRA_SUCCESS);
  CHECK(backward([](mra_problem& f) { f.heads_kv = 1; }) == MRA_SUCCESS);
  CHECK(backward([&](mra_problem& f) { set(f.strides.out, 100 * 3 * 64, 64, 3 * 64, 1); }) == MRA_SUCCESS);
  CHECK(backward([](mra_problem& f) { f.heads_kv = 2; }) == MRA_ERROR_BAD_SHAPE);
}

TEST_CASE("api.policy_and_causal") {
  // and small_problem in f32, whose backward is checked at the end
  if (!mra::test::skip_unless_built({kSmall, "mra_fwd_r16x4x1_d64_f32"})) return;
  auto status = [](auto change) {
    mra_problem p = small_problem();
    change(p);
    return size_of(p);
  };
  CHECK(status([](mra_problem& p) { p.policy = MRA_POLICY_ROW; }) == MRA_SUCCESS);
  CHECK(status([](mra_problem& p) { p.policy = static_cast<mra_policy>(2); }) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(status([](mra_problem& p) { p.causal = 2; }) == MRA_ERROR_BAD_ARGUMENT);
  // §9.4: causal attention is defined with the row policy only.
  CHECK(status([](mra_problem& p) { p.causal = 1; }) == MRA_ERROR_BAD_ARGUMENT);
  // Causal attention with policy row is valid in every configuration (§9); its refined lists hold the crossing
  // pairs besides the budget, so its workspace is at least the non-causal one's.
  CHECK(status([](mra_problem& p) {
          p.causal = 1;
          p.policy = MRA_POLICY_ROW;
        }) == MRA_SUCCESS);
  // Both policies size their own workspace: row keeps per-row picks, global at short N keeps the
  // level-1 logits of the one-CTA selection, so neither bound contains the other.
  mra_problem global = small_problem(), row = small_problem();
  row.policy = MRA_POLICY_ROW;
  size_t global_bytes = 0, row_bytes = 0;
  REQUIRE(mra_workspace_size(&global, &global_bytes) == MRA_SUCCESS);
  REQUIRE(mra_workspace_size(&row, &row_bytes) == MRA_SUCCESS);
  CHECK(row_bytes > 0);
  CHECK(global_bytes > 0);
  CHECK(row_bytes != global_bytes);
  mra_problem causal = row;
  causal.causal = 1;
  size_t causal_bytes = 0;
  REQUIRE(mra_workspace_size(&causal, &causal_bytes) == MRA_SUCCESS);
  CHECK(causal_bytes >= row_bytes);
  // The backward takes causal attention (§9.7) in the dtype with backward kernels, and its workspace does not
  // depend on it; causal with policy global stays refused.
  row.dtype = causal.dtype = MRA_DTYPE_F32;
  size_t grad_bytes = 0, causal_grad_bytes = 0;
  CHECK(mra_backward_workspace_size(&row, &grad_bytes) == MRA_SUCCESS);
  CHECK(mra_backward_workspace_size(&causal, &causal_grad_bytes) == MRA_SUCCESS);
  CHECK(causal_grad_bytes == grad_bytes);
  causal.policy = MRA_POLICY_GLOBAL;
  CHECK(mra_backward_workspace_size(&causal, &causal_grad_bytes) == MRA_ERROR_BAD_ARGUMENT);
}

TEST_CASE("api.selection") {
  if (!mra::test::skip_unless_built({kSmall})) return;
  auto bytes = [](auto change, mra_status want) {
    mra_problem p = small_problem();
    change(p);
    size_t n = 0;
    CHECK(mra_workspace_size(&p, &n) == want);
    return n;
  };
  bytes([](mra_problem& p) { p.selection = static_cast<mra_selection>(2); }, MRA_ERROR_BAD_ARGUMENT);
  bytes([](mra_problem& p) { p.selection = static_cast<mra_selection>(-1); }, MRA_ERROR_BAD_ARGUMENT);
  // §8.4: a group of one head selects as the head does, in the same workspace; real groups (3 heads on one K/V
  // head) make their selection in a region of their own, besides the heads' (runtime/kernels/layout.h).
  const size_t head = bytes([](mra_problem&) {}, MRA_SUCCESS);
  CHECK(bytes([](mra_problem& p) { p.selection = MRA_SELECTION_GROUP; }, MRA_SUCCESS) == head);
  const size_t mqa = bytes([](mra_problem& p) { p.heads_kv = 1; }, MRA_SUCCESS);
  CHECK(bytes([](mra_problem& p) {
          p.heads_kv = 1;
          p.selection = MRA_SELECTION_GROUP;
        }, MRA_SUCCESS) > mqa);
  bytes([](mra_problem& p) {
    p.heads_kv = 1;
    p.selection = MRA_SELECTION_GROUP;
    p.policy = MRA_POLICY_ROW;
    p.causal = 1;
  }, MRA_SUCCESS);
}

TEST_CASE("api.backward_bad_arguments") {
  if (!mra::test::skip_unless_built({kF32})) return;
  // mra_backward_host: one status per bad argument, checked before anything runs, so nothing is written.
  const mra_problem p = mra::test::mra_problem_of(1, 1, 40, 40, 64, MRA_DTYPE_F32, {32, 1}, {1});
  size_t fbytes = 0, gbytes = 0;
  REQUIRE(mra_workspace_size(&p, &fbytes) == MRA_SUCCESS);
  REQUIRE(mra_backward_workspace_size(&p, &gbytes) == MRA_SUCCESS);
  CHECK(gbytes > 0);
  const size_t words = 40 * 64 / 2;  // 64-bit words of one [1, 1, 40, 64] f32 tensor
  std::vector<uint64_t> q(words), k(words), v(words), out(words), dout(words), dk(words), dv(words);
  std::vector<uint64_t> dq(words, ~uint64_t(0)), fws(fbytes / 8 + 1), gws(gbytes / 8 + 1);
  auto call = [&](const mra_problem* pp, const void* dout_ptr, void* dq_ptr, size_t fb, size_t gb) {
    return mra_backward_host(pp, q.data(), k.data(), v.data(), nullptr, nullptr, out.data(), dout_ptr, dq_ptr,
                             dk.data(), dv.data(), fws.data(), fb, gws.data(), gb);
  };
  CHECK(call(nullptr, dout.data(), dq.data(), fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, nullptr, dq.data(), fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, dout.data(), nullptr, fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, reinterpret_cast<const char*>(dout.data()) + 4, dq.data(), fbytes, gbytes) ==
        MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, dout.data(), dq.data(), fbytes - 1, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, dout.data(), dq.data(), fbytes, gbytes - 1) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_backward_workspace_size(&p, nullptr) == MRA_ERROR_BAD_ARGUMENT);
  mra_problem bad = p;
  bad.nq = 0;
  CHECK(call(&bad, dout.data(), dq.data(), fbytes, gbytes) == MRA_ERROR_BAD_SHAPE);
  CHECK(mra_backward_workspace_size(&bad, &gbytes) == MRA_ERROR_BAD_SHAPE);
  bad = p;
  bad.dtype = MRA_DTYPE_BF16;  // 16-bit storage has backward kernels too, with a workspace of the same size
  size_t bf16_bytes = 0;
  if (mra::test::configuration_built("mra_fwd_r32x1_d64_bf16")) {
    CHECK(mra_backward_workspace_size(&bad, &bf16_bytes) == MRA_SUCCESS);
    CHECK(bf16_bytes == gbytes);
  }
  bad = p;
  bad.dim = 48;  // no configuration at all
  CHECK(call(&bad, dout.data(), dq.data(), fbytes, gbytes) == MRA_ERROR_UNSUPPORTED_CONFIG);
  // §8 for the gradients (written with q's, k's and v's strides): a gradient overlapping an input or another
  // gradient, or whose strides repeat an element, is refused.
  CHECK(call(&p, dout.data(), q.data(), fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, dout.data(), out.data(), fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, dout.data(), dout.data(), fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(call(&p, dout.data(), dk.data() + 2, fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(mra_backward_host(&p, q.data(), k.data(), v.data(), nullptr, nullptr, out.data(), dout.data(), dq.data(),
                          dk.data(), dk.data(), fws.data(), fbytes, gws.data(), gbytes) == MRA_ERROR_BAD_ARGUMENT);
  bad = p;
  bad.batch = 2;  // one K shared by both batch elements (batch stride 0): readable, but dk would repeat elements
  bad.strides.k[0] = 0, bad.strides.k[1] = 40 * 64, bad.strides.k[2] = 64, bad.strides.k[3] = 1;
  REQUIRE(mra_workspace_size(&bad, &fbytes) == MRA_SUCCESS);
  CHECK(mra_backward_workspace_size(&bad, &gbytes) == MRA_SUCCESS);
  CHECK(call(&bad, dout.data(), dq.data(), fbytes, gbytes) == MRA_ERROR_BAD_ARGUMENT);
  bool untouched = true;
  for (uint64_t w : dq) untouched &= w == ~uint64_t(0);
  CHECK(untouched);
}

TEST_CASE("api.backward_packed_gradients") {
  // §8: q, k, v packed in one [B, N, H + 2 Hkv, D] buffer (GQA, 2 heads on 1) and dq, dk, dv written with the same
  // strides into one gradient buffer of that layout, interleaved row by row: accepted (their elements are apart
  // modulo the row stride), and every gradient equals, bit for bit, that of separate contiguous buffers.
  if (!mra::test::skip_unless_built({kF32})) return;
  constexpr int64_t N = 40, D = 64, H = 2, W = (H + 2) * D;  // elements per packed row
  mra_problem p = mra::test::mra_problem_of(1, H, N, N, D, MRA_DTYPE_F32, {32, 1}, {1});
  p.heads_kv = 1;
  std::mt19937_64 rng(20261130);
  std::vector<float> packed(size_t(N * W)), dout(size_t(H * N * D));
  for (auto* x : {&packed, &dout})
    for (float& e : *x) e = float(int64_t(rng() >> 41) - (int64_t(1) << 22)) * 0x1p-22f;  // 23 random bits in [-1, 1)
  const auto at = [&](int64_t part) { return packed.data() + part; };  // q at 0, k at H D, v at (H + 1) D
  size_t fbytes = 0, gbytes = 0;
  const auto run = [&](const mra_problem& pr, const float* q, const float* k, const float* v, float* dq, float* dk,
                       float* dv) {
    REQUIRE(mra_workspace_size(&pr, &fbytes) == MRA_SUCCESS);
    REQUIRE(mra_backward_workspace_size(&pr, &gbytes) == MRA_SUCCESS);
    std::vector<float> out(size_t(H * N * D));
    std::vector<uint64_t> fws(fbytes / 8 + 1), gws(gbytes / 8 + 1);
    REQUIRE(mra_forward_host(&pr, q, k, v, nullptr, nullptr, out.data(), fws.data(), fbytes) == MRA_SUCCESS);
    return mra_backward_host(&pr, q, k, v, nullptr, nullptr, out.data(), dout.data(), dq, dk, dv, fws.data(), fbytes,
                             gws.data(), gbytes);
  };
  // Separate contiguous tensors: the expected gradients.
  std::vector<float> q(size_t(H * N * D)), k(size_t(N * D)), v(size_t(N * D));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t h = 0; h < H; ++h) q[size_t((h * N + n) * D + d)] = packed[size_t(n * W + h * D + d)];
      k[size_t(n * D + d)] = packed[size_t(n * W + H * D + d)];
      v[size_t(n * D + d)] = packed[size_t(n * W + (H + 1) * D + d)];
    }
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  REQUIRE(run(p, q.data(), k.data(), v.data(), dq.data(), dk.data(), dv.data()) == MRA_SUCCESS);
  for (const auto* x : {&dq, &dk, &dv}) CHECK(std::any_of(x->begin(), x->end(), [](float e) { return e != 0.f; }));
  // Packed: strides [B, H, N, D] = (N W, D, W, 1) for all three (k and v have one head).
  mra_problem pk = p;
  for (auto* s : {&pk.strides.q, &pk.strides.k, &pk.strides.v}) (*s)[0] = N * W, (*s)[1] = D, (*s)[2] = W, (*s)[3] = 1;
  std::vector<float> grads(size_t(N * W), 1.5f);
  float* g = grads.data();
  REQUIRE(run(pk, at(0), at(H * D), at((H + 1) * D), g, g + H * D, g + (H + 1) * D) == MRA_SUCCESS);
  bool same = true;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t d = 0; d < D; ++d) {
      for (int64_t h = 0; h < H; ++h) same &= grads[size_t(n * W + h * D + d)] == dq[size_t((h * N + n) * D + d)];
      same &= grads[size_t(n * W + H * D + d)] == dk[size_t(n * D + d)];
      same &= grads[size_t(n * W + (H + 1) * D + d)] == dv[size_t(n * D + d)];
    }
  CHECK(same);
  // dk one head too early: its rows overlap dq's second head, refused before anything is written.
  std::vector<float> untouched(grads.size(), 1.5f);
  grads = untouched;
  CHECK(run(pk, at(0), at(H * D), at((H + 1) * D), g, g + D, g + (H + 1) * D) == MRA_ERROR_BAD_ARGUMENT);
  CHECK(grads == untouched);
}
