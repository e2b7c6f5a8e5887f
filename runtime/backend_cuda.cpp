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

extern "C" mra_status mra_backward(const mra_problem* problem, const void* q, const void* k, const void* v,
                                  const uint8_t* query_mask, const uint8_t* key_mask, const void* out,
                                  const void* dout, void* dq, void* dk, void* dv, const void* forward_workspace,
                                  size_t forward_workspace_bytes, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const mra::detail::BackwardCall c{q,  k,  v,  query_mask, key_mask, out, dout, dq, dk, dv, forward_workspace,
                                    forward_workspace_bytes, workspace, workspace_bytes};
  return mra::detail::run_backward(mra::detail::kCudaEntries, problem, c, stream);
}
