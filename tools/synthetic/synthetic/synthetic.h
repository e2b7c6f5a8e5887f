// tools/synthetic/synthetic/synthetic.h: seeded random numbers and structured attention inputs, shared by
// `mra-ref demo`, `mra-ref bench` and the test suite (CMake target mra::synthetic).
//
// Real attention is not noise: tokens attend mostly to their neighbours, and a few tokens (a CLS token,
// separators) are attended to by everyone. `structured` builds exactly that. Everything is deterministic for a
// given seed on every platform: raw std::mt19937_64 bits are turned into numbers here, never by the standard
// distributions, whose output differs between standard libraries.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace mra::synthetic {

class Random {
 public:
  explicit Random(uint64_t seed) : seed_(seed), bits_(seed) {}
  uint64_t seed() const { return seed_; }
  // Uniform in (0, 1): the top 53 bits, offset by half a step so that a logarithm never sees 0.
  double uniform() { return (static_cast<double>(bits_() >> 11) + 0.5) * 0x1p-53; }
  // Standard normal, by the Box-Muller transform.
  double normal();
  // Uniform integer in [0, n).
  int64_t below(int64_t n) { return static_cast<int64_t>(bits_() % static_cast<uint64_t>(n)); }

 private:
  uint64_t seed_;
  std::mt19937_64 bits_;
};

struct Inputs {
  int64_t batch = 0, heads = 0, nq = 0, nk = 0, dim = 0;
  std::vector<float> q;     // [batch, heads, nq, dim]
  std::vector<float> k, v;  // [batch, heads, nk, dim]
};

// Queries and keys with locality (the logit of query i with key j decays with |i - j| over about 16 tokens)
// and 4 global keys at the start that every query attends to; values that change smoothly along the sequence.
Inputs structured(int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim, uint64_t seed);

// `count` iid normal values times `amplitude`.
std::vector<float> noise(Random& rng, int64_t count, double amplitude = 1.0);

}  // namespace mra::synthetic
