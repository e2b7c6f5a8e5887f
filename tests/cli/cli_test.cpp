// tests/cli/cli_test.cpp: runs the built mra-ref binary on files written into a temporary folder and checks
// outputs, exit codes, the one-line errors and that a failed run leaves no output behind.
//   ctest --test-dir build -L cli      or      build/tests/cli/cli_test
#include "common/doctest.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "common/skip.h"
#include "npy.h"
#include "npy_bytes.h"

namespace fs = std::filesystem;
using npy_bytes::raw;

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  REQUIRE(out.good());
}

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("mra-cli-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct Result {
  int status = -1;
  std::string out, err;
};

Result run_shell(const TempDir& dir, const std::string& command) {
  const std::string out = dir.file(".stdout"), err = dir.file(".stderr");
  const int raw_status = std::system((command + " >" + quote(out) + " 2>" + quote(err)).c_str());
  Result r;
  r.status = WIFEXITED(raw_status) ? WEXITSTATUS(raw_status) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

Result run(const TempDir& dir, const std::vector<std::string>& args) {
  std::string command = quote(MRA_REF_BINARY);
  for (const std::string& a : args) {
    command += ' ';
    command += quote(a);
  }
  return run_shell(dir, command);
}

std::string tuple(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += std::to_string(shape[i]) + (shape.size() == 1 ? "," : i + 1 < shape.size() ? ", " : "");
  return s + ")";
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Values in [-2, 2) with a few decimals, so that every dtype (float16 included) holds them exactly.
std::vector<double> sample(int64_t count, uint32_t seed) {
  std::mt19937 bits(seed);
  std::vector<double> v(static_cast<size_t>(count));
  for (double& x : v) x = static_cast<double>(static_cast<int>(bits() % 256) - 128) / 64.0;
  return v;
}

std::string npy_of(const std::string& descr, const std::vector<int64_t>& shape, const std::vector<double>& values) {
  const std::string h = npy_bytes::header(descr, tuple(shape));
  if (descr == "<f2") return npy_bytes::file(1, h, npy_bytes::raw_half(values));
  if (descr == "<f8") return npy_bytes::file(1, h, raw<double>(values));
  if (descr == "|b1") return npy_bytes::file(1, h, raw<bool>(values));
  if (descr == "|u1") return npy_bytes::file(1, h, raw<uint8_t>(values));
  if (descr == "<i8") return npy_bytes::file(1, h, raw<int64_t>(values));
  return npy_bytes::file(1, h, raw<float>(values));
}

mra::npy::Array load_ok(const std::string& path) {
  const mra::npy::Parsed p = mra::npy::load(path);
  INFO(path << ": " << p.error);
  REQUIRE(p.ok());
  return p.array;
}

// Exact softmax attention in double on [B, H, N, D] data, written independently of the reference.
// With `causal`, query i sees key j only when j <= i + nk - nq (docs/semantics.md §9.1).
std::vector<double> oracle(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                           int64_t B, int64_t H, int64_t nq, int64_t nk, int64_t D,
                           const std::vector<double>& qmask = {}, const std::vector<double>& kmask = {},
                           bool causal = false) {
  std::vector<double> out(static_cast<size_t>(B * H * nq * D), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < nq; ++i) {
        if (!qmask.empty() && qmask[static_cast<size_t>(b * nq + i)] == 0) continue;
        const double* qi = &q[static_cast<size_t>(((b * H + h) * nq + i) * D)];
        std::vector<double> logits(static_cast<size_t>(nk), -INFINITY);
        double m = -INFINITY;
        for (int64_t j = 0; j < nk; ++j) {
          if (!kmask.empty() && kmask[static_cast<size_t>(b * nk + j)] == 0) continue;
          if (causal && j > i + nk - nq) continue;
          const double* kj = &k[static_cast<size_t>(((b * H + h) * nk + j) * D)];
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qi[d] * kj[d];
          logits[static_cast<size_t>(j)] = dot / std::sqrt(static_cast<double>(D));
          m = std::max(m, logits[static_cast<size_t>(j)]);
        }
        if (m == -INFINITY) continue;
        double denominator = 0;
        double* o = &out[static_cast<size_t>(((b * H + h) * nq + i) * D)];
        for (int64_t j = 0; j < nk; ++j) {
          const double w = std::exp(logits[static_cast<size_t>(j)] - m);
          denominator += w;
          for (int64_t d = 0; d < D; ++d) o[d] += w * v[static_cast<size_t>(((b * H + h) * nk + j) * D + d)];
        }
        for (int64_t d = 0; d < D; ++d) o[d] /= denominator;
      }
  return out;
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double diff2 = 0, ref2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff2 += (a[i] - b[i]) * (a[i] - b[i]);
    ref2 += b[i] * b[i];
  }
  return std::sqrt(diff2 / ref2);
}

// A failed run: status 2, exactly one line on stderr naming `subject`, nothing written next to the output.
void check_failure(const TempDir& dir, const Result& r, const std::string& subject, const std::string& problem,
                   const std::string& output) {
  INFO("stderr: " << r.err);
  CHECK(r.status == 2);
  CHECK(r.err.rfind("mra-ref: " + subject + ": ", 0) == 0);
  CHECK(r.err.find(problem) != std::string::npos);
  CHECK(r.err.find('\n') == r.err.size() - 1);
  CHECK_FALSE(fs::exists(output));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    CHECK(entry.path().filename().string().rfind(".mra-ref-", 0) != 0);
}

// Q, K, V written as files of one dtype, with the values kept for the oracle.
struct Problem {
  int64_t B = 1, H = 1, nq = 0, nk = 0, D = 0;
  std::vector<double> q, k, v;
  std::string q_path, k_path, v_path;
};

Problem write_problem(const TempDir& dir, std::vector<int64_t> q_shape, std::vector<int64_t> k_shape,
                      const std::string& descr = "<f4", const std::string& prefix = "") {
  Problem p;
  const size_t r = q_shape.size();
  p.B = r == 4 ? q_shape[0] : 1;
  p.H = r >= 3 ? q_shape[r - 3] : 1;
  p.nq = q_shape[r - 2];
  p.nk = k_shape[r - 2];
  p.D = q_shape[r - 1];
  p.q = sample(product(q_shape), 1);
  p.k = sample(product(k_shape), 2);
  p.v = sample(product(k_shape), 3);
  p.q_path = dir.file(prefix + "q.npy");
  p.k_path = dir.file(prefix + "k.npy");
  p.v_path = dir.file(prefix + "v.npy");
  write_bytes(p.q_path, npy_of(descr, q_shape, p.q));
  write_bytes(p.k_path, npy_of(descr, k_shape, p.k));
  write_bytes(p.v_path, npy_of(descr, k_shape, p.v));
  return p;
}

std::vector<std::string> inputs(const Problem& p) {
  return {"--q", p.q_path, "--k", p.k_path, "--v", p.v_path};
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

TEST_CASE("--help at the top level and on every subcommand") {
  TempDir dir;
  const Result top = run(dir, {"--help"});
  CHECK(top.status == 0);
  for (const char* command : {"attend", "grad", "exact", "select", "compare", "demo", "bench"}) {
    CAPTURE(command);
    CHECK(top.out.find(std::string("  ") + command + " ") != std::string::npos);
    const Result r = run(dir, {command, "--help"});
    CHECK(r.status == 0);
    CHECK(r.out.rfind(std::string("usage: mra-ref ") + command, 0) == 0);
    CHECK(r.err.empty());
  }
  CHECK(run(dir, {"attend", "--help"}).out.find("--blocks-per-row") != std::string::npos);
  CHECK(run(dir, {"exact", "--help"}).out.find("--query-mask") != std::string::npos);
  const Result none = run(dir, {});
  CHECK(none.status == 2);
  CHECK(none.err.find("usage: mra-ref") != std::string::npos);
}

TEST_CASE("exact matches an independent oracle, and attend with every block selected matches exact") {
  TempDir dir;
  struct Shapes {
    std::vector<int64_t> q, k;
  };
  // Lengths not divisible by the block side; cross-attention; ranks 2, 3 and 4.
  const Shapes cases[] = {{{40, 8}, {40, 8}}, {{3, 37, 4}, {3, 37, 4}}, {{2, 2, 45, 8}, {2, 2, 45, 8}},
                          {{2, 1, 20, 8}, {2, 1, 70, 8}}};
  for (const Shapes& s : cases) {
    const Problem p = write_problem(dir, s.q, s.k);
    CAPTURE(p.nq);
    CAPTURE(p.nk);
    const std::string exact = dir.file("exact.npy");
    const Result e = run(dir, std::vector<std::string>{"exact"} + inputs(p) + std::vector<std::string>{"-o", exact});
    REQUIRE(e.status == 0);
    const mra::npy::Array ex = load_ok(exact);
    CHECK(ex.descr == "<f4");
    CHECK(ex.shape == s.q);
    CHECK(relative_error(ex.values, oracle(p.q, p.k, p.v, p.B, p.H, p.nq, p.nk, p.D)) < 1e-6);
    // The output header is numpy's: data start on a 64-byte boundary.
    const std::string bytes = read_text(exact);
    CHECK((10 + static_cast<unsigned char>(bytes[8]) + 256 * static_cast<unsigned char>(bytes[9])) % 64 == 0);

    const auto blocks = [&](int64_t side) {
      return std::to_string(((p.nq + side - 1) / side) * ((p.nk + side - 1) / side));
    };
    const std::vector<std::vector<std::string>> configs{
        {"--budget", blocks(32)},
        {"--budget", blocks(32), "--mode", "sparse"},
        {"--scales", "8,2,1", "--budget", blocks(8) + "," + blocks(2)},
        {"--scales", "8,2,1", "--budget", blocks(8) + "," + blocks(2), "--mode", "sparse"},
        {"--scales", "16,1", "--blocks-per-row", "1000"},
    };
    for (const auto& config : configs) {
      CAPTURE(config.back());
      const std::string out = dir.file("attend.npy");
      const Result a = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config + std::vector<std::string>{"-o", out});
      INFO(a.err);
      REQUIRE(a.status == 0);
      const mra::npy::Array at = load_ok(out);
      CHECK(at.shape == s.q);
      CHECK(relative_error(at.values, ex.values) < 1e-6);
    }
  }
}

TEST_CASE("masks: --mask masks queries and keys, --key-mask and --query-mask each side, every dtype and shape agrees") {
  TempDir dir;
  const Problem p = write_problem(dir, {2, 2, 40, 8}, {2, 2, 40, 8});
  std::vector<double> mask(80, 1.0);
  for (int i = 25; i < 40; ++i) mask[static_cast<size_t>(40 + i)] = 0.0;  // padding at the end of batch 1
  mask[3] = 0.0;

  // Outputs alternate exact, attend for the mask dtypes in this order; the first mask is the float32 one.
  const char* const dtypes[] = {"<f4", "<f8", "|b1", "|u1", "<i8"};
  std::vector<std::string> outputs;
  for (size_t t = 0; t < std::size(dtypes); ++t) {
    const std::string m = dir.file("mask" + std::to_string(t) + ".npy");
    write_bytes(m, npy_of(dtypes[t], {2, 40}, mask));
    for (const std::string command : {"exact", "attend"}) {
      const std::string out = dir.file(command + std::to_string(t) + ".npy");
      std::vector<std::string> args = std::vector<std::string>{command} + inputs(p) +
                                      std::vector<std::string>{"--mask", m, "-o", out};
      if (command == "attend") args = args + std::vector<std::string>{"--budget", "4"};
      const Result r = run(dir, args);
      INFO(r.err);
      REQUIRE(r.status == 0);
      outputs.push_back(read_text(out));
    }
  }
  for (size_t i = 2; i < outputs.size(); ++i) CHECK(outputs[i] == outputs[i % 2]);
  const mra::npy::Array ex = load_ok(dir.file("exact0.npy"));
  CHECK(relative_error(ex.values, oracle(p.q, p.k, p.v, 2, 2, 40, 40, 8, mask, mask)) < 1e-6);
  CHECK(relative_error(load_ok(dir.file("attend0.npy")).values, ex.values) < 1e-6);

  SUBCASE("a [N] mask is shared by every batch") {
    std::vector<double> shared(mask.begin(), mask.begin() + 40), both(shared);
    both.insert(both.end(), shared.begin(), shared.end());
    write_bytes(dir.file("shared.npy"), npy_of("|b1", {40}, shared));
    const Result r = run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                                  std::vector<std::string>{"--mask", dir.file("shared.npy"), "-o", dir.file("s.npy")});
    REQUIRE(r.status == 0);
    CHECK(relative_error(load_ok(dir.file("s.npy")).values, oracle(p.q, p.k, p.v, 2, 2, 40, 40, 8, both, both)) < 1e-6);
  }
  SUBCASE("--key-mask and --query-mask mask one side each") {
    const std::vector<double> all_real(80, 1.0);
    write_bytes(dir.file("qm.npy"), npy_of("|b1", {2, 40}, all_real));
    const Result r = run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                                  std::vector<std::string>{"--key-mask", dir.file("mask0.npy"), "--query-mask",
                                                           dir.file("qm.npy"), "-o", dir.file("x.npy")});
    REQUIRE(r.status == 0);
    CHECK(relative_error(load_ok(dir.file("x.npy")).values, oracle(p.q, p.k, p.v, 2, 2, 40, 40, 8, all_real, mask)) <
          1e-6);
    const Result keys_only = run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                                          std::vector<std::string>{"--key-mask", dir.file("mask0.npy"), "-o",
                                                                   dir.file("y.npy")});
    REQUIRE(keys_only.status == 0);
    CHECK(read_text(dir.file("y.npy")) == read_text(dir.file("x.npy")));
    check_failure(dir,
                  run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                               std::vector<std::string>{"--mask", dir.file("mask0.npy"), "--query-mask",
                                                        dir.file("qm.npy"), "-o", dir.file("z.npy")}),
                  "--mask", "cannot be combined with --query-mask", dir.file("z.npy"));
  }
  SUBCASE("cross-attention: --key-mask covers the keys, --mask is refused rather than guessed") {
    const Problem c = write_problem(dir, {2, 1, 24, 8}, {2, 1, 40, 8}, "<f4", "cross-");
    const Result r = run(dir, std::vector<std::string>{"exact"} + inputs(c) +
                                  std::vector<std::string>{"--key-mask", dir.file("mask0.npy"), "-o", dir.file("c.npy")});
    REQUIRE(r.status == 0);
    CHECK(relative_error(load_ok(dir.file("c.npy")).values, oracle(c.q, c.k, c.v, 2, 1, 24, 40, 8, {}, mask)) < 1e-6);
    check_failure(dir,
                  run(dir, std::vector<std::string>{"exact"} + inputs(c) +
                               std::vector<std::string>{"--mask", dir.file("mask0.npy"), "-o", dir.file("d.npy")}),
                  "--mask", "Nq = 24 and Nk = 40 differ: use --key-mask and/or --query-mask", dir.file("d.npy"));
  }
}

