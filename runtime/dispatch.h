// runtime/dispatch.h: finding the generated configuration of a problem and running it, for both backends.
// Internal to the mra::runtime targets (runtime/CMakeLists.txt) and the kernel tests; the public API is mra.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/entry.h"
#include "mra.h"

namespace mra::detail {

// One generated configuration, as generated/registry.inc lists it.
struct ConfigInfo {
  const char* name;
  mra_dtype dtype;
  int64_t dim;
  int32_t levels;
  int64_t sides[MRA_MAX_LEVELS];
};

// Index in registry.inc order of the configuration that serves `p`, or -1. The backends hold their entry
// points in the same order.
int find_config(const mra_problem& p);

// Checks everything mra_forward documents, builds the layout and calls `entries[find_config(p)]` for the
// given stages (kern::kStagePrepare, kern::kStageAttend or both).
mra_status run(const kern::EntryFn* entries, const mra_problem* p, const void* q, const void* k, const void* v,
               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
               size_t workspace_bytes, cudaStream_t stream, unsigned stages);

// The tensors and workspaces of one mra_backward / mra_backward_host call (runtime/mra.h).
struct BackwardCall {
  const void* q;
  const void* k;
  const void* v;
  const uint8_t* query_mask;
  const uint8_t* key_mask;
  const void* out;
  const void* dout;
  void* dq;
  void* dk;
  void* dv;
  const void* forward_workspace;
  size_t forward_workspace_bytes;
  void* workspace;
  size_t workspace_bytes;
};

// Checks everything mra_backward documents and runs the backward of `entries[find_config(p)]`.
mra_status run_backward(const kern::EntryFn* entries, const mra_problem* p, const BackwardCall& c,
                        cudaStream_t stream);

// The emulated backend with a choice of stages, for tests that replace the selection in the workspace.
mra_status forward_host_stages(const mra_problem* p, const void* q, const void* k, const void* v,
                               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                               size_t workspace_bytes, unsigned stages);

// The CUDA backend with a choice of stages (defined only where nvcc built it).
mra_status forward_cuda_stages(const mra_problem* p, const void* q, const void* k, const void* v,
                               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, unsigned stages);

}  // namespace mra::detail
