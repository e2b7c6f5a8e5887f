// runtime/api.cpp: the backend-independent half of the C API (runtime/mra.h): statuses, workspace size,
// configuration lookup and argument checks. Built into mra_runtime_core (runtime/CMakeLists.txt).
#include <cstdint>
#include <initializer_list>

#include "dispatch.h"
#include "kernels/layout.h"

namespace mra::detail {
namespace {

const ConfigInfo kConfigs[] = {
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, dtype, dim, levels, {s1, s2, s3, s4}},
#include "registry.inc"
#undef MRA_CONFIG
};

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// §8 rule 4: the bytes from out's first to its last element share nothing with those of q, k or v.
bool output_apart(const mra_problem& p, const void* q, const void* k, const void* v, const void* out) {
  const int64_t elem = p.dtype == MRA_DTYPE_F32 ? 4 : 2, hkv = kern::kv_heads(p);
  struct Range {
    uintptr_t first, end;
  };
  const auto range = [&](const void* base, const int64_t (&s)[4], int64_t heads, int64_t n) {
    const int64_t last = kern::max_offset(kern::row_strides(s, heads, n, p.dim), p.batch, heads, n, p.dim);
    const auto first = reinterpret_cast<uintptr_t>(base);
    return Range{first, first + uintptr_t(last + 1) * uintptr_t(elem)};
  };
  const Range o = range(out, p.strides.out, p.heads, p.nq);
  for (const Range r : {range(q, p.strides.q, p.heads, p.nq), range(k, p.strides.k, hkv, p.nk),
                        range(v, p.strides.v, hkv, p.nk)})
    if (o.first < r.end && r.first < o.end) return false;
  return true;
}

// The cudaError_t behind the calling thread's last MRA_ERROR_LAUNCH_FAILED (mra_last_cuda_error); per thread,
// as the CUDA runtime keeps its own last error, so that concurrent callers do not see each other's.
thread_local int t_last_cuda_error = 0;

mra_status checked_run(const kern::EntryFn* entries, const mra_problem* p, const void* q, const void* k,
                       const void* v, const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream, unsigned stages, int* cuda_error) {
  if (p == nullptr) return MRA_ERROR_BAD_ARGUMENT;
  kern::Layout layout;
  if (const mra_status s = kern::make_layout(*p, &layout)) return s;
  const int index = find_config(*p);
  if (index < 0) return MRA_ERROR_UNSUPPORTED_CONFIG;
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr || workspace == nullptr)
    return MRA_ERROR_BAD_ARGUMENT;
  if (!aligned16(q) || !aligned16(k) || !aligned16(v) || !aligned16(out) || !aligned16(workspace))
    return MRA_ERROR_BAD_ARGUMENT;
  if (workspace_bytes < layout.bytes) return MRA_ERROR_BAD_ARGUMENT;
  if (!output_apart(*p, q, k, v, out)) return MRA_ERROR_BAD_ARGUMENT;
  const kern::KernelArgs args{*p,        layout,    q,      k,     v,        query_mask, key_mask,
                              out,       workspace, stages, stream, cuda_error};
  return entries[index](&args);
}

// The backward's checks beyond the forward's: every tensor pointer present and 16-byte aligned, both workspaces
// large enough, and a configuration with generated backward kernels.
mra_status checked_backward(const kern::EntryFn* entries, const mra_problem* p, const BackwardCall& c,
                            cudaStream_t stream, int* cuda_error) {
  if (p == nullptr) return MRA_ERROR_BAD_ARGUMENT;
  kern::Layout layout;
  if (const mra_status s = kern::make_layout(*p, &layout)) return s;
  const int index = find_config(*p);
  if (index < 0 || !has_backward(*p)) return MRA_ERROR_UNSUPPORTED_CONFIG;
  for (const void* ptr : {c.q, c.k, c.v, c.out, c.dout, static_cast<const void*>(c.dq), static_cast<const void*>(c.dk),
                          static_cast<const void*>(c.dv), c.forward_workspace, static_cast<const void*>(c.workspace)})
    if (ptr == nullptr || !aligned16(ptr)) return MRA_ERROR_BAD_ARGUMENT;
  const kern::BackLayout back = kern::make_back_layout(*p, layout);
  if (c.forward_workspace_bytes < layout.bytes || c.workspace_bytes < back.bytes) return MRA_ERROR_BAD_ARGUMENT;
  const kern::GradArgs grad{c.out, c.dout, c.dq, c.dk, c.dv, c.workspace, back};
  kern::KernelArgs args{*p,     layout,  c.q,   c.k,    c.v,        c.query_mask, c.key_mask,
                        nullptr, const_cast<void*>(c.forward_workspace), kern::kStageBackward, stream, cuda_error};
  args.grad = &grad;
  return entries[index](&args);
}

}  // namespace