TEST_CASE("float16, float32 and float64 files holding the same values give the same output") {
  TempDir dir;
  std::vector<std::string> outputs;
  for (const char* descr : {"<f2", "<f4", "<f8"}) {
    const Problem p = write_problem(dir, {2, 33, 8}, {2, 33, 8}, descr, descr + 1);
    const std::string out = dir.file(std::string(descr + 1) + "-out.npy");
    const Result r = run(dir, std::vector<std::string>{"attend"} + inputs(p) + std::vector<std::string>{"-o", out});
    INFO(r.err);
    REQUIRE(r.status == 0);
    outputs.push_back(read_text(out));
  }
  CHECK(outputs[0] == outputs[1]);
  CHECK(outputs[1] == outputs[2]);
}

TEST_CASE("compare: errors, their index and the tolerance check") {
  TempDir dir;
  const std::vector<int64_t> shape{2, 2, 5, 3};
  std::vector<double> a = sample(60, 7), b = a;
  b[((1 * 2 + 0) * 5 + 3) * 3 + 2] += 0.5;  // [b, h, n, d] = [1, 0, 3, 2]
  write_bytes(dir.file("a.npy"), npy_of("<f4", shape, a));
  write_bytes(dir.file("b.npy"), npy_of("<f8", shape, b));
  write_bytes(dir.file("c.npy"), npy_of("<f4", {2, 2, 15}, a));

  const Result same = run(dir, {"compare", dir.file("a.npy"), dir.file("a.npy"), "--atol", "0"});
  CHECK(same.status == 0);
  CHECK(same.out.find("error ||A-B||/||B||: 0.000e+00") != std::string::npos);
  CHECK(same.out.find("PASS") != std::string::npos);

  const Result plain = run(dir, {"compare", dir.file("a.npy"), dir.file("b.npy")});
  CHECK(plain.status == 0);
  CHECK(plain.out.find("max absolute error: 5.000e-01 at [1, 0, 3, 2] [b, h, n, d]") != std::string::npos);

  const Result fail = run(dir, {"compare", dir.file("a.npy"), dir.file("b.npy"), "--atol", "0.1", "--rtol", "0.01"});
  CHECK(fail.status == 1);
  CHECK(fail.out.find("FAIL") != std::string::npos);
  CHECK(fail.out.find("fails for 1 of 60 elements") != std::string::npos);

  const Result pass = run(dir, {"compare", dir.file("a.npy"), dir.file("b.npy"), "--atol", "1"});
  CHECK(pass.status == 0);
  CHECK(pass.out.find("PASS") != std::string::npos);

  check_failure(dir, run(dir, {"compare", dir.file("a.npy"), dir.file("c.npy")}), dir.file("c.npy"), "differs",
                dir.file("none"));
  check_failure(dir, run(dir, {"compare", dir.file("a.npy")}), "compare", "two files", dir.file("none"));
  check_failure(dir, run(dir, {"compare", dir.file("a.npy"), dir.file("b.npy"), "--atol", "-1"}), "--atol",
                "negative", dir.file("none"));
}

