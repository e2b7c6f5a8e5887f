// tests/kernels/backend_emulated.cpp: tests/kernels/backend.h on the CPU emulation (mra::runtime_host).
#include "simt/simt.h"

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

void set_schedule(int which) {
  if (which == 0) simt::set_schedule(simt::Schedule::ascending);
  else simt::set_schedule(simt::Schedule::shuffled, 12345);
}

bool available(std::string*) { return true; }

}  // namespace mra::test
