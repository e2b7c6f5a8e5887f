// tests/cli/npy_bytes.h: builders of .npy byte strings, valid or deliberately broken, for the tests of the
// .npy reader and of mra-ref (ctest -L cli). Independent of the writer under test on purpose.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace npy_bytes {

// Magic, version, a header length field of the version's width (2 bytes for 1.x, 4 otherwise) holding
// `header.size()`, the header text and the data, exactly as given.
inline std::string file(int major, std::string_view header, std::string_view data, int minor = 0) {
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += static_cast<char>(minor);
  const size_t width = major == 1 ? 2 : 4;
  for (size_t i = 0; i < width; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  out += header;
  out += data;
  return out;
}

// The header numpy writes: dict, spaces up to a 64-byte boundary, newline. `shape` is the tuple text, e.g. "(2, 3)".
inline std::string header(std::string_view descr, std::string_view shape, bool fortran = false, int major = 1) {
  std::string h = "{'descr': '" + std::string(descr) + "', 'fortran_order': " + (fortran ? "True" : "False") +
                  ", 'shape': " + std::string(shape) + ", }";
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + h.size() + 1) % 64 != 0) h += ' ';
  return h + "\n";
}

// The little-endian bytes of the given values, converted to T.
template <class T>
std::string raw(const std::vector<double>& values) {
  std::string out;
  for (double v : values) {
    const T x = static_cast<T>(v);
    char bytes[sizeof(T)];
    std::memcpy(bytes, &x, sizeof(T));
    out.append(bytes, sizeof(T));
  }
  return out;
}

// IEEE binary16 bits of a value that half represents exactly as a normal number (or zero); throws otherwise.
inline uint16_t half_bits(double x) {
  if (x == 0.0) return std::signbit(x) ? 0x8000 : 0;
  int e = 0;
  const double m = std::frexp(std::fabs(x), &e);  // |x| = m * 2^e, m in [0.5, 1)
  const double fraction = (2.0 * m - 1.0) * 1024.0;
  const int exponent = e + 14;
  if (fraction != std::floor(fraction) || exponent < 1 || exponent > 30) throw std::invalid_argument("not a half");
  return static_cast<uint16_t>((x < 0 ? 0x8000 : 0) | (exponent << 10) | static_cast<int>(fraction));
}

inline std::string raw_half(const std::vector<double>& values) {
  std::string out;
  for (double v : values) {
    const uint16_t h = half_bits(v);
    out += static_cast<char>(h & 0xff);
    out += static_cast<char>(h >> 8);
  }
  return out;
}

}  // namespace npy_bytes