TEST_CASE("select: JSON on stdout or in a file") {
  TempDir dir;
  const Problem p = write_problem(dir, {1, 2, 64, 8}, {1, 2, 64, 8});
  const Result r = run(dir, std::vector<std::string>{"select"} + inputs(p) + std::vector<std::string>{"--budget", "4"});
  REQUIRE(r.status == 0);
  CHECK(r.out.find("\"scales\": [32, 1]") != std::string::npos);
  CHECK(r.out.find("\"budgets\": [4]") != std::string::npos);
  CHECK(r.out.find("{\"b\": 0, \"h\": 1, \"level\": 1, \"side\": 32, \"nk_blocks\": 2, \"blocks\": [0, 1, 2, 3]}") !=
        std::string::npos);

  const std::string json = dir.file("sel.json");
  REQUIRE(run(dir, std::vector<std::string>{"select"} + inputs(p) +
                       std::vector<std::string>{"--budget", "4", "-o", json}).status == 0);
  CHECK(read_text(json) == r.out);

  const Result three = run(dir, std::vector<std::string>{"select"} + inputs(p) +
                                    std::vector<std::string>{"--scales", "16,4,1", "--budget", "2,3"});
  REQUIRE(three.status == 0);
  CHECK(three.out.find("\"level\": 2, \"side\": 4, \"nk_blocks\": 16") != std::string::npos);
}

TEST_CASE("bad input files: one line naming the file, exit 2, no output") {
  TempDir dir;
  const Problem p = write_problem(dir, {1, 2, 40, 8}, {1, 2, 40, 8});
  const std::string out = dir.file("out.npy");
  const std::string bad = dir.file("bad.npy");
  std::vector<double> with_nan = p.q;
  with_nan[((0 * 2 + 1) * 40 + 2) * 8 + 3] = NAN;  // [0, 1, 2, 3]
  std::vector<double> with_inf = p.v;
  with_inf[5] = -INFINITY;
  const std::string good_header = npy_bytes::header("<f4", "(1, 2, 40, 8)");

  struct Case {
    const char* what;
    std::string bytes;
    const char* replaces;  // --q, --k, --v or --mask
    const char* problem;
  };
  const Case cases[] = {
      {"bad magic", "hello, world", "--q", "bad magic"},
      {"truncated header", npy_bytes::file(1, good_header, "").substr(0, 40), "--k", "truncated"},
      {"truncated data", npy_bytes::file(1, good_header, raw<float>(sample(639, 1))), "--v", "truncated"},
      {"malformed dict", npy_bytes::file(1, "{'descr': '<f4'}", ""), "--q", "malformed header"},
      {"lying shape", npy_bytes::file(1, npy_bytes::header("<f4", "(1000000, 1000000, 40, 8)"), raw<float>(p.q)),
       "--q", "truncated"},
      {"overflowing shape", npy_bytes::file(1, npy_bytes::header("<f4", "(4294967296, 4294967296, 1, 1)"), ""), "--q",
       "64 bits"},
      {"big-endian", npy_bytes::file(1, npy_bytes::header(">f4", "(1, 2, 40, 8)"), raw<float>(p.q)), "--q",
       "big-endian"},
      {"fortran order", npy_bytes::file(1, npy_bytes::header("<f4", "(1, 2, 40, 8)", true), raw<float>(p.q)), "--q",
       "fortran_order"},
      {"complex dtype", npy_bytes::file(1, npy_bytes::header("<c8", "(1, 2, 40, 8)"), raw<double>(p.q)), "--q",
       "unsupported dtype"},
      {"integer Q", npy_of("<i8", {1, 2, 40, 8}, p.q), "--q", "not supported for Q, K and V"},
      {"rank 1", npy_of("<f4", {640}, p.q), "--q", "is not [N, D], [H, N, D] or [B, H, N, D]"},
      {"rank 5", npy_of("<f4", {1, 1, 2, 40, 8}, p.q), "--k", "is not [N, D]"},
      {"empty dimension", npy_of("<f4", {1, 2, 0, 8}, {}), "--q", "empty dimension"},
      {"K of another head dimension", npy_of("<f4", {1, 2, 80, 4}, p.k), "--k", "does not match Q's"},
      {"K of another rank", npy_of("<f4", {2, 40, 8}, p.k), "--k", "rank"},
      {"V unlike K", npy_of("<f4", {1, 2, 20, 16}, p.v), "--v", "differs from K's"},
      {"NaN in Q", npy_of("<f4", {1, 2, 40, 8}, with_nan), "--q", "non-finite value nan at [0, 1, 2, 3]"},
      {"Inf in V", npy_of("<f8", {1, 2, 40, 8}, with_inf), "--v", "non-finite value -inf at [0, 0, 0, 5]"},
      {"float64 beyond float32", npy_of("<f8", {1, 2, 40, 8}, std::vector<double>(640, 1e39)), "--k",
       "overflows float32"},
      {"mask value 2", npy_of("<f4", {40}, std::vector<double>(40, 2.0)), "--mask", "mask value 2 at [0] is not 0 or 1"},
      {"mask of the wrong length", npy_of("|b1", {41}, std::vector<double>(41, 1.0)), "--mask", "is not [40] or [1, 40]"},
      {"mask of the wrong batch", npy_of("|b1", {2, 40}, std::vector<double>(80, 1.0)), "--mask", "is not [40]"},
      {"a folder", "", "--q", "folder"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.what);
    std::string path = bad;
    if (std::string(c.what) == "a folder") {
      path = dir.file("a-folder");
      fs::create_directories(path);
    } else {
      write_bytes(bad, c.bytes);
    }
    std::vector<std::string> args = inputs(p) + std::vector<std::string>{"-o", out};
    if (std::string(c.replaces) == "--mask") {
      args = args + std::vector<std::string>{"--mask", path};
    } else {
      for (size_t i = 0; i < args.size(); ++i)
        if (args[i] == c.replaces) args[i + 1] = path;
    }
    for (const char* command : {"attend", "exact"})
      check_failure(dir, run(dir, std::vector<std::string>{command} + args), path, c.problem, out);
  }
  check_failure(dir, run(dir, std::vector<std::string>{"attend", "--q", dir.file("missing.npy"), "--k", p.k_path,
                                                       "--v", p.v_path, "-o", out}),
                dir.file("missing.npy"), "cannot open", out);
}

TEST_CASE("bad options: one line naming the option, exit 2, no output") {
  TempDir dir;
  const Problem p = write_problem(dir, {1, 1, 64, 8}, {1, 1, 64, 8});
  const std::string out = dir.file("out.npy");
  struct Case {
    std::vector<std::string> args;
    const char* subject;
    const char* problem;
  };
  const Case cases[] = {
      {{"--scales", "32,3"}, "--scales", "1"},
      {{"--scales", "1,32"}, "--scales", ""},
      {{"--scales", "32,,1"}, "--scales", "not an integer"},
      {{"--scales", "32,0"}, "--scales", "at least 1"},
      {{"--scales", "12,8,1"}, "--scales", ""},
      {{"--budget", "1,2"}, "--budget", "expected 1 value"},
      {{"--scales", "2097152,1"}, "--scales", "above the largest block side, 1048576"},
      {{"--scale=x"}, "--scale", "not a finite number"},
      {{"--budget", "-1"}, "--budget", "at least 0"},
      {{"--budget", "2", "--blocks-per-row", "2"}, "--budget", "cannot be combined"},
      {{"--blocks-per-row", "x"}, "--blocks-per-row", "not an integer"},
      {{"--mode", "dense"}, "--mode", "'dense' is not 'full' or 'sparse'"},
      {{"--prior-first", "-2"}, "--prior-first", "at least 0"},
      {{"--prior-diagonal", "1.5"}, "--prior-diagonal", "not an integer"},
      {{"--scale", "abc"}, "--scale", "not a finite number"},
      {{"--scale", "nan"}, "--scale", "not a finite number"},
      {{"--scale", "-1"}, "--scale", "positive"},
      {{"--scale", "1e999"}, "--scale", "not a finite number"},
      {{"--budget", "99999999999999999999"}, "--budget", "out of range"},
      {{"--bogus", "1"}, "--bogus", "unknown option"},
      {{"stray"}, "stray", "unexpected argument"},
      {{"--mode", "full", "--mode", "full"}, "--mode", "more than once"},
      {{"--mode"}, "--mode", "missing value"},
      {{"--policy", "rows"}, "--policy", "'rows' is not 'global' or 'row'"},
      {{"--causal", "--policy", "global"}, "--policy", "cannot be combined with --causal"},
      {{"--causal=1"}, "--causal", "takes no value"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args.front());
    CAPTURE(c.args.back());
    check_failure(dir, run(dir, std::vector<std::string>{"attend"} + inputs(p) + std::vector<std::string>{"-o", out} + c.args),
                  c.subject, c.problem, out);
  }
  check_failure(dir, run(dir, std::vector<std::string>{"attend"} + inputs(p)), "-o", "required", out);
  check_failure(dir, run(dir, std::vector<std::string>{"attend", "--q", p.q_path, "--v", p.v_path, "-o", out}), "--k",
                "required", out);
  check_failure(dir, run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                                  std::vector<std::string>{"--scales", "32,1", "-o", out}),
                "--scales", "unknown option", out);
  check_failure(dir, run(dir, {"frobnicate"}), "frobnicate", "unknown command", out);
  // The output folder does not exist: the failure names the output file.
  const std::string unwritable = dir.file("no-such-folder/out.npy");
  check_failure(dir, run(dir, std::vector<std::string>{"attend"} + inputs(p) + std::vector<std::string>{"-o", unwritable}),
                unwritable, "cannot create a temporary file", unwritable);
}

