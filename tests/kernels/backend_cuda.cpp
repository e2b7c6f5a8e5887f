// tests/kernels/backend_cuda.cpp: tests/kernels/backend.h on a GPU (the C API's CUDA backend, the nvcc-built
// kernels), in mra-gpu-kit.
// Every call copies the inputs and the workspace to the device, runs, and copies the workspace and outputs back.
#include <cuda_runtime.h>

#include <tuple>
#include <vector>

#include "backend.h"
#include "dispatch.h"

namespace mra::test {
namespace {

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) {
    if (cudaMalloc(&ptr, bytes ? bytes : 1) != cudaSuccess) ptr = nullptr;
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

bool upload(DeviceBuffer& d, const void* host, size_t bytes) {
  return d.ptr && (host == nullptr || cudaMemcpy(d.ptr, host, bytes, cudaMemcpyHostToDevice) == cudaSuccess);
}

}  // namespace

mra_status run_stages(const mra_problem& p, const Tensors& t, void* out, size_t out_bytes, void* workspace,
                      size_t workspace_bytes, unsigned stages, std::string* error) {
  const size_t qmask_bytes = t.query_mask ? size_t(p.batch * p.nq) : 0;
  const size_t kmask_bytes = t.key_mask ? size_t(p.batch * p.nk) : 0;
  DeviceBuffer q(t.q_bytes), k(t.kv_bytes), v(t.kv_bytes), qm(qmask_bytes), km(kmask_bytes), o(out_bytes),
      ws(workspace_bytes);
  if (!upload(q, t.q, t.q_bytes) || !upload(k, t.k, t.kv_bytes) || !upload(v, t.v, t.kv_bytes) ||
      !upload(qm, t.query_mask, qmask_bytes) || !upload(km, t.key_mask, kmask_bytes) ||
      !upload(o, out, out_bytes) || !upload(ws, workspace, workspace_bytes)) {
    *error = "device allocation or copy failed";
    return MRA_ERROR_LAUNCH_FAILED;
  }
  const mra_status s = mra::detail::forward_cuda_stages(
      &p, q.ptr, k.ptr, v.ptr, t.query_mask ? static_cast<const uint8_t*>(qm.ptr) : nullptr,
      t.key_mask ? static_cast<const uint8_t*>(km.ptr) : nullptr, o.ptr, ws.ptr, workspace_bytes, nullptr, stages);
  const cudaError_t e = cudaDeviceSynchronize();
  if (s != MRA_SUCCESS || e != cudaSuccess) {
    *error = std::string(mra_status_string(s)) + "; CUDA: " + cudaGetErrorString(e);
    return s != MRA_SUCCESS ? s : MRA_ERROR_LAUNCH_FAILED;
  }
  if (cudaMemcpy(out, o.ptr, out_bytes, cudaMemcpyDeviceToHost) != cudaSuccess ||
      cudaMemcpy(workspace, ws.ptr, workspace_bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
    *error = "copy back failed";
    return MRA_ERROR_LAUNCH_FAILED;
  }
  return MRA_SUCCESS;
}

mra_status run_backward(const mra_problem& p, const Tensors& t, const GradTensors& g, void* workspace,
                        size_t workspace_bytes, size_t grad_workspace_bytes, std::string* error) {
  const size_t qmask_bytes = t.query_mask ? size_t(p.batch * p.nq) : 0;
  const size_t kmask_bytes = t.key_mask ? size_t(p.batch * p.nk) : 0;
  DeviceBuffer q(t.q_bytes), k(t.kv_bytes), v(t.kv_bytes), qm(qmask_bytes), km(kmask_bytes), o(t.q_bytes),
      dout(t.q_bytes), dq(t.q_bytes), dk(t.kv_bytes), dv(t.kv_bytes), ws(workspace_bytes), gws(grad_workspace_bytes);
  if (!upload(q, t.q, t.q_bytes) || !upload(k, t.k, t.kv_bytes) || !upload(v, t.v, t.kv_bytes) ||
      !upload(qm, t.query_mask, qmask_bytes) || !upload(km, t.key_mask, kmask_bytes) ||
      !upload(dout, g.dout, t.q_bytes) || !upload(o, g.out, t.q_bytes) || !upload(dq, g.dq, t.q_bytes) ||
      !upload(dk, g.dk, t.kv_bytes) || !upload(dv, g.dv, t.kv_bytes) || !upload(ws, workspace, workspace_bytes) ||
      !upload(gws, nullptr, 0)) {
    *error = "device allocation or copy failed";
    return MRA_ERROR_LAUNCH_FAILED;
  }
  const auto* qmp = t.query_mask ? static_cast<const uint8_t*>(qm.ptr) : nullptr;
  const auto* kmp = t.key_mask ? static_cast<const uint8_t*>(km.ptr) : nullptr;
  mra_status s = mra_forward(&p, q.ptr, k.ptr, v.ptr, qmp, kmp, o.ptr, ws.ptr, workspace_bytes, nullptr);
  if (s == MRA_SUCCESS)
    s = mra_backward(&p, q.ptr, k.ptr, v.ptr, qmp, kmp, o.ptr, dout.ptr, dq.ptr, dk.ptr, dv.ptr, ws.ptr,
                     workspace_bytes, gws.ptr, grad_workspace_bytes, nullptr);
  const cudaError_t e = cudaDeviceSynchronize();
  if (s != MRA_SUCCESS || e != cudaSuccess) {
    *error = std::string(mra_status_string(s)) + "; CUDA: " + cudaGetErrorString(e);
    return s != MRA_SUCCESS ? s : MRA_ERROR_LAUNCH_FAILED;
  }
  for (auto [host, dev, bytes] : {std::tuple{g.out, &o, t.q_bytes}, {g.dq, &dq, t.q_bytes}, {g.dk, &dk, t.kv_bytes},
                                  {g.dv, &dv, t.kv_bytes}, {workspace, &ws, workspace_bytes}})
    if (cudaMemcpy(host, dev->ptr, bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
      *error = "copy back failed";
      return MRA_ERROR_LAUNCH_FAILED;
    }
  return MRA_SUCCESS;
}

void set_schedule(int) {}

bool available(std::string* why) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    *why = "no CUDA device";
    return false;
  }
  return true;
}

}  // namespace mra::test
