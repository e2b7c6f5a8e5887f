// tests/kernels/bench_cuda.cpp: times every generated configuration on a GPU against dense exact attention; the
// `bench` mode of the GPU kit (gpu_kit.cpp). Its timing helpers (bench.h) serve the `stages` mode too.
//   mra-gpu-kit bench [N] [heads]          (defaults 8192 and 16: q, k and v exceed the 50 MB L2 of an H200)
//
// For each configuration: MRA forward with blocks_per_row = 4 (docs/semantics.md §2.8), mode full, and the
// dense baseline, exact attention run by the fused kernel of the (32, 1) configuration of the same head dim and
// dtype with every 32x32 block refined (mode sparse, budget = all pairs: exactly exact attention); then, where the
// configuration has backward kernels (mra_backward_workspace_size succeeds), the backward of both on the state
// their forward saved (the dense one: the backward of exact attention). CUDA events around each launch sequence,
// 3 warm-up runs, the median of 21. Prints one line per configuration, then a summary table last.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench.h"
#include "dispatch.h"
#include "mra.h"

namespace {

const mra::detail::ConfigInfo kEntries[] = {
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, dtype, dim, levels, {s1, s2, s3, s4}},
#include "registry.inc"
#undef MRA_CONFIG
};

}  // namespace

float mra::test::median(std::vector<float>& times) {
  std::nth_element(times.begin(), times.begin() + long(times.size() / 2), times.end());
  return times[times.size() / 2];
}

double mra::test::time_calls(const std::function<mra_status()>& call, const std::function<void()>& timed) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<float> times;
  for (int i = 0; i < 3 + 21; ++i) {
    cudaEventRecord(start);
    const mra_status s = call();
    cudaEventRecord(stop);
    if (s != MRA_SUCCESS || cudaEventSynchronize(stop) != cudaSuccess) return -1.0;
    float ms = 0.f;
    cudaEventElapsedTime(&ms, start, stop);
    if (i < 3) continue;
    times.push_back(ms);
    if (timed) timed();
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return median(times);
}

mra_problem mra::test::bench_problem(const mra::detail::ConfigInfo& e, int64_t n, int64_t heads) {
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
  return p;
}

mra_problem mra::test::dense_problem(const mra_problem& p) {
  mra_problem dense = p;
  dense.levels = 2;
  dense.resolutions[0] = 32;
  dense.resolutions[1] = 1;
  const int64_t blocks = (p.nq + dense.resolutions[0] - 1) / dense.resolutions[0];
  dense.budgets[0] = blocks * blocks;
  dense.mode = MRA_MODE_SPARSE;
  return dense;
}

const mra::detail::ConfigInfo* mra::test::built_config(const char* name) {
  for (const mra::detail::ConfigInfo& e : kEntries)
    if (std::strcmp(e.name, name) == 0) return &e;
  return nullptr;
}

namespace {

// The forward of p, then (when `backward`) the median time of its backward on the state that forward saved; -1 on
// failure. Buffers: q, k, v, out, dout, dq, dk, dv of `bytes` each, ws and gws of at least the sizes p needs.
struct Timing {
  double forward = -1.0, backward = -1.0;
};
Timing time_problem(const mra_problem& p, void* const* t, void* ws, size_t ws_bytes, void* gws, size_t gws_bytes,
                    bool backward) {
  Timing r;
  r.forward = mra::test::time_calls([&] { return mra_forward(&p, t[0], t[1], t[2], nullptr, nullptr, t[3], ws, ws_bytes, nullptr); });
  if (backward && r.forward >= 0)
    r.backward = mra::test::time_calls([&] {
      return mra_backward(&p, t[0], t[1], t[2], nullptr, nullptr, t[3], t[4], t[5], t[6], t[7], ws, ws_bytes, gws,
                          gws_bytes, nullptr);
    });
  return r;
}

}  // namespace

int mra::test::bench(int64_t n, int64_t heads) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "mra-gpu-kit bench: no CUDA device\n");
    return 2;
  }
  std::vector<std::string> table;
  int failures = 0;
  for (const mra::detail::ConfigInfo& e : kEntries) {
    const mra_problem p = mra::test::bench_problem(e, n, heads);
    const mra_problem dense = mra::test::dense_problem(p);
    size_t ws_mra = 0, ws_dense = 0, gws_mra = 0, gws_dense = 0;
    const mra_status s1 = mra_workspace_size(&p, &ws_mra), s2 = mra_workspace_size(&dense, &ws_dense);
    // A configuration without backward kernels answers MRA_ERROR_UNSUPPORTED_CONFIG here: its backward is not timed.
    const bool backward = mra_backward_workspace_size(&p, &gws_mra) == MRA_SUCCESS &&
                          mra_backward_workspace_size(&dense, &gws_dense) == MRA_SUCCESS;
    const size_t elem = e.dtype == MRA_DTYPE_F32 ? 4 : 2, bytes = size_t(heads * n * e.dim) * elem;
    void* t[8] = {};  // q, k, v, out, dout, dq, dk, dv
    void *ws = nullptr, *gws = nullptr;
    bool ok = s1 == MRA_SUCCESS && s2 == MRA_SUCCESS &&
              cudaMalloc(&ws, std::max(ws_mra, ws_dense)) == cudaSuccess &&
              cudaMalloc(&gws, std::max<size_t>(std::max(gws_mra, gws_dense), 16)) == cudaSuccess;
    for (int i = 0; i < (backward ? 8 : 4); ++i) ok = ok && cudaMalloc(&t[i], bytes) == cudaSuccess;
    Timing t_mra, t_dense;
    if (ok) {
      // Small values keep every logit moderate whatever the dtype; the timing does not depend on them.
      for (int i = 0; i < 5; ++i) cudaMemset(t[i], 0x11 + i, t[i] ? bytes : 0);
      t_mra = time_problem(p, t, ws, ws_mra, gws, gws_mra, backward);
      t_dense = time_problem(dense, t, ws, ws_dense, gws, gws_dense, backward);
    }
    for (void* x : t) cudaFree(x);
    cudaFree(ws);
    cudaFree(gws);
    char line[256], back[64] = "|         - |         - |       - |";
    if (backward && t_mra.backward >= 0 && t_dense.backward >= 0)
      std::snprintf(back, sizeof back, "| %9.3f | %9.3f | %6.1fx |", t_mra.backward, t_dense.backward,
                    t_dense.backward / t_mra.backward);
    if (t_mra.forward < 0 || t_dense.forward < 0 || (backward && (t_mra.backward < 0 || t_dense.backward < 0))) {
      ++failures;
      std::snprintf(line, sizeof line, "| %-28s | failed: %s / %s |", e.name, mra_status_string(s1),
                    cudaGetErrorString(cudaGetLastError()));
    } else {
      std::snprintf(line, sizeof line, "| %-28s | %9.3f | %9.3f | %6.1fx %s", e.name, t_mra.forward, t_dense.forward,
                    t_dense.forward / t_mra.forward, back);
    }
    std::printf("%s\n", line);
    std::fflush(stdout);
    table.push_back(line);
  }
  std::printf("\nMRA vs dense exact attention, forward and backward (-: no backward kernels), B=1, H=%lld, N=%lld, "
              "median of 21 (ms):\n", (long long)heads, (long long)n);
  std::printf("| %-28s | %9s | %9s | %7s | %9s | %9s | %7s |\n|---|---|---|---|---|---|---|\n", "configuration",
              "MRA", "dense", "speedup", "MRA bwd", "dense bwd", "speedup");
  for (const std::string& l : table) std::printf("%s\n", l.c_str());
  return failures ? 1 : 0;
}