TEST_CASE("--backend emulated runs the generated kernels and agrees with the reference") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x1_d32_f32", "mra_fwd_r16x4x1_d32_f32"})) return;
  TempDir dir;
  // D = 32 with scales 16,1 and 16,4,1 are generated configurations; 40 is not a multiple of 16.
  const Problem p = write_problem(dir, {2, 1, 40, 32}, {2, 1, 40, 32});
  const std::vector<std::vector<std::string>> configs{
      {"--scales", "16,1", "--budget", "4"},
      {"--scales", "16,1", "--budget", "4", "--mode", "sparse", "--prior-first", "1"},
      {"--scales", "16,4,1", "--budget", "3,10"},
      // Causal attention (§9, policy row): a budget per block row, the crossing blocks besides it.
      {"--scales", "16,1", "--budget", "1", "--causal"},
      {"--scales", "16,4,1", "--budget", "1,2", "--mode", "sparse", "--causal"},
  };
  for (const auto& config : configs) {
    CAPTURE(config.back());
    const std::string ref = dir.file("ref.npy"), emu = dir.file("emu.npy");
    const Result r = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config + std::vector<std::string>{"-o", ref});
    const Result e = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config +
                                  std::vector<std::string>{"--backend", "emulated", "-o", emu});
    INFO(e.err);
    REQUIRE(r.status == 0);
    REQUIRE(e.status == 0);
    const mra::npy::Array a = load_ok(emu), b = load_ok(ref);
    CHECK(a.shape == b.shape);
    CHECK(relative_error(a.values, b.values) < 1e-5);
  }
  const std::string out = dir.file("unsupported.npy");
  const Result u = run(dir, std::vector<std::string>{"attend"} + inputs(p) +
                                std::vector<std::string>{"--scales", "8,1", "--backend", "emulated", "-o", out});
  CHECK(u.status == 2);
  CHECK(u.err.rfind("mra-ref: --backend emulated: unsupported configuration", 0) == 0);
  CHECK(!std::filesystem::exists(out));
  const Result bad = run(dir, std::vector<std::string>{"attend"} + inputs(p) +
                                  std::vector<std::string>{"--backend", "gpu", "-o", out});
  CHECK(bad.status == 2);
  CHECK(bad.err.rfind("mra-ref: --backend: ", 0) == 0);
}

TEST_CASE("a failed run leaves an existing output file as it was") {
  TempDir dir;
  const Problem p = write_problem(dir, {1, 1, 64, 8}, {1, 1, 64, 8});
  const std::string out = dir.file("out.npy");
  write_bytes(out, "previous contents");
  const Result r = run(dir, std::vector<std::string>{"attend"} + inputs(p) +
                                std::vector<std::string>{"--budget", "9,9", "-o", out});
  CHECK(r.status == 2);
  CHECK(read_text(out) == "previous contents");
}

TEST_CASE("demo writes its files and prints commands that work on them") {
  TempDir dir;
  const std::string folder = dir.file("demo out");  // a space, to exercise the quoting of printed commands
  const Result r = run(dir, {"demo", "--out", folder});
  INFO(r.err);
  REQUIRE(r.status == 0);
  for (const char* name : {"q.npy", "k.npy", "v.npy", "exact.npy", "mra_32-1_bpr4_full.npy", "mra_16-4-1_bpr4_sparse.npy"})
    CHECK(fs::exists(fs::path(folder) / name));
  CHECK(r.out.find("16,4,1 bpr 4 full") != std::string::npos);

  std::istringstream lines(r.out);
  std::string line, attend, compare;
  while (std::getline(lines, line)) {
    if (line.rfind("  ", 0) != 0) continue;  // the commands are the indented lines
    if (line.find(" attend --q ") != std::string::npos) attend = line;
    if (line.find(" compare ") != std::string::npos) compare = line;
  }
  REQUIRE_FALSE(attend.empty());
  REQUIRE_FALSE(compare.empty());
  CHECK(run_shell(dir, attend).status == 0);
  const Result c = run_shell(dir, compare);
  CHECK(c.status == 0);
  CHECK(c.out.find("relative Frobenius error") != std::string::npos);
}

TEST_CASE("output to stdout, options as --name=value, --quiet and --version") {
  TempDir dir;
  const Problem p = write_problem(dir, {1, 2, 40, 8}, {1, 2, 40, 8});
  REQUIRE(run(dir, std::vector<std::string>{"attend"} + inputs(p) + std::vector<std::string>{"-o", dir.file("f.npy")})
              .status == 0);
  // -o - puts the array on stdout and the summary line on stderr; --scale=S is --scale S.
  const Result piped = run(dir, std::vector<std::string>{"attend"} + inputs(p) +
                                    std::vector<std::string>{"--quiet", "-o", "-"});
  REQUIRE(piped.status == 0);
  CHECK(piped.out == read_text(dir.file("f.npy")));
  CHECK(piped.err.rfind("wrote - [1, 2, 40, 8]: scales 32,1", 0) == 0);
  const Result a = run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                                std::vector<std::string>{"--scale=0.5", "-o", dir.file("a.npy")});
  const Result b = run(dir, std::vector<std::string>{"exact"} + inputs(p) +
                                std::vector<std::string>{"--scale", "0.5", "-o", dir.file("b.npy")});
  const Result c = run(dir, std::vector<std::string>{"exact"} + inputs(p) + std::vector<std::string>{"-o", dir.file("c.npy")});
  REQUIRE(a.status == 0);
  REQUIRE(b.status == 0);
  REQUIRE(c.status == 0);
  CHECK(read_text(dir.file("a.npy")) == read_text(dir.file("b.npy")));
  CHECK(read_text(dir.file("a.npy")) != read_text(dir.file("c.npy")));
  // Progress goes to a terminal only: with stderr a file, nothing but errors appears there.
  CHECK(a.err.empty());
  // On a terminal (script(1) provides one) exact and attend show their progress on stderr, unless --quiet.
  if (std::system("command -v script >/dev/null 2>&1") == 0) {
    for (const bool quiet : {false, true}) {
      CAPTURE(quiet);
      const std::string log = dir.file("tty.log");
      std::string command = MRA_REF_BINARY;
      for (const std::string& a : std::vector<std::string>{"exact"} + inputs(p) +
                                      std::vector<std::string>{"-o", dir.file("t.npy")})
        command += " " + a;
      if (quiet) command += " --quiet";
      REQUIRE(std::system(("script -qec " + quote(command + " >/dev/null") + " " + quote(log) + " >/dev/null").c_str()) == 0);
      CHECK((read_text(log).find("mra-ref exact:   0%") != std::string::npos) == !quiet);
    }
  }
  const Result version = run(dir, {"--version"});
  CHECK(version.status == 0);
  CHECK(version.out.rfind("mra-ref 0.", 0) == 0);
}

