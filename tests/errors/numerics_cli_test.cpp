// tests/errors/numerics_cli_test.cpp: the numerical edges of docs/semantics.md run through the mra-ref binary:
// logits of 1e4 and beyond, inputs where every score ties, N = 1, D = 1, a single block and every key masked.
// (NaN and Inf are refused before computing, §2.7: see errors_cli_test.cpp, "NaN or Inf in Q, K or V".) The
// expected outputs come from exact attention computed here in double, not from the reference.
//   ctest --test-dir build -L cli -R numerics      or      build/tests/errors/numerics_cli_test
#include "common/doctest.h"

#include <algorithm>
#include <cmath>

#include "harness.h"

using namespace errors_test;

namespace {

// Softmax attention of one head, [n, d] row-major, with the max subtracted (the textbook stable form).
std::vector<double> exact(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                          int64_t nq, int64_t nk, int64_t d, double scale) {
  std::vector<double> out(static_cast<size_t>(nq * d), 0.0);
  std::vector<double> logit(static_cast<size_t>(nk));
  for (int64_t i = 0; i < nq; ++i) {
    for (int64_t j = 0; j < nk; ++j) {
      double s = 0.0;
      for (int64_t t = 0; t < d; ++t) s += double(q[size_t(i * d + t)]) * k[size_t(j * d + t)];
      logit[size_t(j)] = scale * s;
    }
    const double top = *std::max_element(logit.begin(), logit.end());
    double den = 0.0;
    for (int64_t j = 0; j < nk; ++j) {
      const double w = std::exp(logit[size_t(j)] - top);
      den += w;
      for (int64_t t = 0; t < d; ++t) out[size_t(i * d + t)] += w * v[size_t(j * d + t)];
    }
    for (int64_t t = 0; t < d; ++t) out[size_t(i * d + t)] /= den;
  }
  return out;
}

std::vector<float> wave(int64_t count, double amplitude, double phase) {
  std::vector<float> v(static_cast<size_t>(count));
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(amplitude * std::sin(0.71 * double(i) + phase));
  return v;
}

// Runs mra-ref `args` (which write out.npy) and returns the output, which must hold `count` finite values.
std::vector<float> output_of(const Scratch& dir, const std::vector<std::string>& args, size_t count) {
  const Result r = mra_ref(dir, args);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const std::vector<float> out = read_f32(dir.file("out.npy"));
  REQUIRE(out.size() == count);
  for (float x : out) REQUIRE(std::isfinite(x));
  return out;
}

void check_close(const std::vector<float>& got, const std::vector<double>& want, double tolerance) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(std::fabs(got[i] - want[i]) <= tolerance * (1.0 + std::fabs(want[i])));
  }
}

