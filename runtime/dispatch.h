// runtime/dispatch.h: finding the generated configuration of a problem and running it, for both backends.
// Internal to the mra::runtime targets (runtime/CMakeLists.txt) and the kernel tests; the public API is mra.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/entry.h"
#include "mra.h"

namespace mra::detail {

// Every generated configuration in generated/registry.inc order; `run` is left null (the backends hold
// the entry points, in the same order).
const kern::Entry* configs(size_t* count);

// Index of the configuration that serves `p`, or -1.
int find_config(const mra_problem& p);

// Checks everything mra_forward documents, builds the layout and calls `entries[find_config(p)]` for the
// given stages (kern::kStagePrepare, kern::kStageAttend or both).
mra_status run(const kern::EntryFn* entries, const mra_problem* p, const void* q, const void* k, const void* v,
               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
               size_t workspace_bytes, cudaStream_t stream, unsigned stages);

// The emulated backend with a choice of stages, for tests that replace the selection in the workspace.
mra_status forward_host_stages(const mra_problem* p, const void* q, const void* k, const void* v,
                               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                               size_t workspace_bytes, unsigned stages);

// The CUDA backend with a choice of stages (defined only where nvcc built it).
mra_status forward_cuda_stages(const mra_problem* p, const void* q, const void* k, const void* v,
                               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, unsigned stages);

}  // namespace mra::detail