TEST_CASE("compare: NaN fails without a tolerance, and --per-head gives one line per slice") {
  TempDir dir;
  const std::vector<int64_t> shape{2, 2, 5, 3};
  std::vector<double> a = sample(60, 7), b = a;
  b[((1 * 2 + 1) * 5 + 0) * 3 + 1] += 0.25;  // [b, h] = [1, 1]
  write_bytes(dir.file("a.npy"), npy_of("<f4", shape, a));
  write_bytes(dir.file("b.npy"), npy_of("<f4", shape, b));
  const Result per_head = run(dir, {"compare", dir.file("a.npy"), dir.file("b.npy"), "--per-head"});
  CHECK(per_head.status == 0);
  CHECK(per_head.out.find("b 0 h 0: relative 0.000e+00, max absolute 0.000e+00") != std::string::npos);
  CHECK(per_head.out.find("b 1 h 1: relative ") != std::string::npos);
  CHECK(per_head.out.find("max absolute 2.500e-01 at [1, 1, 0, 1]") != std::string::npos);

  std::vector<double> with_nan = a;
  with_nan[7] = std::nan("");
  write_bytes(dir.file("n.npy"), npy_of("<f4", shape, with_nan));
  for (const std::pair<const char*, const char*>& files : {std::pair{"n.npy", "a.npy"}, std::pair{"a.npy", "n.npy"}}) {
    const std::string x = files.first, y = files.second;
    CAPTURE(x);
    const Result r = run(dir, {"compare", dir.file(x), dir.file(y)});
    CHECK(r.status == 1);
    CHECK(r.out.find("FAIL: 1 of 60 elements are NaN or infinite in one file and not in the other, the first at "
                     "[0, 0, 2, 1]") != std::string::npos);
  }
  // The same NaN in both files is equal, as a poisoned slice compares against itself.
  const Result same = run(dir, {"compare", dir.file("n.npy"), dir.file("n.npy"), "--atol", "0"});
  CHECK(same.status == 0);
  CHECK(same.out.find("PASS") != std::string::npos);
  check_failure(dir, run(dir, {"compare", dir.file("a.npy"), dir.file("b.npy"), "--per-head=1"}), "--per-head",
                "takes no value", dir.file("none"));
}

namespace {

// The gradients of exact softmax attention in double (dq, dk, dv of L = sum dout * out), written independently
// of the reference: with every block selected MRA is exact attention, and so are its gradients.
struct ExactGradients {
  std::vector<double> dq, dk, dv;
};
// With `causal`, query i sees key j only when j <= i + nk - nq (docs/semantics.md §9.1).
ExactGradients exact_gradients(const Problem& p, const std::vector<double>& dout, const std::vector<double>& kmask,
                               bool causal = false) {
  ExactGradients g{std::vector<double>(p.q.size(), 0.0), std::vector<double>(p.k.size(), 0.0),
                   std::vector<double>(p.v.size(), 0.0)};
  const double scale = 1.0 / std::sqrt(static_cast<double>(p.D));
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h)
      for (int64_t i = 0; i < p.nq; ++i) {
        const size_t qi = static_cast<size_t>(((b * p.H + h) * p.nq + i) * p.D);
        const auto kv = [&](int64_t j) { return static_cast<size_t>(((b * p.H + h) * p.nk + j) * p.D); };
        std::vector<double> w(static_cast<size_t>(p.nk), 0.0), out(static_cast<size_t>(p.D), 0.0);
        const int64_t keys = causal ? std::clamp<int64_t>(i + p.nk - p.nq + 1, 0, p.nk) : p.nk;
        double m = -INFINITY, den = 0.0;
        for (int64_t j = 0; j < keys; ++j) {
          if (kmask[static_cast<size_t>(b * p.nk + j)] == 0) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < p.D; ++d) dot += p.q[qi + size_t(d)] * p.k[kv(j) + size_t(d)];
          w[static_cast<size_t>(j)] = scale * dot;
          m = std::max(m, scale * dot);
        }
        if (m == -INFINITY) continue;
        for (int64_t j = 0; j < keys; ++j)
          if (kmask[static_cast<size_t>(b * p.nk + j)] != 0) den += w[size_t(j)] = std::exp(w[size_t(j)] - m);
        for (int64_t j = 0; j < keys; ++j) {
          if (kmask[static_cast<size_t>(b * p.nk + j)] == 0) continue;
          w[size_t(j)] /= den;
          for (int64_t d = 0; d < p.D; ++d) out[size_t(d)] += w[size_t(j)] * p.v[kv(j) + size_t(d)];
        }
        double delta = 0.0;
        for (int64_t d = 0; d < p.D; ++d) delta += dout[qi + size_t(d)] * out[size_t(d)];
        for (int64_t j = 0; j < keys; ++j) {
          if (kmask[static_cast<size_t>(b * p.nk + j)] == 0) continue;
          double gv = 0.0;
          for (int64_t d = 0; d < p.D; ++d) gv += dout[qi + size_t(d)] * p.v[kv(j) + size_t(d)];
          const double ds = w[size_t(j)] * (gv - delta);
          for (int64_t d = 0; d < p.D; ++d) {
            g.dv[kv(j) + size_t(d)] += w[size_t(j)] * dout[qi + size_t(d)];
            g.dq[qi + size_t(d)] += scale * ds * p.k[kv(j) + size_t(d)];
            g.dk[kv(j) + size_t(d)] += scale * ds * p.q[qi + size_t(d)];
          }
        }
      }
  return g;
}

}  // namespace

TEST_CASE("grad: with every block selected the gradients of exact attention, errors name their option or file") {
  TempDir dir;
  const Problem p = write_problem(dir, {2, 2, 20, 8}, {2, 2, 45, 8});  // cross-attention, partial blocks
  const std::vector<double> dout = sample(2 * 2 * 20 * 8, 4);
  const std::string dout_path = dir.file("dout.npy");
  write_bytes(dout_path, npy_of("<f4", {2, 2, 20, 8}, dout));
  std::vector<double> kmask(90, 1.0);
  for (int j = 30; j < 45; ++j) kmask[static_cast<size_t>(45 + j)] = 0.0;  // batch 1 pads its last 15 keys
  kmask[4] = 0.0;
  const std::string mask_path = dir.file("key_mask.npy");
  write_bytes(mask_path, npy_of("|u1", {2, 45}, kmask));
  const ExactGradients want = exact_gradients(p, dout, kmask);
  const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
  const std::vector<std::string> outputs{"--dq", dq, "--dk", dk, "--dv", dv};
  const std::vector<std::string> base = std::vector<std::string>{"grad"} + inputs(p) +
                                        std::vector<std::string>{"--key-mask", mask_path, "--dout", dout_path};
  for (const std::vector<std::string>& config :
       {std::vector<std::string>{"--scales", "8,1", "--budget", "18"},
        std::vector<std::string>{"--scales", "4,2,1", "--budget", "60,240", "--mode", "sparse"}}) {
    CAPTURE(config[1]);
    const Result r = run(dir, base + config + outputs);
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(r.out.find("gradients of MRA attention") != std::string::npos);
    const mra::npy::Array gq = load_ok(dq), gk = load_ok(dk), gv = load_ok(dv);
    CHECK(gq.shape == std::vector<int64_t>{2, 2, 20, 8});
    CHECK(gk.shape == std::vector<int64_t>{2, 2, 45, 8});
    CHECK(gv.shape == std::vector<int64_t>{2, 2, 45, 8});
    CHECK(relative_error(gq.values, want.dq) < 1e-6);
    CHECK(relative_error(gk.values, want.dk) < 1e-6);
    CHECK(relative_error(gv.values, want.dv) < 1e-6);
  }
  // With a small budget in mode full the coarse terms change the gradients (the test above is not vacuous).
  const Result coarse = run(dir, base + std::vector<std::string>{"--scales", "8,1", "--budget", "3"} + outputs);
  REQUIRE(coarse.status == 0);
  CHECK(relative_error(load_ok(dk).values, want.dk) > 1e-2);

  const std::string fresh = dir.file("fresh.npy");
  const std::string short_dout = dir.file("short.npy");
  write_bytes(short_dout, npy_of("<f4", {2, 2, 19, 8}, sample(2 * 2 * 19 * 8, 5)));
  check_failure(dir, run(dir, std::vector<std::string>{"grad"} + inputs(p) + std::vector<std::string>{"--dq", fresh, "--dk", dk, "--dv", dv}),
                "--dout", "required", fresh);
  check_failure(dir, run(dir, std::vector<std::string>{"grad"} + inputs(p) + std::vector<std::string>{"--dout", short_dout, "--dq", fresh, "--dk", dk, "--dv", dv}),
                short_dout, "differs from Q's", fresh);
  check_failure(dir, run(dir, base + std::vector<std::string>{"--dq", fresh, "--dk", fresh, "--dv", dv}), "--dk",
                "names the same file as --dq", fresh);
  // A finite dout whose gradients leave the float32 range is refused, not written as infinity.
  const std::string huge = dir.file("huge.npy");
  write_bytes(huge, npy_of("<f4", {2, 2, 20, 8}, std::vector<double>(2 * 2 * 20 * 8, 3e38)));
  check_failure(dir, run(dir, std::vector<std::string>{"grad"} + inputs(p) + std::vector<std::string>{"--dout", huge, "--dq", fresh, "--dk", dk, "--dv", dv}),
                "--dout", "overflows float32", fresh);
}

