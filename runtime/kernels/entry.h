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
// kStageBackward runs the backward pass instead (docs/semantics.md §7): `grad` says where, and `workspace` is the
// forward's, as that forward left it (the saved state).
inline constexpr unsigned kStagePrepare = 1u, kStageAttend = 2u, kStageAll = 3u, kStageBackward = 4u;

// What the backward reads and writes besides the forward's arguments; passed to its kernels by value.
struct GradArgs {
  const void* out;   // the forward's output [B, H, Nq, D]
  const void* dout;  // ∂L/∂out, same shape
  void* dq;          // [B, H, Nq, D]
  void* dk;          // [B, H, Nk, D]
  void* dv;          // [B, H, Nk, D]
  void* workspace;   // the backward's own workspace, `layout.bytes` bytes
  BackLayout layout;
};

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
  const GradArgs* grad = nullptr;  // kStageBackward only
  // The launch observer (mra_set_launch_observer), called before each launch with its stage; null: none.
  mra_launch_observer observer = nullptr;
  void* observer_user = nullptr;
};

using EntryFn = mra_status (*)(const KernelArgs*);

}  // namespace mra::kern
