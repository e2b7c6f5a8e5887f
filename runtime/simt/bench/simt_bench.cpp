// simt/bench/simt_bench.cpp: simt-bench, the emulator's cost per CUDA thread per __syncthreads, per
// warp shuffle and per barrier-free thread. Not a test: timings depend on the machine.
//   cmake --build build --target simt-bench && build/runtime/simt/simt-bench [workers]
#include "bench_kernels.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

template <typename F>
double best_seconds(F&& f) {
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    if (f() != cudaSuccess) {
      std::fprintf(stderr, "launch failed: %s\n", simt::last_error_message().c_str());
      std::exit(1);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s < best) best = s;
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned workers = argc > 1 ? static_cast<unsigned>(std::atoi(argv[1])) : 1;
  simt::set_worker_threads(workers);
  const unsigned blocks = 8, threads = 256;
  const int iterations = 500;
  std::vector<unsigned> out(blocks * threads);
  std::printf("simt-bench: %u blocks x %u threads, %u worker thread(s)\n", blocks, threads, workers);

  const double bar = best_seconds([&] { return run_barrier_storm(blocks, threads, iterations, out.data()); });
  std::printf("__syncthreads:      %6.1f ns per thread per barrier\n", bar * 1e9 / (double(blocks) * threads * iterations * 2));

  const double shf = best_seconds([&] { return run_shuffle_storm(blocks, threads, iterations, out.data()); });
  std::printf("__shfl_xor_sync:    %6.1f ns per thread per shuffle\n", shf * 1e9 / (double(blocks) * threads * iterations));

  const unsigned many = 4096;
  std::vector<unsigned> big(many * threads);
  const double ns = best_seconds([&] { return run_no_sync(many, threads, big.data()); });
  std::printf("barrier-free:       %6.1f ns per thread\n", ns * 1e9 / (double(many) * threads));
  return 0;
}
