// runtime/kernels/entry.h: what the runtime hands to the entry point of one generated configuration.
// Internal to the mra::runtime targets (runtime/CMakeLists.txt) and the kernel tests.
//
// Every generated file generated/<name>.cu defines one entry `<name>` (CUDA build) or `<name>_emulated`
// (the same file compiled as C++ against runtime/simt); generated/registry.inc lists them, and the backends
// build their dispatch tables from that list, so a missing file is an unresolved symbol at link time.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/layout.h"
#include "mra.h"

namespace mra::kern {

// Which part of the pipeline a call runs. kStagePrepare: pooling, coarse logits, selection at every level
// (everything the workspace holds); kStageAttend: the fused attention kernel, which reads the pooled values
// and the refined lists from the workspace (so a test may replace the selection between the two).
inline constexpr unsigned kStagePrepare = 1u, kStageAttend = 2u, kStageAll = 3u;

struct KernelArgs {
  mra_problem problem;
  Layout layout;
  const void* q;
  const void* k;
  const void* v;
  const uint8_t* query_mask;
  const uint8_t* key_mask;
  void* out;
  void* workspace;
  unsigned stages;
  cudaStream_t stream;  // nullptr for the emulated backend
  int* cuda_error;      // receives the cudaError_t of a refused launch (MRA_ERROR_LAUNCH_FAILED)
};

using EntryFn = mra_status (*)(const KernelArgs*);

}  // namespace mra::kern
