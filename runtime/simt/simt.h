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

#include <map>
#include <mutex>
#include <utility>

#define SIMT_EMULATION 0

// One extern array for every use: extern __shared__ declarations of different types under the same
// name would conflict, and all of them alias the block's dynamic shared memory anyway.
#define SIMT_DYNAMIC_SHARED(T, name)                                                  \
  extern __shared__ __align__(16) unsigned char simt_dynamic_shared_memory_[];        \
  T* name = reinterpret_cast<T*>(simt_dynamic_shared_memory_)

namespace simt {

enum class Schedule { ascending, descending, shuffled };

// cudaLaunchKernelEx returns the error of this launch itself; `<<<>>>` followed by
// cudaGetLastError() would also consume (and blame this launch for) an error that an earlier,
// unrelated runtime call of the thread left behind. Like every runtime call, it still returns a
// sticky error of earlier faulted work, which is the device's state, not this launch's doing.
template <typename... KernelArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                          size_t dynamic_smem_bytes, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = dynamic_smem_bytes;
  config.stream = stream;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

namespace detail {
// The dynamic shared memory limit already set per (kernel, device): set_max_dynamic_shared calls
// cudaFuncSetAttribute once per value, not before every launch. device_reset() forgets them, as
// cudaDeviceReset forgets the attributes.
struct AttributeCache {
  std::mutex mutex;
  std::map<std::pair<const void*, int>, int> max_dynamic_shared;
};
inline AttributeCache& attribute_cache() {
  static AttributeCache cache;
  return cache;
}
}  // namespace detail

template <typename... KernelArgs>
inline cudaError_t set_max_dynamic_shared(void (*kernel)(KernelArgs...), int bytes) {
  int device = 0;
  if (const cudaError_t e = cudaGetDevice(&device)) return e;
  auto& cache = detail::attribute_cache();
  const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), device};
  std::lock_guard lock(cache.mutex);
  const auto it = cache.max_dynamic_shared.find(key);
  if (it != cache.max_dynamic_shared.end() && it->second == bytes) return cudaSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) cache.max_dynamic_shared[key] = bytes;
  return e;
}

// Emulation controls exist on both sides so that host code needs no #if.
inline void set_schedule(Schedule, uint64_t = 0) {}
inline void set_worker_threads(unsigned) {}
inline void set_stack_size(size_t) {}
inline std::string last_error_message() { return cudaGetErrorString(cudaPeekAtLastError()); }
inline const char* error_name(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t get_last_error() { return cudaGetLastError(); }
inline cudaError_t peek_at_last_error() { return cudaPeekAtLastError(); }
inline cudaError_t device_synchronize() { return cudaDeviceSynchronize(); }
inline cudaError_t device_reset() {
  auto& cache = detail::attribute_cache();
  {
    std::lock_guard lock(cache.mutex);
    cache.max_dynamic_shared.clear();
  }
  return cudaDeviceReset();
}

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
// lanes meeting in one warp collective through different operations, mma/ldmatrix not warp-wide,
// __activemask().
inline constexpr cudaError_t kErrorWarpMisuse = cudaErrorIllegalInstruction;
// Threads of a block that do not all reach the same __syncthreads: one at another call site, or a
// barrier after some threads exited (undefined on the GPU, where it hangs or goes wrong silently).
inline constexpr cudaError_t kErrorBarrierMisuse = cudaErrorIllegalInstruction;
// __trap() and other faults a GPU reports as an unspecified launch failure.
inline constexpr cudaError_t kErrorTrap = cudaErrorLaunchFailure;

}  // namespace simt