// codegen/generate.py renders backward kernels for the dtypes in its BACKWARD_DTYPES (f32); the generated entries
// of the others answer kStageBackward with MRA_ERROR_UNSUPPORTED_CONFIG.
// They read contiguous tensors with one K/V head per head: grouped K/V heads and strides (§8) are not in them yet;
// nor is causal attention (§9; the reference has no causal backward either).
bool has_backward(const mra_problem& p) { return p.dtype == MRA_DTYPE_F32 && kern::plain_layout(p) && p.causal == 0; }

mra_status run_backward(const kern::EntryFn* entries, const mra_problem* p, const BackwardCall& c,
                        cudaStream_t stream) {
  int cuda_error = 0;
  const mra_status s = checked_backward(entries, p, c, stream, &cuda_error);
  t_last_cuda_error = s == MRA_ERROR_LAUNCH_FAILED ? cuda_error : 0;
  return s;
}

int find_config(const mra_problem& p) {
  for (size_t i = 0; i < sizeof kConfigs / sizeof kConfigs[0]; ++i) {
    const ConfigInfo& e = kConfigs[i];
    if (e.dtype != p.dtype || e.dim != p.dim || e.levels != p.levels) continue;
    bool same = true;
    for (int l = 0; l < p.levels; ++l) same = same && e.sides[l] == p.resolutions[l];
    if (same) return int(i);
  }
  return -1;
}

mra_status run(const kern::EntryFn* entries, const mra_problem* p, const void* q, const void* k, const void* v,
               const uint8_t* query_mask, const uint8_t* key_mask, void* out, void* workspace,
               size_t workspace_bytes, cudaStream_t stream, unsigned stages) {
  int cuda_error = 0;
  const mra_status s = checked_run(entries, p, q, k, v, query_mask, key_mask, out, workspace, workspace_bytes, stream,
                                   stages, &cuda_error);
  t_last_cuda_error = s == MRA_ERROR_LAUNCH_FAILED ? cuda_error : 0;
  return s;
}

}  // namespace mra::detail

extern "C" const char* mra_status_string(mra_status status) {
  switch (status) {
    case MRA_SUCCESS: return "success";
    case MRA_ERROR_BAD_ARGUMENT: return "bad argument";
    case MRA_ERROR_BAD_SHAPE: return "bad shape";
    case MRA_ERROR_UNSUPPORTED_CONFIG: return "unsupported configuration (no generated kernel for it)";
    case MRA_ERROR_LAUNCH_FAILED: return "kernel launch failed";
  }
  return "unknown status";
}

extern "C" mra_status mra_workspace_size(const mra_problem* problem, size_t* bytes) {
  if (problem == nullptr || bytes == nullptr) return MRA_ERROR_BAD_ARGUMENT;
  mra::kern::Layout layout;
  if (const mra_status s = mra::kern::make_layout(*problem, &layout)) return s;
  if (mra::detail::find_config(*problem) < 0) return MRA_ERROR_UNSUPPORTED_CONFIG;
  *bytes = layout.bytes;
  return MRA_SUCCESS;
}

extern "C" mra_status mra_backward_workspace_size(const mra_problem* problem, size_t* bytes) {
  if (problem == nullptr || bytes == nullptr) return MRA_ERROR_BAD_ARGUMENT;
  mra::kern::Layout layout;
  if (const mra_status s = mra::kern::make_layout(*problem, &layout)) return s;
  if (mra::detail::find_config(*problem) < 0 || !mra::detail::has_backward(*problem)) return MRA_ERROR_UNSUPPORTED_CONFIG;
  *bytes = mra::kern::make_back_layout(*problem, layout).bytes;
  return MRA_SUCCESS;
}

extern "C" int mra_last_cuda_error(void) { return mra::detail::t_last_cuda_error; }
