// tools/mra-ref/demo.cpp: `mra-ref demo` (accuracy and cost of MRA on structured inputs, with the files to
// redo it by hand and two SVG pictures) and `mra-ref bench` (reference MRA against reference exact attention).
//   mra-ref demo [--out DIR]      mra-ref bench
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "commands.h"
#include "inputs.h"
#include "mra/reference.h"
#include "plot.h"
#include "synthetic/synthetic.h"

namespace mra::cli {
namespace {

constexpr uint64_t kSeed = 20240601;

double milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

ref::Problem problem_of(const synthetic::Inputs& s) {
  return ref::Problem::of(s.batch, s.heads, s.nq, s.nk, s.dim, s.q.data(), s.k.data(), s.v.data());
}

// Paths printed as commands must survive a copy into a POSIX shell.
std::string shell_quote(const std::string& s) {
  if (s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-+=") == std::string::npos)
    return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct DemoConfig {
  std::vector<int64_t> scales;
  int64_t blocks_per_row;
  ref::Mode mode;
  int64_t prior_first = 0;
};

}  // namespace

int run_demo(const Options& options, const std::string& program) {
  if (!options.positional().empty()) throw Failure(options.positional().front(), "unexpected argument");
  const std::string dir = options.get("--out").value_or("mra-demo");
  if (dir.empty()) throw Failure("--out", "is empty");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Failure(dir, "cannot create the folder: " + ec.message());
  const auto file = [&dir](const std::string& name) { return (std::filesystem::path(dir) / name).string(); };

  constexpr int64_t B = 1, H = 2, N = 1024, D = 64;
  const synthetic::Inputs s = synthetic::structured(B, H, N, N, D, kSeed);
  const ref::Problem p = problem_of(s);
  const std::vector<int64_t> shape{B, H, N, D};
  save_f32(file("q.npy"), shape, s.q);
  save_f32(file("k.npy"), shape, s.k);
  save_f32(file("v.npy"), shape, s.v);

  std::printf("mra-ref demo: B=%lld H=%lld N=%lld D=%lld; structured inputs (attention local along the sequence,\n"
              "plus 4 global tokens at its start), seed %llu; inputs and outputs in %s/\n\n",
              static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(N),
              static_cast<long long>(D), static_cast<unsigned long long>(kSeed), dir.c_str());

  std::vector<float> exact(s.q.size());
  auto start = std::chrono::steady_clock::now();
  ref::exact_attention(p, exact.data());
  const double exact_ms = milliseconds_since(start);
  save_f32(file("exact.npy"), shape, exact);

  std::printf("%-28s %-10s %12s %12s %10s  %s\n", "configuration", "budgets", "exact frac.", "rel. error",
              "time ms", "file");
  std::printf("%-28s %-10s %12.4f %12.3e %10.1f  %s\n", "exact attention", "-", 1.0, 0.0, exact_ms, "exact.npy");

  const std::vector<DemoConfig> configs{
      {{32, 1}, 2, ref::Mode::full},       {{32, 1}, 4, ref::Mode::full},    {{32, 1}, 8, ref::Mode::full},
      {{32, 1}, 4, ref::Mode::full, 1},    {{32, 1}, 4, ref::Mode::sparse},  {{32, 1}, 4, ref::Mode::sparse, 1},
      {{32, 1}, 8, ref::Mode::sparse},     {{16, 1}, 4, ref::Mode::full},    {{64, 1}, 4, ref::Mode::full},
      {{16, 4, 1}, 4, ref::Mode::full},    {{16, 4, 1}, 4, ref::Mode::full, 1}, {{16, 4, 1}, 4, ref::Mode::sparse},
      {{64, 8, 1}, 4, ref::Mode::full},    {{64, 8, 1}, 8, ref::Mode::full}, {{64, 8, 1}, 4, ref::Mode::sparse},
  };
  std::vector<float> out(s.q.size());
  for (const DemoConfig& d : configs) {
    ref::Config c;
    c.scales = d.scales;
    c.mode = d.mode;
    c.prior_first = d.prior_first;
    c.budgets = ref::budgets_from_blocks_per_row(c.scales, N, N, d.blocks_per_row);
    const std::string mode = c.mode == ref::Mode::full ? "full" : "sparse";
    start = std::chrono::steady_clock::now();
    const ref::Selection selection = ref::select(p, c);
    ref::attend(p, c, selection, out.data());
    const double ms = milliseconds_since(start);
    const std::string prior = d.prior_first ? " first " + std::to_string(d.prior_first) : "";
    const std::string name = "mra_" + join(c.scales, "-") + "_bpr" + std::to_string(d.blocks_per_row) + "_" + mode +
                             (d.prior_first ? "_first" + std::to_string(d.prior_first) : "") + ".npy";
    save_f32(file(name), shape, out);
    const std::string label = join(c.scales, ",") + " bpr " + std::to_string(d.blocks_per_row) + " " + mode + prior;
    std::printf("%-28s %-10s %12.4f %12.3e %10.1f  %s\n", label.c_str(), join(c.budgets, ",").c_str(),
                ref::coverage(p, c, selection).exact_fraction(), relative_error(out, exact), ms, name.c_str());
  }

  // The pictures: the selection of the configuration the commands below redo, and the error-budget sweep.
  ref::Config pictured;
  pictured.scales = {16, 4, 1};
  pictured.prior_first = 1;
  pictured.budgets = ref::budgets_from_blocks_per_row(pictured.scales, N, N, 4);
  save_text(file("selection.svg"),
            selection_svg(p, pictured, ref::select(p, pictured), 0, 0,
                          "MRA selection of the demo (head 0): scales 16,4,1, 4 blocks per row, first block preferred"));
  save_text(file("error-budget.svg"),
            error_svg(sweep(p, exact, {{32, 1}, {16, 4, 1}, {64, 8, 1}}, {1, 2, 4, 8, 16}),
                      "MRA error against budget on the demo's inputs (N 1024, D 64, 2 heads)"));
  std::printf("\nPictures (SVG, open in a browser): %s (the blocks refined at each level), %s (error against\n"
              "the fraction of exact entries, for scales 32,1, 16,4,1 and 64,8,1 in both modes).\n",
              file("selection.svg").c_str(), file("error-budget.svg").c_str());

  const std::string prog = shell_quote(program);
  std::printf("\nexact frac.: fraction of the attention matrix computed at full resolution; rel. error: relative\n"
              "Frobenius error of the output against exact attention; bpr: blocks per row (default budgets);\n"
              "first 1: the first block row and column are preferred (--prior-first 1).\n\n"
              "Redo one configuration on the files and compare it with exact attention:\n"
              "  %s attend --q %s --k %s --v %s --scales 16,4,1 --blocks-per-row 4 --prior-first 1 -o %s\n"
              "  %s compare %s %s\n",
              prog.c_str(), shell_quote(file("q.npy")).c_str(), shell_quote(file("k.npy")).c_str(),
              shell_quote(file("v.npy")).c_str(), shell_quote(file("attend.npy")).c_str(), prog.c_str(),
              shell_quote(file("attend.npy")).c_str(), shell_quote(file("exact.npy")).c_str());
  return 0;
}

int run_bench(const Options& options, const std::string&) {
  if (!options.positional().empty()) throw Failure(options.positional().front(), "unexpected argument");
  constexpr int64_t D = 64;
  const int64_t lengths[] = {1024, 4096, 16384};
  ref::Config c;
  c.scales = {32, 1};

  std::printf("mra-ref bench: B=H=1, D=%lld, scales 32,1, 4 blocks per row, mode full; one thread; best of\n"
              "several runs (exact attention at N=16384 runs once).\n\n", static_cast<long long>(D));
  std::printf("%8s %8s %12s %14s %10s %18s\n", "N", "budget", "MRA ms", "exact ms", "exact/MRA", "MRA growth per 2x N");
  double previous_mra = 0.0;
  for (int64_t n : lengths) {
    const synthetic::Inputs s = synthetic::structured(1, 1, n, n, D, kSeed);
    const ref::Problem p = problem_of(s);
    c.budgets = ref::budgets_from_blocks_per_row(c.scales, n, n, 4);
    std::vector<float> out(s.q.size());
    const auto best_of = [](int runs, const auto& work) {
      double best = 0.0;
      for (int r = 0; r < runs; ++r) {
        const auto start = std::chrono::steady_clock::now();
        work();
        const double ms = milliseconds_since(start);
        if (r == 0 || ms < best) best = ms;
      }
      return best;
    };
    const double mra_ms = best_of(5, [&] { ref::mra_attention(p, c, out.data()); });
    const double exact_ms = best_of(n >= 16384 ? 1 : 3, [&] { ref::exact_attention(p, out.data()); });
    char growth[32] = "-";
    if (previous_mra > 0.0) std::snprintf(growth, sizeof growth, "%.2fx", std::sqrt(mra_ms / previous_mra));
    std::printf("%8lld %8lld %12.2f %14.1f %9.1fx %18s\n", static_cast<long long>(n),
                static_cast<long long>(c.budgets[0]), mra_ms, exact_ms, exact_ms / mra_ms, growth);
    std::fflush(stdout);
    previous_mra = mra_ms;
  }
  return 0;
}

}  // namespace mra::cli
