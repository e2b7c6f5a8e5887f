// tests/racecheck/racecheck_kernels.cpp: racecheck-kernels, runs every generated configuration built into
// the racecheck tree once through the emulated backend (mra_forward_host, then mra_backward_host in the f32 and
// bf16 configurations), so that ThreadSanitizer sees every kernel of every configuration; a race makes it report and exit with its own status. Sizes are
// spread over the configurations (several blocks per level, partial blocks, cross-attention, masks,
// two schedules, causal attention under policy row in half of them, full and sparse) to keep the whole run
// within minutes under ThreadSanitizer.
//   racecheck-kernels [name-regex]     (prints one line per configuration)
#include "mra.h"
#include "simt/simt.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <regex>
#include <string>
#include <vector>

namespace {

struct Config {
  const char* name;
  mra_dtype dtype;
  int64_t dim;
  int32_t levels;
  int64_t sides[MRA_MAX_LEVELS];
};

const Config kConfigs[] = {
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, dtype, dim, levels, {s1, s2, s3, s4}},
#include "registry.inc"
#undef MRA_CONFIG
};

// A value in [-2, 2) of the configuration's dtype, built from raw bits.
void fill(std::vector<uint8_t>& bytes, mra_dtype dtype, size_t count, std::mt19937_64& rng) {
  const size_t width = dtype == MRA_DTYPE_F32 ? 4 : 2;
  bytes.assign(count * width + 16, 0);
  for (size_t i = 0; i < count; ++i) {
    const uint64_t r = rng();
    if (dtype == MRA_DTYPE_F16) {
      // sign, exponent 12..15 (2^-3 .. 1), random mantissa
      const uint16_t h = static_cast<uint16_t>(((r & 1u) << 15) | ((12u + (r >> 1) % 4u) << 10) | ((r >> 8) & 0x3ffu));
      std::memcpy(&bytes[i * 2], &h, 2);
    } else {
      // f32 with exponent 124..127, truncated to its top half for bf16
      const uint32_t f = static_cast<uint32_t>(((r & 1u) << 31) | ((124u + (r >> 1) % 4u) << 23) | ((r >> 8) & 0x7fffffu));
      if (dtype == MRA_DTYPE_F32)
        std::memcpy(&bytes[i * 4], &f, 4);
      else {
        const uint16_t b = static_cast<uint16_t>(f >> 16);
        std::memcpy(&bytes[i * 2], &b, 2);
      }
    }
  }
}

void* aligned(std::vector<uint8_t>& bytes) {
  const auto p = reinterpret_cast<uintptr_t>(bytes.data());
  return bytes.data() + ((16 - p % 16) % 16);
}

}  // namespace

