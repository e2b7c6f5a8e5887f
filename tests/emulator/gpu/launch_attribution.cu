// tests/emulator/gpu/launch_attribution.cu: simt-launch-attribution, what simt::launch and
// simt::set_max_dynamic_shared do on a real GPU (nvcc only; exit 77 = skipped without a device):
// a launch returns its own result and leaves an unrelated earlier error of the thread where it was
// (the old `<<<>>>` + cudaGetLastError() form returned that error and consumed it), and the dynamic
// shared memory attribute is set once per kernel and value, not on every call.
#include "simt/simt.h"

#include <cstdio>

__global__ void write_one(int* out) { out[threadIdx.x] = 1; }

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "simt-launch-attribution: FAILED: %s\n", what);
    ++failures;
  }
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("simt-launch-attribution: no CUDA device, skipped\n");
    return 77;
  }
  int* out = nullptr;
  expect(cudaMalloc(&out, 32 * sizeof(int)) == cudaSuccess, "cudaMalloc");

  // An unrelated runtime call fails (a non-sticky error) and nobody reads cudaGetLastError.
  void* huge = nullptr;
  expect(cudaMalloc(&huge, size_t{1} << 60) == cudaErrorMemoryAllocation, "an impossible cudaMalloc fails");
  expect(simt::launch(write_one, dim3(1), dim3(32), 0, nullptr, out) == cudaSuccess,
         "a good launch after an unrelated error returns cudaSuccess");
  expect(cudaDeviceSynchronize() == cudaSuccess, "the kernel ran");
  expect(simt::get_last_error() == cudaErrorMemoryAllocation, "the unrelated error is still the thread's last error");
  expect(simt::get_last_error() == cudaSuccess, "and is cleared once read");

  // A refused launch returns its own error.
  expect(simt::launch(write_one, dim3(1), dim3(2048), 0, nullptr, out) == cudaErrorInvalidConfiguration,
         "a launch with 2048 threads returns cudaErrorInvalidConfiguration");
  (void)cudaGetLastError();

  // The attribute is set once per value: changed behind the cache's back, a second call with the
  // same value leaves it alone; a new value sets it.
  cudaFuncAttributes attr{};
  expect(simt::set_max_dynamic_shared(write_one, 64 * 1024) == cudaSuccess, "set 64 KiB");
  expect(cudaFuncSetAttribute(write_one, cudaFuncAttributeMaxDynamicSharedMemorySize, 32 * 1024) == cudaSuccess,
         "set 32 KiB directly");
  expect(simt::set_max_dynamic_shared(write_one, 64 * 1024) == cudaSuccess, "64 KiB again");
  expect(cudaFuncGetAttributes(&attr, write_one) == cudaSuccess && attr.maxDynamicSharedSizeBytes == 32 * 1024,
         "the second call with the same value did not call cudaFuncSetAttribute");
  expect(simt::set_max_dynamic_shared(write_one, 96 * 1024) == cudaSuccess, "set 96 KiB");
  expect(cudaFuncGetAttributes(&attr, write_one) == cudaSuccess && attr.maxDynamicSharedSizeBytes == 96 * 1024,
         "a new value is set");

  cudaFree(out);
  if (failures == 0) std::printf("simt-launch-attribution: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
