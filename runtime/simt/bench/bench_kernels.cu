// simt/bench/bench_kernels.cu: the kernels simt-bench times (barrier, shuffle, barrier-free). Built as
// C++ into simt-bench by runtime/simt/CMakeLists.txt; also valid input for nvcc -arch=sm_90 -c.
#include "simt/simt.h"

#include "bench_kernels.h"

__global__ void barrier_storm(int iterations, unsigned* out) {
  __shared__ unsigned s[1024];
  const unsigned t = threadIdx.x;
  unsigned acc = 0;
  for (int i = 0; i < iterations; ++i) {
    s[t] = acc + t;
    __syncthreads();
    acc += s[(t + 1) % blockDim.x];
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + t] = acc;
}

__global__ void shuffle_storm(int iterations, unsigned* out) {
  unsigned v = threadIdx.x;
  for (int i = 0; i < iterations; ++i) v += __shfl_xor_sync(0xffffffffu, v, (i & 15) + 1);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void no_sync(unsigned* out) { out[blockIdx.x * blockDim.x + threadIdx.x] = threadIdx.x * 3u + 1u; }

cudaError_t run_barrier_storm(unsigned blocks, unsigned threads, int iterations, unsigned* out) {
  return simt::launch(barrier_storm, dim3(blocks), dim3(threads), 0, nullptr, iterations, out);
}
cudaError_t run_shuffle_storm(unsigned blocks, unsigned threads, int iterations, unsigned* out) {
  return simt::launch(shuffle_storm, dim3(blocks), dim3(threads), 0, nullptr, iterations, out);
}
cudaError_t run_no_sync(unsigned blocks, unsigned threads, unsigned* out) {
  return simt::launch(no_sync, dim3(blocks), dim3(threads), 0, nullptr, out);
}
