// tools/mra-ref/half.cpp: binary16 and bfloat16 conversions (half.h).
#include "half.h"

#include <bit>
#include <cmath>

namespace mra::half {

float binary16_to_float(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float magnitude;
  if (exponent == 0x1f)
    magnitude = mantissa ? NAN : INFINITY;
  else if (exponent == 0)
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // subnormal: multiples of 2^-24
  else
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
  return (h >> 15) ? -magnitude : magnitude;
}

// bfloat16 is the upper half of a float32.
float bfloat16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

uint16_t float_to_binary16(float x) {
  const auto sign = static_cast<uint16_t>((std::bit_cast<uint32_t>(x) >> 16) & 0x8000);
  const float a = std::fabs(x);
  if (std::isnan(x)) return sign | 0x7e00;
  // 65520 is halfway between 65504 and 2^16, and ties go to the even neighbour, infinity.
  if (a >= 65520.0f) return sign | 0x7c00;
  // Below 2^-14, multiples of 2^-24 (a * 2^24 is exact); rounding up to 1024 gives 2^-14's own encoding.
  if (a < 0x1p-14f) return sign | static_cast<uint16_t>(std::nearbyint(a * 0x1p24f));
  int e = 0;
  std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1): 11 significant bits are a * 2^(11 - e), in [1024, 2048)
  auto significand = static_cast<uint32_t>(std::nearbyint(std::ldexp(a, 11 - e)));
  int biased = e - 1 + 15;
  if (significand == 2048) {  // rounded up to the next power of two
    significand = 1024;
    ++biased;
  }
  return sign | static_cast<uint16_t>(biased << 10) | static_cast<uint16_t>(significand - 1024);
}

uint16_t float_to_bfloat16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if (std::isnan(x)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // stays a (quiet) NaN
  // Adding 0x7fff, plus one when the kept half is odd, carries into it exactly when rounding up is due.
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

}  // namespace mra::half
