// runtime/backend_host.cpp: mra_forward_host, the emulated backend: the generated kernels compiled as C++
// against runtime/simt run on host memory. Built into mra_runtime_host (runtime/CMakeLists.txt).
#include "dispatch.h"

#define MRA_CONFIG(name, ...) extern "C" mra_status name##_emulated(const mra::kern::KernelArgs*);
#include "registry.inc"
#undef MRA_CONFIG

namespace mra::detail {
namespace {

const kern::EntryFn kHostEntries[] = {
#define MRA_CONFIG(name, ...) &name##_emulated,
#include "registry.inc"
#undef MRA_CONFIG
};

}  // namespace

mra_status forward_host_stages(const mra_problem* p, const void* q, const void* k, const void* v,
                               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                               size_t workspace_bytes, unsigned stages) {
  return run(kHostEntries, p, q, k, v, query_mask, key_mask, out, workspace, workspace_bytes, nullptr, stages);
}

}  // namespace mra::detail

extern "C" mra_status mra_forward_host(const mra_problem* problem, const void* q, const void* k, const void* v,
                                       const uint8_t* query_mask, const uint8_t* key_mask, void* out,
                                       void* workspace, size_t workspace_bytes) {
  return mra::detail::forward_host_stages(problem, q, k, v, query_mask, key_mask, out, workspace, workspace_bytes,
                                          mra::kern::kStageAll);
}

extern "C" mra_status mra_backward_host(const mra_problem* problem, const void* q, const void* k, const void* v,
                                  const uint8_t* query_mask, const uint8_t* key_mask, const void* out,
                                  const void* dout, void* dq, void* dk, void* dv, const void* forward_workspace,
                                  size_t forward_workspace_bytes, void* workspace, size_t workspace_bytes) {
  const mra::detail::BackwardCall c{q,  k,  v,  query_mask, key_mask, out, dout, dq, dk, dv, forward_workspace,
                                    forward_workspace_bytes, workspace, workspace_bytes};
  return mra::detail::run_backward(mra::detail::kHostEntries, problem, c, nullptr);
}