namespace {

// [B, A, C, D] -> [B, C, A, D]: between [B, H, N, D] and [B, N, H, D], written here independently of mra-ref.
std::vector<double> swap_middle(const std::vector<double>& x, int64_t B, int64_t A, int64_t C, int64_t D) {
  std::vector<double> out(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < A; ++i)
      for (int64_t j = 0; j < C; ++j)
        for (int64_t d = 0; d < D; ++d)
          out[static_cast<size_t>(((b * C + j) * A + i) * D + d)] = x[static_cast<size_t>(((b * A + i) * C + j) * D + d)];
  return out;
}

// [B, Hkv, N, D] -> [B, Hkv * group, N, D]: each K/V head copied to the query heads of its group.
std::vector<double> repeat_heads(const std::vector<double>& x, int64_t B, int64_t hkv, int64_t n, int64_t D,
                                 int64_t group) {
  std::vector<double> out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < hkv * group; ++h) {
      const auto first = x.begin() + ((b * hkv + h / group) * n) * D;
      out.insert(out.end(), first, first + n * D);
    }
  return out;
}

}  // namespace

TEST_CASE("grouped K/V heads (K and V with fewer heads than Q) and --layout bnhd") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x1_d32_f32"})) return;
  TempDir dir;
  // Q with 4 heads, K and V with 2 (GQA); D = 32 and scales 16,1 have a generated kernel.
  const Problem p = write_problem(dir, {2, 4, 40, 32}, {2, 2, 40, 32});
  const std::vector<double> k_full = repeat_heads(p.k, 2, 2, 40, 32, 2), v_full = repeat_heads(p.v, 2, 2, 40, 32, 2);
  const std::string kf = dir.file("k_full.npy"), vf = dir.file("v_full.npy");
  write_bytes(kf, npy_of("<f4", {2, 4, 40, 32}, k_full));
  write_bytes(vf, npy_of("<f4", {2, 4, 40, 32}, v_full));
  const std::vector<std::string> expanded{"--q", p.q_path, "--k", kf, "--v", vf};
  const std::vector<std::string> config{"--scales", "16,1", "--budget", "3"};
  const std::string out = dir.file("out.npy"), want = dir.file("want.npy"), emu = dir.file("emu.npy");

  // exact against the oracle on the copied heads; attend equal to attend on the copied heads, value for value.
  REQUIRE(run(dir, std::vector<std::string>{"exact"} + inputs(p) + std::vector<std::string>{"-o", out}).status == 0);
  CHECK(relative_error(load_ok(out).values, oracle(p.q, k_full, v_full, 2, 4, 40, 40, 32)) < 1e-6);
  const Result a = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config + std::vector<std::string>{"-o", out});
  INFO(a.err);
  REQUIRE(a.status == 0);
  REQUIRE(run(dir, std::vector<std::string>{"attend"} + expanded + config + std::vector<std::string>{"-o", want}).status == 0);
  const mra::npy::Array got = load_ok(out), expected = load_ok(want);
  CHECK(got.shape == std::vector<int64_t>{2, 4, 40, 32});
  CHECK(got.values == expected.values);
  CHECK(relative_error(got.values, oracle(p.q, k_full, v_full, 2, 4, 40, 40, 32)) > 1e-3);  // not every block
  // The generated kernels read the shared K/V heads in place.
  const Result e = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config +
                                std::vector<std::string>{"--backend", "emulated", "-o", emu});
  INFO(e.err);
  REQUIRE(e.status == 0);
  CHECK(relative_error(load_ok(emu).values, got.values) < 1e-5);

  // The same problem in [B, N, H, D] files: outputs and gradients in that layout, the same numbers.
  const std::string qt = dir.file("qt.npy"), kt = dir.file("kt.npy"), vt = dir.file("vt.npy");
  write_bytes(qt, npy_of("<f4", {2, 40, 4, 32}, swap_middle(p.q, 2, 4, 40, 32)));
  write_bytes(kt, npy_of("<f4", {2, 40, 2, 32}, swap_middle(p.k, 2, 2, 40, 32)));
  write_bytes(vt, npy_of("<f4", {2, 40, 2, 32}, swap_middle(p.v, 2, 2, 40, 32)));
  const std::vector<std::string> bnhd{"--q", qt, "--k", kt, "--v", vt, "--layout", "bnhd"};
  const std::string outt = dir.file("outt.npy");
  REQUIRE(run(dir, std::vector<std::string>{"attend"} + bnhd + config + std::vector<std::string>{"-o", outt}).status == 0);
  const mra::npy::Array t = load_ok(outt);
  CHECK(t.shape == std::vector<int64_t>{2, 40, 4, 32});
  CHECK(t.values == swap_middle(got.values, 2, 4, 40, 32));
  const std::vector<double> dout = sample(2 * 4 * 40 * 32, 9);
  const std::string dout_path = dir.file("dout.npy"), doutt = dir.file("doutt.npy");
  write_bytes(dout_path, npy_of("<f4", {2, 4, 40, 32}, dout));
  write_bytes(doutt, npy_of("<f4", {2, 40, 4, 32}, swap_middle(dout, 2, 4, 40, 32)));
  const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
  const std::string dqt = dir.file("dqt.npy"), dkt = dir.file("dkt.npy"), dvt = dir.file("dvt.npy");
  REQUIRE(run(dir, std::vector<std::string>{"grad"} + inputs(p) + config +
                       std::vector<std::string>{"--dout", dout_path, "--dq", dq, "--dk", dk, "--dv", dv}).status == 0);
  REQUIRE(run(dir, std::vector<std::string>{"grad"} + bnhd + config +
                       std::vector<std::string>{"--dout", doutt, "--dq", dqt, "--dk", dkt, "--dv", dvt}).status == 0);
  const mra::npy::Array gk = load_ok(dk), gkt = load_ok(dkt);
  CHECK(gk.shape == std::vector<int64_t>{2, 2, 40, 32});
  CHECK(gkt.shape == std::vector<int64_t>{2, 40, 2, 32});
  CHECK(gkt.values == swap_middle(gk.values, 2, 2, 40, 32));
  CHECK(load_ok(dqt).values == swap_middle(load_ok(dq).values, 2, 4, 40, 32));
  CHECK(load_ok(dvt).values == swap_middle(load_ok(dv).values, 2, 2, 40, 32));
  // dk of a shared head is the sum of what each query head of its group sends it: with the copied heads the
  // gradients come per copy, and the pair of copies adds up to the shared head's.
  const std::string dkf = dir.file("dkf.npy");
  REQUIRE(run(dir, std::vector<std::string>{"grad"} + expanded + config +
                       std::vector<std::string>{"--dout", dout_path, "--dq", dir.file("dqf.npy"), "--dk", dkf, "--dv",
                                                dir.file("dvf.npy")}).status == 0);
  const std::vector<double> per_copy = load_ok(dkf).values;
  std::vector<double> summed(gk.values.size());
  for (size_t i = 0; i < summed.size(); ++i) {
    const size_t b = i / (2 * 40 * 32), hk = i / (40 * 32) % 2, rest = i % (40 * 32);
    summed[i] = per_copy[((b * 4 + 2 * hk) * 40 * 32) + rest] + per_copy[((b * 4 + 2 * hk + 1) * 40 * 32) + rest];
  }
  CHECK(relative_error(gk.values, summed) < 1e-6);

  // Errors: K/V heads that do not divide Q's, an unknown layout, bnhd without a head dimension.
  const Problem three = write_problem(dir, {1, 4, 20, 8}, {1, 3, 20, 8}, "<f4", "three-");
  const std::string fresh = dir.file("fresh.npy");
  check_failure(dir, run(dir, std::vector<std::string>{"attend"} + inputs(three) + std::vector<std::string>{"-o", fresh}),
                three.k_path, "has 3 heads, which do not divide Q's 4", fresh);
  check_failure(dir, run(dir, std::vector<std::string>{"exact"} + inputs(p) + std::vector<std::string>{"--layout", "nhd", "-o", fresh}),
                "--layout", "expected bhnd", fresh);
  const Problem flat = write_problem(dir, {20, 8}, {20, 8}, "<f4", "flat-");
  check_failure(dir, run(dir, std::vector<std::string>{"exact"} + inputs(flat) + std::vector<std::string>{"--layout", "bnhd", "-o", fresh}),
                "--layout", "bnhd needs inputs shaped [N, H, D] or [B, N, H, D]", fresh);
}

// True when every value is one of the 16-bit type's (float16: 11 significant bits, bfloat16: 8).
bool representable(const std::vector<double>& values, const std::string& storage) {
  const int bits = storage == "f16" ? 11 : 8;
  for (double x : values) {
    int e = 0;
    const double m = std::frexp(x, &e);  // x = m 2^e, |m| in [0.5, 1)
    if (std::ldexp(m, bits) != std::nearbyint(std::ldexp(m, bits))) return false;
  }
  return true;
}

