// tools/mra-ref/npy.h: reader and writer of NumPy .npy files (CMake target `mra::npy`).
//
// Reads format versions 1.0, 2.0 and 3.0 with little-endian, C-ordered data of dtypes
// <f2 <f4 <f8 |b1 |i1 |u1 <i2 <u2 <i4 <u4 <i8 <u8; writes float32 version 1.0 exactly as numpy does (header
// padded with spaces to a multiple of 64 bytes). A zip archive (.npz) is named as such in the error.
// `parse` is a pure function of its byte buffer and is meant to
// be fuzzed: it never crashes and never allocates more than a small multiple of the buffer, whatever the
// header claims. Tested by tests/cli (ctest -L cli).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mra::npy {

enum class Kind { floating, integer, boolean };

struct Array {
  std::string descr;            // the dtype as the header wrote it, e.g. "<f4"
  Kind kind = Kind::floating;
  std::vector<int64_t> shape;   // () for a scalar
  // The elements in C order, widened to double: exact for every float and bool dtype and for integers up to
  // 2^53 in magnitude (larger integers round, which keeps them distinguishable from 0 and 1).
  std::vector<double> values;
  // 0, or 1 + the flat index of the first 64-bit integer beyond ±2^53, which `values` holds rounded.
  size_t rounded = 0;
};

// Either an array or a one-line description of why the bytes are not a supported .npy file.
struct Parsed {
  Array array;
  std::string error;
  bool ok() const { return error.empty(); }
};

Parsed parse(std::string_view bytes);

// The array of `shape` (non-negative dimensions) whose raw little-endian elements of dtype `descr` (as in a
// .npy header, e.g. "<f4") are exactly `data`: the part of `parse` that other containers (.npz members,
// safetensors) share.
Parsed decode(std::string descr, std::vector<int64_t> shape, std::string_view data);

// `text` with every control character written as \xNN, so that a message quoting it stays one line; and the
// same in single quotes, for names read from a file (array, member and tensor names may hold any byte).
std::string printable(std::string_view text);
std::string quoted(std::string_view name);
std::string quoted_list(const std::vector<std::string>& names);  // 'a', 'b', 'c\x0a'

// The names of the arrays in a container of several (.npz, safetensors), or why it could not be read.
struct Listing {
  std::vector<std::string> names;
  std::string error;
  bool ok() const { return error.empty(); }
};

// Reads and parses a file; a file that cannot be opened or read is reported like a malformed one. Reads no
// more than the header declares (plus one byte, to detect trailing data), so a device or a pipe as input
// costs no more than the array it claims to hold; a regular file's size is checked before its data are read.
Parsed load(const std::string& path);

// The bytes of a float32 .npy file of the given shape; `data` holds the product of `shape` elements.
std::string serialize_f32(const std::vector<int64_t>& shape, const float* data);

// Writes `bytes` to `path` as an Output (output.h) does: through a temporary file and a rename for a regular
// file, so that `path` either keeps its previous state or holds the complete new contents; through to a
// device or FIFO; "-" is stdout. Returns an empty string or a one-line error.
std::string write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace mra::npy
