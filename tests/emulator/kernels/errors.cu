// tests/emulator/kernels/errors.cu: kernels that must fail, each in its own way (deadlocks, warp
// misuse, traps, launch configurations). Compiled as C++ into emulator_tests and checked with
// nvcc -arch=sm_90 -c (CTest label nvcc); on a GPU the deadlocking ones would hang.
#include "kernels.h"

// A full-mask shuffle that only lanes 0-15 execute, while lanes 16-31 wait at __syncthreads.
__global__ void deadlock_shuffle_half_warp(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 16);
  __syncthreads();
  out[threadIdx.x] = v;
}

// Thread 0 waits at __syncthreads while thread 1 waits for it in a __syncwarp.
__global__ void deadlock_barrier_vs_syncwarp(int* out) {
  if (threadIdx.x == 0)
    __syncthreads();
  else if (threadIdx.x == 1)
    __syncwarp(0x3u);
  out[threadIdx.x] = 1;
}

// Barriers reached a thread-dependent number of times: thread 3 stops one early and then waits in a
// warp operation for lane 2, which is waiting at the extra barrier.
__global__ void deadlock_uneven_barriers(int* out) {
  const int rounds = threadIdx.x == 3 ? 1 : 2;
  for (int i = 0; i < rounds; ++i) __syncthreads();
  if (threadIdx.x == 3) out[0] = __shfl_sync(0x0000000cu, 5, 2);
}

// The calling lane is not in its own mask.
__global__ void mask_without_caller(int* out) {
  out[threadIdx.x] = __shfl_sync(threadIdx.x == 7 ? 0x1u : 0xffffffffu, 1, 0);
}

// Lanes meet under one mask through different operations.
__global__ void mixed_warp_operations(int* out) {
  if (threadIdx.x % 2 == 0)
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  else
    out[threadIdx.x] = static_cast<int>(__ballot_sync(0xffffffffu, 1));
}

__global__ void trap_in_block_two(int* out) {
  if (blockIdx.x == 2 && threadIdx.x == 5) __trap();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

__global__ void no_op(int* out) {
  if (out) out[0] = 1;
}

cudaError_t run_error_kernel(ErrorKernel k, int* out) {
  switch (k) {
    case ErrorKernel::shuffle_half_warp: return simt::launch(deadlock_shuffle_half_warp, dim3(2), dim3(64), 0, nullptr, out);
    case ErrorKernel::barrier_vs_syncwarp: return simt::launch(deadlock_barrier_vs_syncwarp, dim3(1), dim3(2), 0, nullptr, out);
    case ErrorKernel::uneven_barriers: return simt::launch(deadlock_uneven_barriers, dim3(1), dim3(8), 0, nullptr, out);
    case ErrorKernel::mask_without_caller: return simt::launch(mask_without_caller, dim3(1), dim3(32), 0, nullptr, out);
    case ErrorKernel::mixed_operations: return simt::launch(mixed_warp_operations, dim3(1), dim3(32), 0, nullptr, out);
    case ErrorKernel::trap: return simt::launch(trap_in_block_two, dim3(4), dim3(32), 0, nullptr, out);
  }
  return cudaErrorInvalidValue;
}

cudaError_t run_no_op(dim3 grid, dim3 block, size_t dynamic_smem, int* out) {
  return simt::launch(no_op, grid, block, dynamic_smem, nullptr, out);
}

cudaError_t set_no_op_dynamic_shared_limit(int bytes) { return simt::set_max_dynamic_shared(no_op, bytes); }