TEST_CASE("--storage f16|bf16: the 16-bit kernels, their results stored in the 16-bit type") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x1_d32_f16", "mra_fwd_r16x1_d32_bf16", "mra_fwd_r16x4x1_d32_bf16"}))
    return;
  TempDir dir;
  // sample() values have at most 8 significant bits: both 16-bit types hold the inputs exactly, so the reference
  // on the same files is the right comparison. Relative error bounds: 8 units of each type's roundoff.
  const Problem p = write_problem(dir, {2, 1, 40, 32}, {2, 1, 40, 32});
  const std::string ref = dir.file("ref.npy"), emu = dir.file("emu.npy");
  const std::vector<std::string> config{"--scales", "16,1", "--budget", "4"};
  REQUIRE(run(dir, std::vector<std::string>{"attend"} + inputs(p) + config + std::vector<std::string>{"-o", ref})
              .status == 0);
  // A named pair, not a structured binding: clang 14 cannot capture a binding in CAPTURE's lambda.
  struct Storage {
    std::string name;
    double bound;
  };
  for (const Storage& s : {Storage{"f16", 8 * 0x1p-11}, Storage{"bf16", 8 * 0x1p-8}}) {
    const std::string& storage = s.name;
    const double bound = s.bound;
    CAPTURE(storage);
    const Result e = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config +
                                  std::vector<std::string>{"--backend", "emulated", "--storage", storage, "-o", emu});
    INFO(e.err);
    REQUIRE(e.status == 0);
    CHECK(e.out.find("backend emulated, storage " + storage) != std::string::npos);
    const mra::npy::Array a = load_ok(emu);
    CHECK(representable(a.values, storage));
    CHECK(relative_error(a.values, load_ok(ref).values) < bound);
  }
  // The backward on tensor cores (bfloat16, three levels): gradients in bfloat16, near the reference's.
  const std::string dout = dir.file("dout.npy");
  write_bytes(dout, npy_of("<f4", {2, 1, 40, 32}, sample(2 * 40 * 32, 6)));
  std::vector<std::vector<double>> got[2];
  for (int e = 0; e < 2; ++e) {
    const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
    std::vector<std::string> args = std::vector<std::string>{"grad"} + inputs(p) +
                                    std::vector<std::string>{"--dout", dout, "--scales", "16,4,1", "--budget", "3,10",
                                                             "--dq", dq, "--dk", dk, "--dv", dv};
    if (e) args = args + std::vector<std::string>{"--backend", "emulated", "--storage", "bf16"};
    const Result r = run(dir, args);
    INFO(r.err);
    REQUIRE(r.status == 0);
    for (const std::string& f : {dq, dk, dv}) got[e].push_back(load_ok(f).values);
  }
  for (size_t t = 0; t < 3; ++t) {
    CHECK(representable(got[1][t], "bf16"));
    CHECK(relative_error(got[1][t], got[0][t]) < 8 * 0x1p-8);
  }
  // Errors: a value float16 cannot hold, a storage the reference does not have, an unknown type.
  std::vector<double> big = p.q;
  big[37] = 70000;
  const std::string big_q = dir.file("big.npy"), out = dir.file("out.npy");
  write_bytes(big_q, npy_of("<f4", {2, 1, 40, 32}, big));
  check_failure(dir, run(dir, {"attend", "--q", big_q, "--k", p.k_path, "--v", p.v_path, "--scales", "16,1",
                               "--backend", "emulated", "--storage", "f16", "-o", out}),
                "--q", "7.000e+04 at [0, 0, 1, 5] is beyond the range of --storage f16", out);
  check_failure(dir, run(dir, std::vector<std::string>{"attend"} + inputs(p) +
                                  std::vector<std::string>{"--storage", "bf16", "-o", out}),
                "--storage", "needs --backend emulated", out);
  check_failure(dir, run(dir, std::vector<std::string>{"attend"} + inputs(p) +
                                  std::vector<std::string>{"--backend", "emulated", "--storage", "f8", "-o", out}),
                "--storage", "expected f32, f16 or bf16, got 'f8'", out);
}

TEST_CASE("grad --backend emulated: the backward kernels give the reference's gradients") {
  if (!mra::test::skip_unless_built({"mra_fwd_r16x4x1_d32_f32"})) return;
  TempDir dir;
  // D = 32 with scales 16,4,1 is a generated configuration with backward kernels; 40 and 37 are not multiples of 16.
  const Problem p = write_problem(dir, {2, 1, 40, 32}, {2, 1, 37, 32});
  const std::string dout_path = dir.file("dout.npy");
  write_bytes(dout_path, npy_of("<f4", {2, 1, 40, 32}, sample(2 * 40 * 32, 6)));
  for (const char* mode : {"full", "sparse"}) {
    CAPTURE(mode);
    std::vector<std::vector<double>> got[2];
    for (int e = 0; e < 2; ++e) {
      const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
      const Result r = run(dir, std::vector<std::string>{"grad"} + inputs(p) +
                                    std::vector<std::string>{"--dout", dout_path, "--scales", "16,4,1", "--budget",
                                                             "3,10", "--mode", mode, "--backend",
                                                             e ? "emulated" : "reference", "--dq", dq, "--dk", dk,
                                                             "--dv", dv});
      INFO(r.err);
      REQUIRE(r.status == 0);
      CHECK(r.out.find(e ? "backend emulated" : "backend reference") != std::string::npos);
      for (const std::string& f : {dq, dk, dv}) got[e].push_back(load_ok(f).values);
    }
    for (size_t t = 0; t < 3; ++t) CHECK(relative_error(got[1][t], got[0][t]) < 1e-5);
  }
  // Causal attention (§9.7), with more queries than keys: the first 3 see nothing.
  {
    std::vector<std::vector<double>> got[2];
    for (int e = 0; e < 2; ++e) {
      const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
      const Result r = run(dir, std::vector<std::string>{"grad", "--causal"} + inputs(p) +
                                    std::vector<std::string>{"--dout", dout_path, "--scales", "16,4,1", "--budget",
                                                             "1,2", "--backend", e ? "emulated" : "reference", "--dq",
                                                             dq, "--dk", dk, "--dv", dv});
      INFO(r.err);
      REQUIRE(r.status == 0);
      for (const std::string& f : {dq, dk, dv}) got[e].push_back(load_ok(f).values);
    }
    for (size_t t = 0; t < 3; ++t) CHECK(relative_error(got[1][t], got[0][t]) < 1e-5);
  }
  // GQA (Q with 4 heads, K and V with 2): the kernels sum each K/V head's group as the reference does (§8).
  const Problem g = write_problem(dir, {1, 4, 40, 32}, {1, 2, 37, 32}, "<f4", "gqa-");
  const std::string gdout = dir.file("gqa-dout.npy");
  write_bytes(gdout, npy_of("<f4", {1, 4, 40, 32}, sample(4 * 40 * 32, 8)));
  std::vector<std::vector<double>> grouped[2];
  for (int e = 0; e < 2; ++e) {
    const std::string dq = dir.file("gdq.npy"), dk = dir.file("gdk.npy"), dv = dir.file("gdv.npy");
    const Result r = run(dir, std::vector<std::string>{"grad"} + inputs(g) +
                                  std::vector<std::string>{"--dout", gdout, "--scales", "16,4,1", "--budget", "3,10",
                                                           "--backend", e ? "emulated" : "reference", "--dq", dq,
                                                           "--dk", dk, "--dv", dv});
    INFO(r.err);
    REQUIRE(r.status == 0);
    for (const std::string& f : {dq, dk, dv}) grouped[e].push_back(load_ok(f).values);
  }
  REQUIRE(grouped[1][1].size() == 2 * 37 * 32);
  for (size_t t = 0; t < 3; ++t) CHECK(relative_error(grouped[1][t], grouped[0][t]) < 1e-5);
  const std::string out = dir.file("unsupported.npy");
  const Result u = run(dir, std::vector<std::string>{"grad"} + inputs(p) +
                                std::vector<std::string>{"--dout", dout_path, "--scales", "8,1", "--backend", "emulated",
                                                         "--dq", out, "--dk", dir.file("k2.npy"), "--dv",
                                                         dir.file("v2.npy")});
  check_failure(dir, u, "--backend emulated", "unsupported configuration", out);
}

