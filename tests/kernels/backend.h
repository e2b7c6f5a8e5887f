// tests/kernels/backend.h: the backend the kernel cross-checks run on. test_kernels and test_backward_kernels link
// backend_emulated.cpp (the CPU emulation, always); mra-gpu-kit (gpu_kit.cpp), which runs the cases of both on a
// GPU, links backend_cuda.cpp (built when nvcc is present and run by tools/gpu-check.sh). All buffers here are host
// memory; the CUDA backend copies them to the device and the workspace and output back.
#pragma once

#include <cstddef>
#include <string>

#include "mra.h"

namespace mra::test {

struct Tensors {
  const void* q;
  const void* k;
  const void* v;
  size_t q_bytes, kv_bytes;
  const uint8_t* query_mask;  // [batch, nq] or nullptr
  const uint8_t* key_mask;    // [batch, nk] or nullptr
};

// Runs `stages` (mra::kern::kStage*) of the problem's configuration. `workspace` holds `workspace_bytes` and is
// read and written; `out` receives `out_bytes`. On failure, `error` says why.
mra_status run_stages(const mra_problem& p, const Tensors& t, void* out, size_t out_bytes, void* workspace,
                      size_t workspace_bytes, unsigned stages, std::string* error);

// The backward's buffers, host memory: dout is read; out, dq, dk, dv receive the forward's output and the gradients.
struct GradTensors {
  const void* dout;
  void* out;
  void* dq;
  void* dk;
  void* dv;
};

// The forward of the problem, then the backward on its saved state (mra_forward_host / mra_backward_host, or
// mra_forward / mra_backward on a GPU). `workspace` receives the forward's workspace (`workspace_bytes`);
// `grad_workspace_bytes` is the backward's. On failure, `error` says why.
mra_status run_backward(const mra_problem& p, const Tensors& t, const GradTensors& g, void* workspace,
                        size_t workspace_bytes, size_t grad_workspace_bytes, std::string* error);

// Chooses the order in which emulated threads run between barriers: 0 ascending, 1 a seeded shuffle. A
// GPU has its own order; there it does nothing.
void set_schedule(int which);

// False when this backend cannot run here (no GPU): the cases then skip with a message.
bool available(std::string* why);

}  // namespace mra::test
