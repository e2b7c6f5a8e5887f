// tests/emulator/kernels/contract.cu: kernels for the checks that make the emulator's contract
// (docs/emulator.md §2-§3) true: poisoned static shared memory, divergent barriers, mismatched
// collectives, spin-waits without progress, shared memory limits and guards, __activemask,
// __noinline__. Compiled as C++ into emulator_tests and checked with nvcc -arch=sm_90 -c (CTest
// label nvcc); on a GPU most of them would hang or go silently wrong.
#include "kernels.h"

// ---- static shared memory starts every block poisoned ------------------------------------------

// Reads its static shared variables before writing them, then leaves them written: a block that
// found the previous block's values would report them.
__global__ void read_static_shared_first(unsigned* out) {
  __shared__ unsigned word;
  __shared__ float values[5];
  if (threadIdx.x == 0) {
    out[blockIdx.x * 3 + 0] = word;
    out[blockIdx.x * 3 + 1] = __float_as_uint(values[4]);
    out[blockIdx.x * 3 + 2] = static_cast<unsigned>(reinterpret_cast<uintptr_t>(&word) & 0xffffffffu);
    word = blockIdx.x + 1;
    for (int i = 0; i < 5; ++i) values[i] = 1.0f;
  }
}

cudaError_t run_read_static_shared_first(unsigned blocks, unsigned* out) {
  return simt::launch(read_static_shared_first, dim3(blocks), dim3(32), 0, nullptr, out);
}

// A device function's static shared variable may be reached by any kernel that calls it: read first,
// then written, by two kernels in turn; each block must find it poisoned.
__device__ unsigned device_function_shared(unsigned value) {
  __shared__ unsigned slot;
  const unsigned found = slot;
  slot = value;
  return found;
}

__global__ void device_shared_first(unsigned* out) { out[blockIdx.x] = device_function_shared(blockIdx.x + 1); }
__global__ void device_shared_second(unsigned* out) { out[blockIdx.x] = device_function_shared(blockIdx.x + 7); }

cudaError_t run_device_function_shared(int kernel, unsigned blocks, unsigned* out) {
  return simt::launch(kernel == 0 ? device_shared_first : device_shared_second, dim3(blocks), dim3(1), 0, nullptr, out);
}

// A kernel's own static shared variable, written with 7, and its address: no other kernel can reach it,
// so another kernel's blocks leave it as it is.
__global__ void write_own_shared(uintptr_t* out) {
  __shared__ unsigned own;
  own = 7;
  *out = reinterpret_cast<uintptr_t>(&own);
}

cudaError_t run_write_own_shared(uintptr_t* out) {
  return simt::launch(write_own_shared, dim3(1), dim3(1), 0, nullptr, out);
}

// The address of a static shared variable, to compare with the emulator's own thread-local state.
__global__ void static_shared_address(uintptr_t* out) {
  __shared__ int probe[4];
  probe[threadIdx.x] = 1;
  *out = reinterpret_cast<uintptr_t>(&probe[0]);
}

cudaError_t run_static_shared_address(uintptr_t* out) {
  return simt::launch(static_shared_address, dim3(1), dim3(1), 0, nullptr, out);
}

// ---- barriers and collectives that do not match ------------------------------------------------

// Even and odd threads wait at two different __syncthreads: both would complete on many GPUs.
__global__ void barrier_at_two_sites(int* out) {
  if (threadIdx.x % 2 == 0)
    __syncthreads();
  else
    __syncthreads();
  out[threadIdx.x] = 1;
}

// One half of a warp adds, the other takes the maximum, under one full mask.
__global__ void reduce_add_against_max(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  out[threadIdx.x] = lane < 16 ? __reduce_add_sync(0xffffffffu, lane) : __reduce_max_sync(0xffffffffu, lane);
}

