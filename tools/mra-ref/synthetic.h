// tools/mra-ref/synthetic.h: structured, seeded test inputs for `mra-ref demo` and `mra-ref bench`.
//
// Real attention is not noise: tokens attend mostly to their neighbours, and a few tokens (a CLS token,
// separators) are attended to by everyone. The generator builds exactly that: queries and keys carry
// positional features whose dot product decays with the distance between tokens, plus content noise; a few
// global keys at the start of the sequence share a direction that every query also carries; values vary
// smoothly along the sequence.
// Deterministic for a given seed on every platform: raw std::mt19937_64 bits are turned into numbers here,
// not by std distributions (whose output the standard leaves to the implementation). std::cos and std::log
// may differ in the last bit between C libraries, which changes nothing visible.
#pragma once

#include <cstdint>
#include <vector>

namespace mra::cli {

struct Synthetic {
  int64_t batch = 0, heads = 0, n = 0, dim = 0;
  std::vector<float> q, k, v;  // [batch, heads, n, dim] each
};

Synthetic make_structured_inputs(int64_t batch, int64_t heads, int64_t n, int64_t dim, uint64_t seed);

}  // namespace mra::cli