TEST_CASE("--selection head|group: one selection per group of query heads (docs/semantics.md §8.4)") {
  if (!mra::test::skip_unless_built({"mra_fwd_r32x1_d32_f32"})) return;
  TempDir dir;
  // Q with 4 heads, K and V with 2: groups of two heads.
  const Problem p = write_problem(dir, {2, 4, 70, 32}, {2, 2, 70, 32});
  const std::vector<std::string> config{"--scales", "32,1", "--budget", "2"};
  const std::string head = dir.file("head.npy"), group = dir.file("group.npy"), emu = dir.file("emu.npy");
  auto attend = [&](const std::string& out, std::vector<std::string> more) {
    const Result r = run(dir, std::vector<std::string>{"attend"} + inputs(p) + config + more +
                                  std::vector<std::string>{"-o", out});
    INFO(r.err);
    REQUIRE(r.status == 0);
    return r;
  };
  attend(head, {"--selection", "head"});
  const Result g = attend(group, {"--selection", "group"});
  CHECK(g.out.find("selection group") != std::string::npos);
  const std::vector<double> by_group = load_ok(group).values;
  CHECK(relative_error(by_group, load_ok(head).values) > 1e-4);  // the shared selection is another selection
  attend(emu, {"--selection", "group", "--backend", "emulated"});
  CHECK(relative_error(load_ok(emu).values, by_group) < 1e-5);
  // select: the heads of a group list the same blocks.
  const Result s = run(dir, std::vector<std::string>{"select", "--selection", "group"} + inputs(p) + config);
  REQUIRE(s.status == 0);
  CHECK(s.out.find("\"selection\": \"group\"") != std::string::npos);
  auto blocks_of = [&](int b, int h) {
    const size_t at = s.out.find("{\"b\": " + std::to_string(b) + ", \"h\": " + std::to_string(h) + ",");
    REQUIRE(at != std::string::npos);
    const size_t list = s.out.find("\"blocks\": [", at);
    return s.out.substr(list, s.out.find(']', list) - list);
  };
  for (int b = 0; b < 2; ++b) {
    CHECK(blocks_of(b, 0) == blocks_of(b, 1));
    CHECK(blocks_of(b, 2) == blocks_of(b, 3));
  }
  // The backward holds the group's selection fixed: the kernels' gradients match the reference's.
  const std::vector<double> dout = sample(2 * 4 * 70 * 32, 11);
  const std::string dout_path = dir.file("dout.npy");
  write_bytes(dout_path, npy_of("<f4", {2, 4, 70, 32}, dout));
  std::vector<std::vector<double>> grads[2];
  for (int e = 0; e < 2; ++e) {
    const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
    const Result r = run(dir, std::vector<std::string>{"grad", "--selection", "group"} + inputs(p) + config +
                                  std::vector<std::string>{"--dout", dout_path, "--backend", e ? "emulated" : "reference",
                                                           "--dq", dq, "--dk", dk, "--dv", dv});
    INFO(r.err);
    REQUIRE(r.status == 0);
    for (const std::string& f : {dq, dk, dv}) grads[e].push_back(load_ok(f).values);
  }
  for (size_t t = 0; t < 3; ++t) CHECK(relative_error(grads[1][t], grads[0][t]) < 1e-5);
  // Without grouped K/V heads a group is one head: the same output as per head, value for value.
  const Problem one = write_problem(dir, {1, 2, 40, 32}, {1, 2, 40, 32});
  const std::string a = dir.file("a.npy"), b = dir.file("b.npy");
  for (const auto& [out, scope] : {std::pair{a, "head"}, std::pair{b, "group"}})
    REQUIRE(run(dir, std::vector<std::string>{"attend", "--selection", scope} + inputs(one) + config +
                         std::vector<std::string>{"-o", out}).status == 0);
  CHECK(load_ok(a).values == load_ok(b).values);
  // A bad value: one line, exit 2, nothing written; the help names the option.
  const std::string bad = dir.file("bad.npy");
  check_failure(dir, run(dir, std::vector<std::string>{"attend", "--selection", "heads"} + inputs(p) + config +
                                  std::vector<std::string>{"-o", bad}),
                "--selection", "'heads' is not 'head' or 'group'", bad);
  check_failure(dir, run(dir, std::vector<std::string>{"exact", "--selection", "group"} + inputs(p) +
                                  std::vector<std::string>{"-o", bad}),
                "--selection", "unknown option", bad);
  CHECK(run(dir, {"attend", "--help"}).out.find("--selection head|group") != std::string::npos);
}

TEST_CASE("--causal and --policy: causal exact attention, MRA with every block refined equals it, per-row budgets") {
  TempDir dir;
  // Nk - Nq = 30 (cached keys), -20 (the first 20 queries see nothing: rows of 0) and 0.
  const std::vector<std::pair<int64_t, int64_t>> shapes{{40, 70}, {70, 50}, {45, 45}};
  for (const auto& shape : shapes) {
    const int64_t nq = shape.first, nk = shape.second;  // not a structured binding: CAPTURE takes it by reference
    const Problem p = write_problem(dir, {2, 1, nq, 8}, {2, 1, nk, 8});
    CAPTURE(nq);
    CAPTURE(nk);
    const std::string exact = dir.file("exact.npy"), out = dir.file("attend.npy");
    REQUIRE(run(dir, std::vector<std::string>{"exact", "--causal"} + inputs(p) + std::vector<std::string>{"-o", exact}).status == 0);
    const mra::npy::Array ex = load_ok(exact);
    CHECK(relative_error(ex.values, oracle(p.q, p.k, p.v, p.B, p.H, p.nq, p.nk, p.D, {}, {}, true)) < 1e-6);
    CHECK(relative_error(ex.values, oracle(p.q, p.k, p.v, p.B, p.H, p.nq, p.nk, p.D)) > 1e-2);  // causal matters
    for (const char* scales : {"16,1", "8,2,1"}) {
      const Result a = run(dir, std::vector<std::string>{"attend", "--causal", "--scales", scales, "--blocks-per-row",
                                                         "100"} + inputs(p) + std::vector<std::string>{"-o", out});
      INFO(a.err);
      REQUIRE(a.status == 0);
      CHECK(a.out.find("policy row, causal") != std::string::npos);
      CHECK(relative_error(load_ok(out).values, ex.values) < 1e-6);
    }
  }
  // Policy row: 64 queries in 4 block rows of 16, one block per row; causal adds the 4 diagonal blocks.
  const Problem p = write_problem(dir, {1, 1, 64, 8}, {1, 1, 64, 8});
  const Result row = run(dir, std::vector<std::string>{"select", "--policy", "row", "--scales", "16,1", "--budget", "1"} + inputs(p));
  REQUIRE(row.status == 0);
  CHECK(row.out.find("\"policy\": \"row\"") != std::string::npos);
  CHECK(row.out.find("\"causal\": false") != std::string::npos);
  const size_t list = row.out.find("\"blocks\": [");
  REQUIRE(list != std::string::npos);
  const std::string blocks = row.out.substr(list, row.out.find(']', list) - list);
  CHECK(std::count(blocks.begin(), blocks.end(), ',') == 3);
  const Result causal = run(dir, std::vector<std::string>{"select", "--causal", "--scales", "16,1", "--budget", "1"} + inputs(p));
  REQUIRE(causal.status == 0);
  CHECK(causal.out.find("\"blocks\": [0, 4, 5, 8, ") != std::string::npos);  // row 0: its diagonal block only
  // grad --causal (docs/semantics.md §9.7) with every block refined: the gradients of causal exact attention, with
  // cached keys (Nk - Nq = 30), the first 20 queries seeing nothing (-20) and self-attention, 2 and 3 levels.
  for (const auto& shape : shapes) {
    const int64_t nq = shape.first, nk = shape.second;
    CAPTURE(nq);
    const Problem g = write_problem(dir, {2, 1, nq, 8}, {2, 1, nk, 8}, "<f4", "grad-");
    const std::vector<double> dout = sample(2 * nq * 8, 9);
    const std::string dout_path = dir.file("grad-dout.npy");
    write_bytes(dout_path, npy_of("<f4", {2, 1, nq, 8}, dout));
    const ExactGradients want = exact_gradients(g, dout, std::vector<double>(size_t(2 * nk), 1.0), true);
    const ExactGradients dense = exact_gradients(g, dout, std::vector<double>(size_t(2 * nk), 1.0));
    const std::string dq = dir.file("dq.npy"), dk = dir.file("dk.npy"), dv = dir.file("dv.npy");
    for (const char* scales : {"16,1", "8,2,1"}) {
      const Result r = run(dir, std::vector<std::string>{"grad", "--causal", "--scales", scales, "--blocks-per-row",
                                                         "100", "--dout", dout_path, "--dq", dq, "--dk", dk, "--dv",
                                                         dv} + inputs(g));
      INFO(r.err);
      REQUIRE(r.status == 0);
      CHECK(relative_error(load_ok(dq).values, want.dq) < 1e-6);
      CHECK(relative_error(load_ok(dk).values, want.dk) < 1e-6);
      CHECK(relative_error(load_ok(dv).values, want.dv) < 1e-6);
      CHECK(relative_error(load_ok(dk).values, dense.dk) > 1e-2);  // causal matters
    }
  }
  const Result help = run(dir, {"attend", "--help"});
  CHECK(help.out.find("--causal") != std::string::npos);
  CHECK(help.out.find("--policy global|row") != std::string::npos);
}
