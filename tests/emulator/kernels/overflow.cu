// tests/emulator/kernels/overflow.cu: kernels that write one element past their shared memory, for
// the sanitizer checks of tests/emulator (built only with -DMRA_SANITIZE=ON, run by
// shared_overflow_main.cpp). Also checked with nvcc -arch=sm_90 -c (CTest label nvcc).
#include "simt/simt.h"

cudaError_t run_dynamic_shared_overflow(int* out);
cudaError_t run_static_shared_overflow(int* out);

__global__ void dynamic_shared_overflow(int* out) {
  SIMT_DYNAMIC_SHARED(int, s);
  s[threadIdx.x + 1] = static_cast<int>(threadIdx.x);  // thread 63 writes s[64] of 64
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

__global__ void static_shared_overflow(int* out, int extra) {
  __shared__ int s[64];
  s[threadIdx.x + extra] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

cudaError_t run_dynamic_shared_overflow(int* out) {
  return simt::launch(dynamic_shared_overflow, dim3(1), dim3(64), 64 * sizeof(int), nullptr, out);
}

cudaError_t run_static_shared_overflow(int* out) {
  return simt::launch(static_shared_overflow, dim3(1), dim3(64), 0, nullptr, out, 1);
}
