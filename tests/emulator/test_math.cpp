// tests/emulator/test_math.cpp: __hfma/__hfma2 for fp16 and bf16 against an exact integer model of
// fused multiply-add with one rounding, and the fast-math and half functions against libm within
// the tolerances of docs/emulator.md. Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

#include <cmath>
#include <random>

namespace {

using i128 = __int128;

// Exact value of a 16-bit float, times 2^shift, as an integer (the caller picks shift so it is one).
i128 scaled(float v, int shift) { return static_cast<i128>(std::ldexp(static_cast<double>(v), shift)); }

i128 abs128(i128 v) { return v < 0 ? -v : v; }

// Rounds the exact sum S * 2^-shift to the nearest 16-bit float, ties to even, by comparing the
// representable neighbours of a first guess. to_float/from_bits decode the 16-bit format.
template <typename ToFloat>
uint16_t round_exact(i128 S, int shift, uint16_t guess, ToFloat to_float) {
  uint16_t best = guess;
  i128 best_err = -1;
  for (int d = -2; d <= 2; ++d) {
    const uint16_t c = static_cast<uint16_t>(guess + d);
    if ((c & 0x7fff) > 0x7f00) continue;  // stay clear of Inf/NaN patterns
    if (((c ^ guess) & 0x8000) != 0) continue;
    const i128 err = abs128(scaled(to_float(c), shift) - S);
    if (best_err < 0 || err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return best;
}

}  // namespace

TEST_CASE("__hfma and __hfma2 on fp16 round the exact a*b+c once") {
  EmulatorSettings settings;
  std::mt19937 rng(5);
  const int n = 20000;
  std::vector<__half> a(n), b(n), c(n), out(n);
  std::vector<__half2> out2(n);
  // Exponents chosen so that a*b+c cannot overflow; subnormal inputs included.
  auto random_half = [&](int max_exp) {
    const unsigned sign = rng() & 1u, exp = rng() % static_cast<unsigned>(max_exp + 1), mant = rng() & 0x3ffu;
    return __ushort_as_half(static_cast<unsigned short>((sign << 15) | (exp << 10) | mant));
  };
  for (int i = 0; i < n; ++i) {
    a[i] = random_half(22);
    b[i] = random_half(22);
    c[i] = random_half(29);
  }
  CHECK_LAUNCH(run_half_fma(a.data(), b.data(), c.data(), out.data(), out2.data(), n));
  int wrong = 0, wrong2 = 0;
  auto to_float = [](uint16_t h) { return __half2float(__ushort_as_half(h)); };
  for (int i = 0; i < n; ++i) {
    const float fa = __half2float(a[i]), fb = __half2float(b[i]), fc = __half2float(c[i]);
    const i128 S = scaled(fa, 24) * scaled(fb, 24) + scaled(fc, 48);
    if (S == 0) continue;  // the sign of an exact zero is not what this test is about
    const uint16_t guess = __half_as_ushort(__double2half(std::ldexp(static_cast<double>(S), -48)));
    const uint16_t want = round_exact(S, 48, guess, to_float);
    if (__half_as_ushort(out[i]) != want) ++wrong;
    if (__half_as_ushort(__low2half(out2[i])) != want) ++wrong2;
  }
  CHECK(wrong == 0);
  CHECK(wrong2 == 0);
}

TEST_CASE("__hfma on bf16 rounds the exact a*b+c once") {
  EmulatorSettings settings;
  std::mt19937 rng(9);
  const int n = 20000;
  std::vector<__nv_bfloat16> a(n), b(n), c(n), out(n);
  // Exponents in [-10, 7]: products and sums are multiples of 2^-34 well inside the bf16 range.
  auto random_bf16 = [&]() {
    const unsigned sign = rng() & 1u, exp = 127 - 10 + rng() % 18, mant = rng() & 0x7fu;
    return __ushort_as_bfloat16(static_cast<unsigned short>((sign << 15) | (exp << 7) | mant));
  };
  for (int i = 0; i < n; ++i) {
    a[i] = random_bf16();
    b[i] = random_bf16();
    c[i] = random_bf16();
  }
  CHECK_LAUNCH(run_bf16_fma(a.data(), b.data(), c.data(), out.data(), n));
  int wrong = 0, checked = 0;
  auto to_float = [](uint16_t h) { return __bfloat162float(__ushort_as_bfloat16(h)); };
  for (int i = 0; i < n; ++i) {
    const i128 S = scaled(__bfloat162float(a[i]), 17) * scaled(__bfloat162float(b[i]), 17) + scaled(__bfloat162float(c[i]), 34);
    if (abs128(S) < (i128{1} << 26)) continue;  // keep the neighbours on the 2^-34 grid
    const uint16_t guess = __bfloat16_as_ushort(__double2bfloat16(std::ldexp(static_cast<double>(S), -34)));
    ++checked;
    if (__bfloat16_as_ushort(out[i]) != round_exact(S, 34, guess, to_float)) ++wrong;
  }
  CHECK(checked > n / 2);
  CHECK(wrong == 0);
}

TEST_CASE("fast-math intrinsics and fp16/bf16 functions are within their documented tolerance") {
  EmulatorSettings settings;
  const int n = 200;
  std::vector<float> x(n), out(n * kMathFunctions, NAN);
  for (int i = 0; i < n; ++i) x[i] = -5.0f + 0.05f * static_cast<float>(i);
  CHECK_LAUNCH(run_math_functions(x.data(), out.data(), n));
  auto near = [](float got, double want, double rel) { return std::fabs(got - want) <= rel * std::fabs(want) + 1e-30; };
  for (int i = 0; i < n; ++i) {
    const double v = x[i];
    const float* o = &out[i * kMathFunctions];
    CAPTURE(v);
    CHECK(near(o[0], std::exp(v), 1e-6));
    CHECK(near(o[1], std::log(v + 10), 1e-6));
    CHECK(near(o[2], 1 / std::sqrt(v + 10), 1e-6));
    CHECK(near(o[3], v / 3, 1e-6));
    CHECK(near(o[4], std::sin(v), 1e-5));
    CHECK(near(o[5], std::pow(2.0, v), 1e-6));
    const double vh = __half2float(__float2half(static_cast<float>(v)));
    CHECK(near(o[6], std::exp(vh), 1.0 / 1024));
    const double vb = __bfloat162float(__float2bfloat16(static_cast<float>(v)));
    CHECK(near(o[7], std::exp(vb), 1.0 / 128));
    CHECK(near(o[8], std::sqrt(__half2float(__float2half(static_cast<float>(v + 10)))), 1.0 / 1024));
    CHECK(o[9] == (v < 0 ? 0.0f : v > 1 ? 1.0f : static_cast<float>(v)));
    CHECK(o[10] == std::fma(x[i], 3.0f, 1.0f));
    CHECK(o[11] == std::nearbyint(x[i] * 2.5f));
  }
}
