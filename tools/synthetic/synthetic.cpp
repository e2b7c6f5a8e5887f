// tools/synthetic/synthetic.cpp: the generators of synthetic/synthetic.h.
#include "synthetic/synthetic.h"

#include <cmath>
#include <numbers>

namespace mra::synthetic {
namespace {

// An AR(1) walk with unit variance per component and correlation exp(-1/length) between neighbours.
std::vector<double> smooth_walk(Random& rng, int64_t n, int64_t dim, double length) {
  const double rho = std::exp(-1.0 / length), fresh = std::sqrt(1.0 - rho * rho);
  std::vector<double> x(static_cast<size_t>(n * dim));
  for (int64_t d = 0; d < dim; ++d) x[static_cast<size_t>(d)] = rng.normal();
  for (int64_t i = 1; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d)
      x[static_cast<size_t>(i * dim + d)] = rho * x[static_cast<size_t>((i - 1) * dim + d)] + fresh * rng.normal();
  return x;
}

}  // namespace

double Random::normal() {
  const double radius = std::sqrt(-2.0 * std::log(uniform()));
  return radius * std::cos(2.0 * std::numbers::pi * uniform());
}

std::vector<float> noise(Random& rng, int64_t count, double amplitude) {
  std::vector<float> out(static_cast<size_t>(count));
  for (float& x : out) x = static_cast<float>(amplitude * rng.normal());
  return out;
}

Inputs structured(int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim, uint64_t seed) {
  Inputs s{batch, heads, nq, nk, dim, {}, {}, {}};
  s.q.resize(static_cast<size_t>(batch * heads * nq * dim));
  s.k.resize(static_cast<size_t>(batch * heads * nk * dim));
  s.v.resize(static_cast<size_t>(batch * heads * nk * dim));
  Random rng(seed);
  // Queries and keys share positional features [cos(w_m i), sin(w_m i)] with frequencies w_m ~ N(0, 1/L^2),
  // so that p_i . p_j estimates (D/2) exp(-(i-j)^2 / 2L^2) (random Fourier features of a Gaussian kernel):
  // with the default scale 1/sqrt(D) a token's logit with itself is about 8 and decays over about L tokens.
  // Content noise adds logits of spread about 0.5; the global direction adds about 6 to every query's logit
  // with a global key.
  constexpr double kPosition = 1.41, kContent = 0.7, kQueryGlobal = 0.5, kKeyGlobal = 1.5, kLength = 16.0;
  // Like BOS/CLS or register tokens, the global tokens open the sequence.
  constexpr int64_t kGlobalTokens = 4;
  const int64_t half = dim / 2;
  auto position = [&](const std::vector<double>& frequency, int64_t i, int64_t d) {
    const double w = d < 2 * half ? frequency[static_cast<size_t>(d % half)] * static_cast<double>(i) : 0.0;
    return d < half ? std::cos(w) : d < 2 * half ? std::sin(w) : 0.0;
  };
  for (int64_t slice = 0; slice < batch * heads; ++slice) {
    std::vector<double> frequency(static_cast<size_t>(half)), global(static_cast<size_t>(dim));
    for (double& w : frequency) w = rng.normal() / kLength;
    for (double& g : global) g = rng.normal();
    const std::vector<double> values = smooth_walk(rng, nk, dim, 24.0);
    for (int64_t i = 0; i < nq; ++i)
      for (int64_t d = 0; d < dim; ++d)
        s.q[static_cast<size_t>((slice * nq + i) * dim + d)] = static_cast<float>(
            kPosition * position(frequency, i, d) + kContent * rng.normal() + kQueryGlobal * global[static_cast<size_t>(d)]);
    for (int64_t j = 0; j < nk; ++j)
      for (int64_t d = 0; d < dim; ++d) {
        const size_t at = static_cast<size_t>((slice * nk + j) * dim + d);
        s.k[at] = static_cast<float>(kPosition * position(frequency, j, d) + kContent * rng.normal() +
                                     (j < kGlobalTokens ? kKeyGlobal * global[static_cast<size_t>(d)] : 0.0));
        s.v[at] = static_cast<float>(values[static_cast<size_t>(j * dim + d)]);
      }
  }
  return s;
}

}  // namespace mra::synthetic
