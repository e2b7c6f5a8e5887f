// tests/common/inputs.h: reproducible test inputs for every test area.
//
// Random numbers and structured inputs (locality plus global tokens, as real attention has) come from
// mra::synthetic (tools/synthetic), which turns raw std::mt19937_64 bits into numbers itself; this header adds
// the shapes and masks tests need. Print rng.seed() in a failure message so a failing case can be rerun.
#pragma once

#include <cstdint>
#include <vector>

#include "synthetic/synthetic.h"

namespace mra::test {

using Rng = mra::synthetic::Random;

// A [batch, heads, n, dim] tensor of iid normal values times `amplitude`.
inline std::vector<float> noise(Rng& rng, int64_t batch, int64_t heads, int64_t n, int64_t dim,
                                double amplitude = 1.0) {
  return mra::synthetic::noise(rng, batch * heads * n * dim, amplitude);
}

// A number drawn uniformly from the grid {-half, ..., half} times `step` (a power of two, so the scaling is exact):
// the sums, differences and small power-of-two means of such numbers are exact in float, which the tests that
// need exact arithmetic (exact ties, bit-for-bit comparisons, exact means) rely on.
inline float grid_value(Rng& rng, int64_t half, float step) {
  return float(rng.below(2 * half + 1) - half) * step;
}

// A [batch, n] 0/1 mask: batch b pads its last `pad[b]` tokens.
inline std::vector<uint8_t> padding_mask(int64_t batch, int64_t n, const std::vector<int64_t>& pad) {
  std::vector<uint8_t> m(size_t(batch * n), 1);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = n - pad[size_t(b)]; i < n; ++i) m[size_t(b * n + i)] = 0;
  return m;
}

// A [batch, n] mask with each token real with probability `keep`.
inline std::vector<uint8_t> random_mask(Rng& rng, int64_t batch, int64_t n, double keep) {
  std::vector<uint8_t> m(size_t(batch * n));
  for (uint8_t& x : m) x = rng.uniform() < keep ? 1 : 0;
  return m;
}

}  // namespace mra::test
