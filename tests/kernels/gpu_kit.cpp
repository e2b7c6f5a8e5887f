// tests/kernels/gpu_kit.cpp: the main of mra-gpu-kit, the one GPU executable of the project: the kernel
// cross-checks of test_kernels.cpp and test_backward_kernels.cpp on a GPU (CTest tests kernels.cuda and
// backward.cuda), and the timings of bench_cuda.cpp. Linked to the static CUDA runtime, so that the bundle built
// from it (target mra_gpu_kit, mra-gpu-kit.tar.xz) runs where only the driver is installed (tools/gpu-check.sh).
//   mra-gpu-kit list                        the configurations and GPU architectures built in, the devices seen
//   mra-gpu-kit check [doctest options]     every cross-check (e.g. --source-file=*test_backward_kernels.cpp;
//                                           --count and --list-test-cases need no GPU)
//   mra-gpu-kit bench [N] [heads]           the timing table (defaults 8192 and 16)
//   mra-gpu-kit stages [--plan] [--model FILE] [N...]
//                                           per-stage timings of mra_fwd_r32x1_d64_bf16, MRA and exact attention,
//                                           beside tools/perf-model's estimates (stages_cuda.cpp)
//   mra-gpu-kit autotune [N] [heads] [--out FILE]
//                                           times the tuning candidates against the current tuning and writes the
//                                           winners (default mra-autotune.toml; autotune_cuda.cpp)
// Exit status: check: 0 when every case passed, 1 when one failed, 77 (CTest's SKIP_RETURN_CODE for
// kernels.cuda) without a CUDA device, so that a machine without one reports the test skipped instead of passed
// with nothing checked; bench, stages and autotune: 0, 1 when a timing failed (autotune: a timing of the current
// tuning, or the winners file could not be written), 2 without a device (one line, "no CUDA device"; stages --plan
// needs none) or, for stages, without the model's table, for autotune without candidates; 2 for bad arguments.
#define DOCTEST_CONFIG_IMPLEMENT
#include "common/doctest.h"
#include <cuda_runtime.h>

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "bench.h"

namespace {

constexpr const char* kUsage =
    "usage: mra-gpu-kit list | check [doctest options] | bench [N] [heads] | stages [--plan] [--model FILE] [N...]\n"
    "                   | autotune [N] [heads] [--out FILE]\n"
    "  list      the configurations, tuning candidates and GPU architectures built in, and the CUDA devices seen;\n"
    "            needs no GPU\n"
    "  check     the kernel cross-checks against the reference (forward and backward); 77 without a device\n"
    "  bench     MRA against dense exact attention per configuration, N tokens (8192), heads (16)\n"
    "  stages    per-stage forward times of mra_fwd_r32x1_d64_bf16 (H = 16; N = 1024 ... 65536), MRA and exact\n"
    "            attention, beside tools/perf-model's estimates (FILE, default perf-model.tsv next to this program);\n"
    "            --plan: the tables without timings, no GPU needed\n"
    "  autotune  the tuning candidates (codegen/autotune.toml) against the current tuning, N (8192), heads (16);\n"
    "            the winners go to FILE (mra-autotune.toml), for codegen/apply_tuning.py\n";

constexpr const char* kConfigurations[] = {
#define MRA_CONFIG(name, ...) #name,
#include "registry.inc"
#undef MRA_CONFIG
};

// The list mode: what this executable holds, and whether the driver sees a device (it works without one: the
// static runtime then reports why).
int list() {
  std::printf("architectures: %s\nconfigurations: %zu\n", MRA_KIT_ARCHITECTURES,
              sizeof kConfigurations / sizeof *kConfigurations);
  for (const char* name : kConfigurations) std::printf("  %s\n", name);
  mra::test::list_candidates();
  int runtime = 0, driver = 0, devices = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  const cudaError_t e = cudaGetDeviceCount(&devices);
  std::printf("cuda runtime: %d (static), driver: %d\n", runtime, driver);
  if (e != cudaSuccess) {
    std::printf("devices: 0 (%s)\n", cudaGetErrorString(e));
    return 0;
  }
  std::printf("devices: %d\n", devices);
  for (int d = 0; d < devices; ++d) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, d) == cudaSuccess)
      std::printf("  %d: %s, sm_%d%d, %.1f GiB\n", d, prop.name, prop.major, prop.minor,
                  double(prop.totalGlobalMem) / double(1ull << 30));
  }
  return 0;
}

// A positive integer argument of the bench, stages and autotune modes, or false after one line naming it.
bool positive(const std::string& mode, const char* text, const char* what, int64_t* value) {
  const char* end = text + std::strlen(text);
  const auto [ptr, ec] = std::from_chars(text, end, *value);
  if (ec != std::errc() || ptr != end || *value <= 0) {
    std::fprintf(stderr, "mra-gpu-kit %s: %s must be a positive integer, got '%s'\n", mode.c_str(), what, text);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "list" && argc == 2) return list();
  if ((mode == "bench" && argc <= 4) || mode == "autotune") {
    int64_t n = 8192, heads = 16;
    const char* out = "mra-autotune.toml";
    std::vector<const char*> numbers;
    for (int i = 2; i < argc; ++i) {
      if (mode == "autotune" && std::strcmp(argv[i], "--out") == 0 && i + 1 < argc) out = argv[++i];
      else numbers.push_back(argv[i]);
    }
    if (numbers.size() > 2) {
      std::fprintf(stderr, "mra-gpu-kit %s: extra argument '%s'\n%s", mode.c_str(), numbers[2], kUsage);
      return 2;
    }
    if ((numbers.size() > 0 && !positive(mode, numbers[0], "N", &n)) ||
        (numbers.size() > 1 && !positive(mode, numbers[1], "heads", &heads)))
      return 2;
    return mode == "bench" ? mra::test::bench(n, heads) : mra::test::autotune(n, heads, out);
  }
  if (mode == "stages") {
    std::vector<int64_t> ns;
    std::string model;
    bool plan = false;
    for (int i = 2; i < argc; ++i) {
      if (std::strcmp(argv[i], "--plan") == 0) {
        plan = true;
      } else if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
        model = argv[++i];
      } else {
        int64_t n = 0;
        if (!positive(mode, argv[i], "N", &n)) return 2;
        ns.push_back(n);
      }
    }
    if (ns.empty()) ns = {1024, 2048, 4096, 8192, 16384, 32768, 65536};
    return mra::test::stages(ns, model, plan);
  }
  if (mode == "check") {
    // doctest reads its options after the mode word; argv[0] stays the program's name.
    std::vector<char*> args{argv[0]};
    args.insert(args.end(), argv + 2, argv + argc);
    doctest::Context context(int(args.size()), args.data());
    // A query (--count, --list-test-cases, --help) runs no case: it needs no device.
    std::string why;
    if (!context.shouldExit() && !mra::test::available(&why)) {
      std::fprintf(stderr, "mra-gpu-kit check: skipped: %s\n", why.c_str());
      return 77;
    }
    return context.run();
  }
  if (mode == "--help" || mode == "-h") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "mra-gpu-kit: %s '%s'\n%s", argc > 1 ? "unknown mode or extra arguments:" : "no mode",
               mode.c_str(), kUsage);
  return 2;
}
