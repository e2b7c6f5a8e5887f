// runtime/backend_cuda.cpp: mra_forward, the CUDA backend: the generated kernels built by nvcc, queued on the
// caller's stream. Built into mra_runtime (runtime/CMakeLists.txt) when nvcc is present.
#include "dispatch.h"

#define MRA_CONFIG(name, ...) extern "C" mra_status name(const mra::kern::KernelArgs*);
#include "registry.inc"
#undef MRA_CONFIG

namespace mra::detail {
namespace {

const kern::EntryFn kCudaEntries[] = {
#define MRA_CONFIG(name, ...) &name,
#include "registry.inc"
#undef MRA_CONFIG
};

}  // namespace

mra_status forward_cuda_stages(const mra_problem* p, const void* q, const void* k, const void* v,
                               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                               size_t workspace_bytes, cudaStream_t stream, unsigned stages) {
  return run(kCudaEntries, p, q, k, v, query_mask, key_mask, out, workspace, workspace_bytes, stream, stages);
}

}  // namespace mra::detail

extern "C" mra_status mra_forward(const mra_problem* problem, const void* q, const void* k, const void* v,
                                  const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                                  size_t workspace_bytes, cudaStream_t stream) {
  return mra::detail::forward_cuda_stages(problem, q, k, v, query_mask, key_mask, out, workspace, workspace_bytes,
                                          stream, mra::kern::kStageAll);
}