// A butterfly shuffle against a shuffle down.
__global__ void shuffle_xor_against_down(int* out) {
  const int v = static_cast<int>(threadIdx.x);
  out[threadIdx.x] = threadIdx.x % 2 ? __shfl_xor_sync(0xffffffffu, v, 1) : __shfl_down_sync(0xffffffffu, v, 1);
}

// __any_sync against __all_sync.
__global__ void any_against_all(int* out) {
  out[threadIdx.x] = threadIdx.x < 8 ? __any_sync(0xffffffffu, 1) : __all_sync(0xffffffffu, 1);
}

__global__ void ask_active_mask(unsigned* out) {
  if (threadIdx.x < 8) out[threadIdx.x] = __activemask();
}

// Thread 0 waits in __nanosleep for a flag no thread will ever set.
__global__ void spin_on_unset_flag(int* out) {
  __shared__ volatile int flag;
  if (threadIdx.x == 1) flag = 0;
  __syncthreads();
  if (threadIdx.x == 0)
    while (flag == 0) __nanosleep(1000);
  out[threadIdx.x] = 1;
}

cudaError_t run_contract_kernel(ContractKernel k, void* out) {
  switch (k) {
    case ContractKernel::barrier_at_two_sites:
      return simt::launch(barrier_at_two_sites, dim3(1), dim3(64), 0, nullptr, static_cast<int*>(out));
    case ContractKernel::reduce_add_against_max:
      return simt::launch(reduce_add_against_max, dim3(1), dim3(32), 0, nullptr, static_cast<unsigned*>(out));
    case ContractKernel::shuffle_xor_against_down:
      return simt::launch(shuffle_xor_against_down, dim3(1), dim3(32), 0, nullptr, static_cast<int*>(out));
    case ContractKernel::any_against_all:
      return simt::launch(any_against_all, dim3(1), dim3(32), 0, nullptr, static_cast<int*>(out));
    case ContractKernel::active_mask:
      return simt::launch(ask_active_mask, dim3(1), dim3(32), 0, nullptr, static_cast<unsigned*>(out));
    case ContractKernel::spin_on_unset_flag:
      return simt::launch(spin_on_unset_flag, dim3(1), dim3(32), 0, nullptr, static_cast<int*>(out));
  }
  return cudaErrorInvalidValue;
}

// ---- shared memory limits and guards -----------------------------------------------------------

// 40 KiB of static shared memory: 8 KiB of dynamic shared memory are left without opting in.
__global__ void forty_kib_static(int* out) {
  __shared__ int big[10 * 1024];
  SIMT_DYNAMIC_SHARED(int, dyn);
  big[threadIdx.x] = 1;
  dyn[0] = 2;
  out[0] = big[0] + dyn[0];
}

cudaError_t run_forty_kib_static(size_t dynamic_bytes, int* out) {
  return simt::launch(forty_kib_static, dim3(1), dim3(1), dynamic_bytes, nullptr, out);
}

cudaError_t set_forty_kib_static_limit(int bytes) { return simt::set_max_dynamic_shared(forty_kib_static, bytes); }

// Thread t writes dynamic shared element t + offset of `ints`.
__global__ void write_dynamic_shared_at(int* out, int offset) {
  SIMT_DYNAMIC_SHARED(int, s);
  s[static_cast<int>(threadIdx.x) + offset] = 1;
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}

cudaError_t run_write_dynamic_shared_at(unsigned ints, int offset, int* out) {
  return simt::launch(write_dynamic_shared_at, dim3(2), dim3(ints), ints * sizeof(int), nullptr, out, offset);
}

// ---- __noinline__ ------------------------------------------------------------------------------

__device__ __noinline__ int add_one_out_of_line(int x) { return x + 1; }

__global__ void call_noinline(int* out) { out[threadIdx.x] = add_one_out_of_line(static_cast<int>(threadIdx.x)); }

cudaError_t run_call_noinline(unsigned threads, int* out) {
  return simt::launch(call_noinline, dim3(1), dim3(threads), 0, nullptr, out);
}
