// tools/mra-ref/inflate.h: a decoder of raw DEFLATE streams (RFC 1951), the compression of
// np.savez_compressed's .npz members; dependency-free so that mra-ref needs no zlib.
// Fuzzed through the ZIP reader (tests/fuzz, target npz); tested by tests/cli (zip_test.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mra::zip {

// Decodes `in` into `out`. Fails with a one-line `error` (and `out` unspecified) on a malformed stream, one that
// ends early, or one that would produce more than `max_out` bytes; the output never grows beyond `max_out`.
// Bytes after the final block are ignored, as zlib does.
bool inflate(std::string_view in, uint64_t max_out, std::string& out, std::string& error);

}  // namespace mra::zip
