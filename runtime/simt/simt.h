// simt/simt.h: the kernel contract. One .cu file, two ways to build it:
//   nvcc -arch=sm_90 -I runtime -c kernel.cu                    (real CUDA)
//   g++ -std=c++20 -x c++ -I runtime -isystem /usr/local/cuda/include -c kernel.cu
//                                                               (CPU emulation; link mra::simt)
// Under nvcc every name below maps onto the CUDA runtime; under a host compiler the same names run
// the kernel on the CPU, one fiber per CUDA thread. The contract is described in docs/emulator.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#if defined(__CUDACC__)

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <utility>

#define SIMT_EMULATION 0

// One extern array for every use: extern __shared__ declarations of different types under the same
// name would conflict, and all of them alias the block's dynamic shared memory anyway.
#define SIMT_DYNAMIC_SHARED(T, name)                                                  \
  extern __shared__ __align__(16) unsigned char simt_dynamic_shared_memory_[];        \
  T* name = reinterpret_cast<T*>(simt_dynamic_shared_memory_)

namespace simt {

enum class Schedule { ascending, descending, shuffled };

template <typename... KernelArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                          size_t dynamic_smem_bytes, cudaStream_t stream, Args&&... args) {
  kernel<<<grid, block, dynamic_smem_bytes, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

template <typename... KernelArgs>
inline cudaError_t set_max_dynamic_shared(void (*kernel)(KernelArgs...), int bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

// Emulation controls exist on both sides so that host code needs no #if.
inline void set_schedule(Schedule, uint64_t = 0) {}
inline void set_worker_threads(unsigned) {}
inline void set_stack_size(size_t) {}
inline std::string last_error_message() { return cudaGetErrorString(cudaPeekAtLastError()); }
inline const char* error_name(cudaError_t e) { return cudaGetErrorName(e); }

}  // namespace simt

#else  // CPU emulation

#include "simt/device.h"

#endif

#include "simt/intrinsics.h"

namespace simt {

// sm_90 limits the emulator enforces (and that the nvcc build gets from the hardware).
inline constexpr int kMaxThreadsPerBlock = 1024;
inline constexpr size_t kDefaultDynamicSharedBytes = 48 * 1024;
inline constexpr size_t kMaxDynamicSharedBytesOptIn = 227 * 1024;
inline constexpr size_t kSharedBytesPerSM = 228 * 1024;

// What an emulated launch returns when the kernel itself goes wrong. A barrier or warp operation
// that can never complete would hang a GPU until the watchdog fires, hence the timeout code.
inline constexpr cudaError_t kErrorDeadlock = cudaErrorLaunchTimeout;
// Undefined behaviour the emulator can see: a warp operation whose mask leaves out the caller,
// lanes meeting in one warp collective through different operations, mma/ldmatrix not warp-wide.
inline constexpr cudaError_t kErrorWarpMisuse = cudaErrorIllegalInstruction;
// __trap() and other faults a GPU reports as an unspecified launch failure.
inline constexpr cudaError_t kErrorTrap = cudaErrorLaunchFailure;

}  // namespace simt
