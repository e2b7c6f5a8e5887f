// tests/kernels/backend_emulated.cpp: tests/kernels/backend.h on the CPU emulation (mra::runtime_host).
#include "simt/simt.h"

#include <cstdint>
#include <vector>

#include "backend.h"
#include "dispatch.h"

namespace mra::test {

mra_status run_stages(const mra_problem& p, const Tensors& t, void* out, size_t, void* workspace,
                      size_t workspace_bytes, unsigned stages, std::string* error) {
  const mra_status s = mra::detail::forward_host_stages(&p, t.q, t.k, t.v, t.query_mask, t.key_mask, out, workspace,
                                                        workspace_bytes, stages);
  if (s != MRA_SUCCESS) *error = std::string(mra_status_string(s)) + "; emulator: " + simt::last_error_message();
  return s;
}

mra_status run_backward(const mra_problem& p, const Tensors& t, const GradTensors& g, void* workspace,
                        size_t workspace_bytes, size_t grad_workspace_bytes, std::string* error) {
  std::vector<uint64_t> grad_workspace(grad_workspace_bytes / 8 + 2);  // 16-byte aligned by the allocator
  mra_status s = mra_forward_host(&p, t.q, t.k, t.v, t.query_mask, t.key_mask, g.out, workspace, workspace_bytes);
  if (s == MRA_SUCCESS)
    s = mra_backward_host(&p, t.q, t.k, t.v, t.query_mask, t.key_mask, g.out, g.dout, g.dq, g.dk, g.dv, workspace,
                          workspace_bytes, grad_workspace.data(), grad_workspace_bytes);
  if (s != MRA_SUCCESS) *error = std::string(mra_status_string(s)) + "; emulator: " + simt::last_error_message();
  return s;
}

void set_schedule(int which) {
  if (which == 0) simt::set_schedule(simt::Schedule::ascending);
  else simt::set_schedule(simt::Schedule::shuffled, 12345);
}

bool available(std::string*) { return true; }

}  // namespace mra::test