int main(int argc, char** argv) {
  const std::regex wanted(argc > 1 ? argv[1] : ".*");
  const uint64_t seed = 20261130;
  std::mt19937_64 rng(seed);
  int failures = 0;
  int index = 0;
  for (const Config& c : kConfigs) {
    if (!std::regex_match(c.name, wanted)) continue;
    const int64_t s1 = c.sides[0];
    // Spread over the configurations: 3 to 6 coarse blocks per side (3 for the long-context sides
    // of 128 and more, whose blocks cost ThreadSanitizer most), a partial last block every other
    // configuration, cross-attention (Nk != Nq) and masks every third, heads 1 or 2.
    mra_problem p{};
    p.batch = 1;
    p.heads = 1 + index % 2;
    p.nq = s1 * (s1 >= 128 ? 3 : 3 + index % 4) + (index % 2 ? s1 / 2 + 1 : 0);
    p.nk = index % 3 == 0 ? p.nq + s1 : p.nq;
    p.dim = c.dim;
    p.dtype = c.dtype;
    p.levels = c.levels;
    for (int l = 0; l < c.levels; ++l) p.resolutions[l] = c.sides[l];
    for (int l = 0; l + 1 < c.levels; ++l) p.budgets[l] = 3 * (p.nq / c.sides[l] + 1) * (l + 1);
    p.mode = index % 2 ? MRA_MODE_SPARSE : MRA_MODE_FULL;
    p.prior_first = index % 3 == 1 ? 1 : 0;
    p.prior_diagonal = index % 3 == 2 ? 2 : 0;
    if (index % 4 == 1 || index % 4 == 2) {  // causal attention (§9, its backward §9.7): policy row, 1 + l per row
      p.causal = 1;
      p.policy = MRA_POLICY_ROW;
      for (int l = 0; l + 1 < c.levels; ++l) p.budgets[l] = 1 + l;
    }
    const bool masked = index % 3 == 0;
    simt::set_schedule(index % 2 ? simt::Schedule::shuffled : simt::Schedule::descending, seed + index);
    ++index;

    std::vector<uint8_t> q, k, v, out(static_cast<size_t>(p.heads * p.nq * p.dim) * 4 + 16), ws;
    fill(q, c.dtype, static_cast<size_t>(p.heads * p.nq * p.dim), rng);
    fill(k, c.dtype, static_cast<size_t>(p.heads * p.nk * p.dim), rng);
    fill(v, c.dtype, static_cast<size_t>(p.heads * p.nk * p.dim), rng);
    std::vector<uint8_t> qmask(static_cast<size_t>(p.nq), 1), kmask(static_cast<size_t>(p.nk), 1);
    if (masked) {
      for (int64_t i = p.nq - s1 / 2; i < p.nq; ++i) qmask[static_cast<size_t>(i)] = 0;
      for (int64_t i = 0; i < p.nk; i += 5) kmask[static_cast<size_t>(i)] = 0;
    }
    size_t bytes = 0;
    mra_status s = mra_workspace_size(&p, &bytes);
    const auto start = std::chrono::steady_clock::now();
    if (s == MRA_SUCCESS) {
      ws.assign(bytes + 16, 0);
      s = mra_forward_host(&p, aligned(q), aligned(k), aligned(v), masked ? qmask.data() : nullptr,
                           masked ? kmask.data() : nullptr, aligned(out), aligned(ws), bytes);
    }
    // The backward on the forward's saved state, in the f32 and bf16 configurations: f16 runs the same kernels
    // (the same tiles, barriers and warps) with another mma variant, so its runs would add ThreadSanitizer time
    // and nothing to the race check.
    size_t grad_bytes = 0;
    const bool backward = s == MRA_SUCCESS && c.dtype != MRA_DTYPE_F16 &&
                          mra_backward_workspace_size(&p, &grad_bytes) == MRA_SUCCESS;
    if (backward) {
      std::vector<uint8_t> dout, dq(q.size()), dk(k.size()), dv(v.size()), grad_ws(grad_bytes + 16, 0);
      fill(dout, c.dtype, static_cast<size_t>(p.heads * p.nq * p.dim), rng);
      s = mra_backward_host(&p, aligned(q), aligned(k), aligned(v), masked ? qmask.data() : nullptr,
                            masked ? kmask.data() : nullptr, aligned(out), aligned(dout), aligned(dq), aligned(dk),
                            aligned(dv), aligned(ws), bytes, aligned(grad_ws), grad_bytes);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%-28s N=%lld/%lld heads=%lld %s%s%s%s: %s (%.1f s)\n", c.name, static_cast<long long>(p.nq),
                static_cast<long long>(p.nk), static_cast<long long>(p.heads), p.mode ? "sparse" : "full",
                masked ? " masked" : "", p.causal ? " causal" : "", backward ? " +backward" : "",
                mra_status_string(s), seconds);
    std::fflush(stdout);
    if (s != MRA_SUCCESS) {
      std::printf("  seed %llu: %s\n", static_cast<unsigned long long>(seed), simt::last_error_message().c_str());
      ++failures;
    }
  }
  std::printf("racecheck-kernels: %d configurations, %d failed\n", index, failures);
  return index == 0 || failures ? 1 : 0;
}
