// tests/kernels/bench_cuda.cpp: times every generated configuration on a GPU against dense exact attention.
//   build (nvcc present): cmake --build build --target bench_kernels_cuda; run: tools/gpu-check.sh
//   bench_kernels_cuda [N] [heads]          (defaults 8192 and 16: q, k and v exceed the 50 MB L2 of an H200)
//
// For each configuration: MRA forward with blocks_per_row = 4 (docs/semantics.md §2.8), mode full, and the
// dense baseline, exact attention run by the fused kernel of the (32, 1) configuration of the same head dim and
// dtype with every 32x32 block refined (mode sparse, budget = all pairs: exactly exact attention); CUDA events around each launch sequence, 3 warm-up
// runs, the median of 21. Prints one line per configuration, then a summary table last.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dispatch.h"
#include "mra.h"

namespace {

const mra::detail::ConfigInfo kEntries[] = {
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, dtype, dim, levels, {s1, s2, s3, s4}},
#include "registry.inc"
#undef MRA_CONFIG
};

// Median time (ms) of `runs` forward calls, after `warmup` untimed ones; negative on failure.
double time_forward(const mra_problem& p, void* q, void* k, void* v, void* out, void* ws, size_t ws_bytes) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int i = 0; i < 3 + 21; ++i) {
    cudaEventRecord(start);
    const mra_status s = mra_forward(&p, q, k, v, nullptr, nullptr, out, ws, ws_bytes, nullptr);
    cudaEventRecord(stop);
    if (s != MRA_SUCCESS || cudaEventSynchronize(stop) != cudaSuccess) return -1.0;
    float ms = 0.f;
    cudaEventElapsedTime(&ms, start, stop);
    if (i >= 3) times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(times.begin(), times.begin() + long(times.size() / 2), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 8192;
  const int64_t heads = argc > 2 ? std::atoll(argv[2]) : 16;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "bench_kernels_cuda: no CUDA device\n");
    return 2;
  }
  std::vector<std::string> table;
  int failures = 0;
  for (const mra::detail::ConfigInfo& e : kEntries) {
    mra_problem p{};
    p.batch = 1;
    p.heads = heads;
    p.nq = p.nk = n;
    p.dim = e.dim;
    p.dtype = e.dtype;
    p.levels = e.levels;
    for (int l = 0; l < e.levels; ++l) p.resolutions[l] = e.sides[l];
    for (int l = 0; l + 1 < e.levels; ++l) {  // §2.8 with blocks_per_row = 4
      const int64_t rows = (n + e.sides[l] - 1) / e.sides[l];
      const int64_t cap = l == 0 ? rows * rows : p.budgets[l - 1] * (e.sides[l - 1] / e.sides[l]) * (e.sides[l - 1] / e.sides[l]);
      p.budgets[l] = std::min(4 * rows, cap);
    }
    mra_problem dense = p;
    dense.levels = 2;
    dense.resolutions[0] = 32;
    dense.resolutions[1] = 1;
    const int64_t blocks = (n + dense.resolutions[0] - 1) / dense.resolutions[0];
    dense.budgets[0] = blocks * blocks;
    dense.mode = MRA_MODE_SPARSE;
    size_t ws_mra = 0, ws_dense = 0;
    const mra_status s1 = mra_workspace_size(&p, &ws_mra), s2 = mra_workspace_size(&dense, &ws_dense);
    const size_t elem = e.dtype == MRA_DTYPE_F32 ? 4 : 2, bytes = size_t(heads * n * e.dim) * elem;
    void *q = nullptr, *k = nullptr, *v = nullptr, *out = nullptr, *ws = nullptr;
    const bool ok = s1 == MRA_SUCCESS && s2 == MRA_SUCCESS && cudaMalloc(&q, bytes) == cudaSuccess &&
                    cudaMalloc(&k, bytes) == cudaSuccess && cudaMalloc(&v, bytes) == cudaSuccess &&
                    cudaMalloc(&out, bytes) == cudaSuccess &&
                    cudaMalloc(&ws, std::max(ws_mra, ws_dense)) == cudaSuccess;
    double t_mra = -1, t_dense = -1;
    if (ok) {
      // Small values keep every logit moderate whatever the dtype; the timing does not depend on them.
      cudaMemset(q, 0x11, bytes);
      cudaMemset(k, 0x12, bytes);
      cudaMemset(v, 0x13, bytes);
      t_mra = time_forward(p, q, k, v, out, ws, ws_mra);
      t_dense = time_forward(dense, q, k, v, out, ws, ws_dense);
    }
    cudaFree(q);
    cudaFree(k);
    cudaFree(v);
    cudaFree(out);
    cudaFree(ws);
    char line[256];
    if (t_mra < 0 || t_dense < 0) {
      ++failures;
      std::snprintf(line, sizeof line, "| %-28s | failed: %s / %s |", e.name, mra_status_string(s1),
                    cudaGetErrorString(cudaGetLastError()));
    } else {
      std::snprintf(line, sizeof line, "| %-28s | %9.3f | %9.3f | %6.1fx |", e.name, t_mra, t_dense, t_dense / t_mra);
    }
    std::printf("%s\n", line);
    std::fflush(stdout);
    table.push_back(line);
  }
  std::printf("\nMRA forward vs dense exact attention, B=1, H=%lld, N=%lld, median of 21 (ms):\n", (long long)heads,
              (long long)n);
  std::printf("| %-28s | %9s | %9s | %7s |\n|---|---|---|---|\n", "configuration", "MRA", "dense", "speedup");
  for (const std::string& l : table) std::printf("%s\n", l.c_str());
  return failures ? 1 : 0;
}
