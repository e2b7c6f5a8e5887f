// tests/kernels/bench.h: the timing run of the GPU kit (bench_cuda.cpp), called by its `bench` mode (gpu_kit.cpp).
#pragma once

#include <cstdint>

namespace mra::test {

// Times every built configuration against dense exact attention at B = 1, `heads` heads, N = `n` (forward, and
// backward where the configuration has it) and prints the table. 0 when every timing ran, 1 when one failed, 2
// without a CUDA device.
int bench(int64_t n, int64_t heads);

}  // namespace mra::test
