// tests/common/inputs.h: reproducible test inputs for every test area.
//
// Random numbers come from std::mt19937_64 and are turned into floats here (the standard distributions differ
// between compilers). Besides iid noise, `structured` builds what real attention looks like: queries and keys
// drift smoothly along the sequence (locality: nearby tokens attend to each other) and a few global tokens
// carry a shared direction that every query attends to.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace mra::test {

class Rng {
 public:
  explicit Rng(uint64_t seed) : seed_(seed), gen_(seed) {}
  uint64_t seed() const { return seed_; }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(gen_() >> 11) * 0x1.0p-53; }
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Standard normal by Box-Muller.
  double normal() {
    const double u = 1.0 - uniform(), w = uniform();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * w);
  }
  int64_t below(int64_t n) { return int64_t(gen_() % uint64_t(n)); }

 private:
  uint64_t seed_;
  std::mt19937_64 gen_;
};

// A [batch, heads, n, dim] tensor of iid normal values times `amplitude`.
inline std::vector<float> noise(Rng& rng, int64_t batch, int64_t heads, int64_t n, int64_t dim,
                                double amplitude = 1.0) {
  std::vector<float> t(size_t(batch * heads * n * dim));
  for (float& x : t) x = float(amplitude * rng.normal());
  return t;
}

// Structured Q and K (and any V): a smooth random walk along the sequence plus noise, and `globals` tokens at
// the start that share one strong direction, so that attention has locality and global columns.
struct Structured {
  std::vector<float> q, k, v;
};
inline Structured structured(Rng& rng, int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim,
                             int64_t globals = 2, double strength = 3.0) {
  Structured s;
  auto walk = [&](int64_t n, double noise_level, bool mark_globals, std::vector<float>& out,
                  const std::vector<double>& global_dir, size_t base) {
    std::vector<double> pos(static_cast<size_t>(dim));
    for (double& x : pos) x = rng.normal();
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t d = 0; d < dim; ++d) {
        pos[size_t(d)] = 0.97 * pos[size_t(d)] + 0.25 * rng.normal();
        double x = strength * pos[size_t(d)] / std::sqrt(double(dim)) * 2.0 + noise_level * rng.normal();
        if (mark_globals && i < globals) x += strength * global_dir[size_t(d)];
        out[base + size_t(i * dim + d)] = float(x);
      }
    }
  };
  s.q.resize(size_t(batch * heads * nq * dim));
  s.k.resize(size_t(batch * heads * nk * dim));
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    std::vector<double> dir(static_cast<size_t>(dim));
    for (double& x : dir) x = rng.normal() / std::sqrt(double(dim));
    // Queries and keys follow the same walk statistics; keys carry the global direction, and queries lean
    // towards it a little, so the global key columns score high in every row.
    walk(nq, 0.3, false, s.q, dir, size_t(bh * nq * dim));
    walk(nk, 0.3, true, s.k, dir, size_t(bh * nk * dim));
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t d = 0; d < dim; ++d) s.q[size_t((bh * nq + i) * dim + d)] += float(0.5 * dir[size_t(d)]);
  }
  s.v = noise(rng, batch, heads, nk, dim);
  return s;
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
