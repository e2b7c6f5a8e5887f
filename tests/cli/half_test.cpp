// tests/cli/half_test.cpp: the 16-bit float conversions of tools/mra-ref/half.h, exhaustively: every binary16 and
// bfloat16 value decodes to what its fields say and encodes back to its own bits; every midpoint between two
// neighbours rounds to the even one, and a hair off it to the nearer one; overflow gives infinity.
//   ctest --test-dir build -L cli      or      build/tests/cli/half_test
#include "common/doctest.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>

#include "half.h"

namespace {

// The value of a binary16 bit pattern from its fields, in double (written apart from half.cpp).
double binary16_value(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double magnitude = e == 0 ? m * std::pow(2.0, -24) : (1.0 + m / 1024.0) * std::pow(2.0, e - 15);
  return (h & 0x8000) ? -magnitude : magnitude;
}

// Checks `encode` on the midpoints of every pair of neighbouring finite values a < b of a 16-bit type, positive
// and negative: the midpoint goes to the one with the even pattern, the floats just inside it to the nearer one.
template <class Decode, class Encode>
void check_rounding(uint16_t largest_finite, Decode decode, Encode encode) {
  for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}})
    for (uint16_t a = 0; a < largest_finite; ++a) {
      const auto lo = static_cast<uint16_t>(sign | a), hi = static_cast<uint16_t>(sign | (a + 1));
      const float x = decode(lo), y = decode(hi);
      const float mid = x + (y - x) / 2;  // exact: a float has more than twice the bits
      INFO("patterns " << lo << ", " << hi);
      REQUIRE(mid != x);
      REQUIRE(mid != y);
      CHECK(encode(mid) == ((a & 1) ? hi : lo));
      CHECK(encode(std::nextafter(mid, x)) == lo);
      CHECK(encode(std::nextafter(mid, y)) == hi);
    }
}

}  // namespace

TEST_CASE("binary16: every pattern decodes to its value and encodes back to itself") {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float x = mra::half::binary16_to_float(h);
    INFO("pattern " << bits);
    if (((h >> 10) & 31) == 31) {  // infinities and NaNs
      CHECK(((h & 1023) ? std::isnan(x) : std::isinf(x)));
      CHECK(std::signbit(x) == bool(h & 0x8000));
      if (std::isinf(x)) CHECK(mra::half::float_to_binary16(x) == h);
      if (std::isnan(x)) CHECK(std::isnan(mra::half::binary16_to_float(mra::half::float_to_binary16(x))));
      continue;
    }
    CHECK(static_cast<double>(x) == binary16_value(h));
    CHECK(mra::half::float_to_binary16(x) == h);
  }
}

TEST_CASE("binary16: round to nearest even, and infinity from 65520 up") {
  check_rounding(0x7bff, mra::half::binary16_to_float, mra::half::float_to_binary16);
  CHECK(mra::half::float_to_binary16(std::nextafter(65520.0f, 0.0f)) == 0x7bff);  // 65504
  CHECK(mra::half::float_to_binary16(65520.0f) == 0x7c00);
  CHECK(mra::half::float_to_binary16(-1e30f) == 0xfc00);
  CHECK(mra::half::float_to_binary16(0x1p-25f) == 0x0000);  // half the smallest subnormal: ties to even, zero
  CHECK(mra::half::float_to_binary16(std::nextafter(0x1p-25f, 1.0f)) == 0x0001);
  CHECK(mra::half::float_to_binary16(-0.0f) == 0x8000);
}

TEST_CASE("bfloat16: every pattern is the upper half of its float, encoded back to itself") {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto b = static_cast<uint16_t>(bits);
    const float x = mra::half::bfloat16_to_float(b);
    INFO("pattern " << bits);
    CHECK(std::bit_cast<uint32_t>(x) == bits << 16);
    if (std::isnan(x))
      CHECK(std::isnan(mra::half::bfloat16_to_float(mra::half::float_to_bfloat16(x))));
    else
      CHECK(mra::half::float_to_bfloat16(x) == b);
  }
}

TEST_CASE("bfloat16: round to nearest even, and infinity beyond its largest value") {
  check_rounding(0x7f7f, mra::half::bfloat16_to_float, mra::half::float_to_bfloat16);
  CHECK(mra::half::float_to_bfloat16(std::numeric_limits<float>::max()) == 0x7f80);
  CHECK(std::isnan(mra::half::bfloat16_to_float(mra::half::float_to_bfloat16(std::bit_cast<float>(0x7f800001u)))));
}