const std::vector<std::string> kQKV{"--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "-o", "out.npy"};

std::vector<std::string> command(const std::string& name, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{name};
  args.insert(args.end(), kQKV.begin(), kQKV.end());
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

}  // namespace

TEST_CASE("numerics: logits of 1e4 and beyond stay finite, exact and fully refined MRA match exact attention") {
  constexpr int64_t n = 96, d = 4;
  for (const double amplitude : {100.0, 1000.0, 1e4}) {
    CAPTURE(amplitude);
    Scratch dir;
    const std::vector<float> q = wave(n * d, amplitude, 0.0), k = wave(n * d, amplitude, 1.3), v = wave(n * d, 1.0, 2.9);
    write_file(dir.file("q.npy"), f32_npy({n, d}, q));
    write_file(dir.file("k.npy"), f32_npy({n, d}, k));
    write_file(dir.file("v.npy"), f32_npy({n, d}, v));
    // With scale 1 the largest logits are about d * amplitude^2: 4e4 up to 4e8.
    const std::vector<double> want = exact(q, k, v, n, n, d, 1.0);
    check_close(output_of(dir, command("exact", {"--scale", "1"}), n * d), want, 1e-5);
    // Every block refined: MRA is exact attention, whatever the magnitude.
    check_close(output_of(dir, command("attend", {"--scale", "1", "--blocks-per-row", "3"}), n * d), want, 1e-5);
    // One block per row: coarse components with huge pooled logits take part; each output is still a convex
    // combination of the values.
    for (const char* mode : {"full", "sparse"}) {
      CAPTURE(mode);
      const std::vector<float> out =
          output_of(dir, command("attend", {"--scale", "1", "--blocks-per-row", "1", "--mode", mode}), n * d);
      for (int64_t t = 0; t < d; ++t) {
        double lo = 1e9, hi = -1e9;
        for (int64_t j = 0; j < n; ++j) {
          lo = std::min(lo, double(v[size_t(j * d + t)]));
          hi = std::max(hi, double(v[size_t(j * d + t)]));
        }
        for (int64_t i = 0; i < n; ++i) {
          CHECK(out[size_t(i * d + t)] >= lo - 1e-6);
          CHECK(out[size_t(i * d + t)] <= hi + 1e-6);
        }
      }
    }
  }
}

TEST_CASE("numerics: all-equal inputs, every score ties") {
  constexpr int64_t n = 128, d = 8;
  Scratch dir;
  const std::vector<float> qk(n * d, 0.5f), v = wave(n * d, 1.0, 0.4);
  write_file(dir.file("q.npy"), f32_npy({n, d}, qk));
  write_file(dir.file("k.npy"), f32_npy({n, d}, qk));
  write_file(dir.file("v.npy"), f32_npy({n, d}, v));
  std::vector<double> mean(n * d, 0.0);
  for (int64_t t = 0; t < d; ++t) {
    double s = 0.0;
    for (int64_t j = 0; j < n; ++j) s += v[size_t(j * d + t)];
    for (int64_t i = 0; i < n; ++i) mean[size_t(i * d + t)] = s / double(n);
  }
  // Equal logits make every attention weight 1/n; in full mode the coarse components are exact too.
  check_close(output_of(dir, command("exact"), n * d), mean, 1e-6);
  check_close(output_of(dir, command("attend", {"--blocks-per-row", "1"}), n * d), mean, 1e-6);
  check_close(output_of(dir, command("attend", {"--scales", "16,4,1", "--budget", "3,7"}), n * d), mean, 1e-6);
  // Every score ties, so §2.4 ranks by flat index alone: the budget of 4 (one per block row of 4 x 4 blocks)
  // takes the first four pairs, the whole of block row 0.
  const std::vector<std::string> select{"select", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--blocks-per-row", "1"};
  const Result chosen = mra_ref(dir, select);
  REQUIRE(chosen.status == 0);
  INFO(chosen.out);
  CHECK(chosen.out.find("\"level\": 1, \"side\": 32, \"nk_blocks\": 4, \"blocks\": [0, 1, 2, 3]}") != std::string::npos);
}

TEST_CASE("numerics: N = 1") {
  Scratch dir;
  const std::vector<float> q{0.3f, -1.0f}, k{2.0f, 0.5f}, v{7.0f, -3.0f};
  write_file(dir.file("q.npy"), f32_npy({1, 2}, q));
  write_file(dir.file("k.npy"), f32_npy({1, 2}, k));
  write_file(dir.file("v.npy"), f32_npy({1, 2}, v));
  for (const char* name : {"exact", "attend"})
    CHECK(output_of(dir, command(name), 2) == v);  // one key: its value, exactly
}

TEST_CASE("numerics: D = 1") {
  constexpr int64_t n = 70;
  Scratch dir;
  const std::vector<float> q = wave(n, 2.0, 0.0), k = wave(n, 2.0, 0.5), v = wave(n, 1.0, 1.0);
  write_file(dir.file("q.npy"), f32_npy({n, 1}, q));
  write_file(dir.file("k.npy"), f32_npy({n, 1}, k));
  write_file(dir.file("v.npy"), f32_npy({n, 1}, v));
  const std::vector<double> want = exact(q, k, v, n, n, 1, 1.0);
  check_close(output_of(dir, command("exact"), n), want, 1e-5);
  check_close(output_of(dir, command("attend", {"--blocks-per-row", "3"}), n), want, 1e-5);
}

TEST_CASE("numerics: a single block") {
  constexpr int64_t n = 20, d = 8;  // shorter than the default block side 32: one partial block
  Scratch dir;
  const std::vector<float> q = wave(n * d, 1.0, 0.0), k = wave(n * d, 1.0, 0.8), v = wave(n * d, 1.0, 1.6);
  write_file(dir.file("q.npy"), f32_npy({n, d}, q));
  write_file(dir.file("k.npy"), f32_npy({n, d}, k));
  write_file(dir.file("v.npy"), f32_npy({n, d}, v));
  const std::vector<double> want = exact(q, k, v, n, n, d, 1.0 / std::sqrt(double(d)));
  check_close(output_of(dir, command("attend"), n * d), want, 1e-5);
  check_close(output_of(dir, command("attend", {"--mode", "sparse"}), n * d), want, 1e-5);
  // No block refined: full mode is the one coarse component, the mean of V; sparse mode has nothing left.
  const std::vector<float> coarse = output_of(dir, command("attend", {"--budget", "0"}), n * d);
  for (int64_t t = 0; t < d; ++t) {
    double s = 0.0;
    for (int64_t j = 0; j < n; ++j) s += v[size_t(j * d + t)];
    CHECK(coarse[size_t(t)] == doctest::Approx(s / n).epsilon(1e-6));
  }
  for (float x : output_of(dir, command("attend", {"--budget", "0", "--mode", "sparse"}), n * d)) CHECK(x == 0.0f);
}

TEST_CASE("numerics: every key masked") {
  constexpr int64_t n = 64, d = 4;
  Scratch dir;
  write_file(dir.file("q.npy"), f32_npy({n, d}, wave(n * d, 1.0, 0.0)));
  write_file(dir.file("k.npy"), f32_npy({n, d}, wave(n * d, 1.0, 0.3)));
  write_file(dir.file("v.npy"), f32_npy({n, d}, wave(n * d, 1.0, 0.6)));
  write_file(dir.file("none.npy"), npy("|b1", "(64,)", std::string(n, '\0')));
  write_file(dir.file("all.npy"), npy("|b1", "(64,)", std::string(n, '\1')));
  // Self-attention (the mask covers the queries too) and cross-attention with every query real: no row has
  // anything to attend to, so every output is 0 (docs/semantics.md §2.6), not NaN.
  for (const std::vector<std::string>& masks :
       {std::vector<std::string>{"--mask", "none.npy"}, std::vector<std::string>{"--key-mask", "none.npy", "--query-mask", "all.npy"}}) {
    for (const char* name : {"exact", "attend"})
      for (float x : output_of(dir, command(name, masks), n * d)) CHECK(x == 0.0f);
    for (float x : output_of(dir, command("attend", [&] {
                                    auto m = masks;
                                    m.insert(m.end(), {"--mode", "sparse"});
                                    return m;
                                  }()), n * d))
      CHECK(x == 0.0f);
  }
}
