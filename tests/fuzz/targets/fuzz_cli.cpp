// tests/fuzz/targets/fuzz_cli.cpp: libFuzzer target for mra-ref's argument parsing (mra::cli::Options, the
// number parsers and load_config, which turns options into a reference configuration), followed by the
// reference selection and attention on a tiny problem under the parsed configuration.
//   Built and run by ctest -L fuzz (see tests/fuzz/CMakeLists.txt); by hand:
//   build/tests/fuzz/clang/fuzz_cli -dict=tests/fuzz/cli.dict WORK_DIR tests/fuzz/corpus/cli
// Input: byte 0 picks Nq and byte 1 picks Nk from kLengths (the lengths a file could give); the rest is the
// argument vector, arguments separated by NUL bytes. A corpus file is therefore readable with `tr '\0' ' '`.
// A user error must come back as a one-line cli::Failure (mra-ref prints it and exits 2); an accepted
// configuration must be valid, and the reference must run it to a valid selection and a finite output.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli.h"
#include "contract.h"
#include "inputs.h"
#include "mra/reference.h"

namespace {

using fuzz::require;

void one_line(const std::string& message) { require(fuzz::one_line(message), "an error message is empty or spans lines"); }

// Small lengths around the block sides the scales use, and large ones a real file can have.
constexpr int64_t kLengths[] = {1, 2, 3, 7, 16, 31, 32, 33, 64, 65, 96, 1000, 4096, 65536, int64_t(1) << 31,
                                int64_t(1) << 40};
constexpr int64_t kRunLimit = 96;  // select and attend only on problems this small: each run must stay fast

// Every value flag of every subcommand (main.cpp keeps the per-command lists to itself).
const std::vector<std::string> kFlags{"--q",     "--k",           "--v",           "--mask",   "--key-mask", "--query-mask",
                                      "--scale", "--scales",      "--budget",      "--blocks-per-row",
                                      "--mode",  "--prior-first", "--prior-diagonal", "-o", "--atol", "--rtol",
                                      "--out"};

void run_reference(const mra::ref::Config& config, int64_t nq, int64_t nk, uint8_t seed) {
  constexpr int64_t heads = 2, dim = 3;
  std::vector<float> q(heads * nq * dim), k(heads * nk * dim), v(heads * nk * dim);
  uint32_t state = 0x9e3779b9u ^ seed;
  const auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return float(int(state >> 24) - 128) / 32.0f;
  };
  for (float& x : q) x = next();
  for (float& x : k) x = next();
  for (float& x : v) x = next();
  // Some seeds pad the tail of the keys, so that masked blocks and empty rows are part of the search.
  std::vector<uint8_t> key_mask(nk, 1);
  for (int64_t j = nk - (seed % 5) * nk / 4; j < nk; ++j) key_mask[j] = 0;

  const mra::ref::Problem p =
      mra::ref::Problem::of(1, heads, nq, nk, dim, q.data(), k.data(), v.data(), nullptr, key_mask.data());
  try {
    const mra::ref::Selection s = mra::ref::select(p, config);
    mra::ref::validate_selection(p, config, s);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t l = 0; l < s.steps; ++l)
        require(int64_t(s.at(0, h, l).size()) <= config.budgets[l], "a step refined more blocks than its budget");
    std::vector<float> out(q.size());
    mra::ref::attend(p, config, s, out.data());
    for (float x : out) require(std::isfinite(x), "a finite problem gave a non-finite output");
  } catch (const mra::ref::Error& e) {
    one_line(e.what());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  constexpr size_t kCount = sizeof kLengths / sizeof kLengths[0];
  const int64_t nq = kLengths[data[0] % kCount], nk = kLengths[data[1] % kCount];
  std::vector<std::string> args(1);
  for (size_t i = 2; i < size; ++i) {
    if (data[i] == 0)
      args.emplace_back();
    else
      args.back() += char(data[i]);
  }

  try {
    const mra::cli::Options options(args, kFlags);
    for (const char* flag : {"--scale", "--atol", "--rtol"})
      if (const auto text = options.get(flag)) require(std::isfinite(mra::cli::parse_real(flag, *text)), "non-finite real");
    const mra::ref::Config config = mra::cli::load_config(options, nq, nk);
    config.validate();
    if (nq <= kRunLimit && nk <= kRunLimit) run_reference(config, nq, nk, data[0] ^ data[1]);
  } catch (const mra::cli::Failure& e) {
    one_line(e.what());
    one_line(e.subject());
  }
  return 0;
}
