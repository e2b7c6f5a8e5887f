// runtime/api.cpp: the backend-independent half of the C API (runtime/mra.h): statuses, workspace size,
// configuration lookup and argument checks. Built into mra_runtime_core (runtime/CMakeLists.txt).
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <mutex>

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

// The bytes from the first to the last element of a tensor of `heads` heads and `n` rows with strides `s`.
struct Range {
  uintptr_t first, end;
};
Range range_of(const mra_problem& p, const void* base, const int64_t (&s)[4], int64_t heads, int64_t n) {
  const int64_t elem = p.dtype == MRA_DTYPE_F32 ? 4 : 2;
  const int64_t last = kern::max_offset(kern::row_strides(s, heads, n, p.dim), p.batch, heads, n, p.dim);
  const auto first = reinterpret_cast<uintptr_t>(base);
  return Range{first, first + uintptr_t(last + 1) * uintptr_t(elem)};
}
bool overlap(Range a, Range b) { return a.first < b.end && b.first < a.end; }

// §8 rule 4: out shares no byte range with q, k or v.
bool output_apart(const mra_problem& p, const void* q, const void* k, const void* v, const void* out) {
  const int64_t hkv = kern::kv_heads(p);
  const Range o = range_of(p, out, p.strides.out, p.heads, p.nq);
  for (const Range r : {range_of(p, q, p.strides.q, p.heads, p.nq), range_of(p, k, p.strides.k, hkv, p.nk),
                        range_of(p, v, p.strides.v, hkv, p.nk)})
    if (overlap(o, r)) return false;
  return true;
}

// One tensor's bytes: its first byte, the byte strides and extents of B, H and N, and the bytes of a row (D
// contiguous elements).
struct Place {
  uintptr_t base;
  int64_t stride[3], extent[3], row_bytes;
};
Place place_of(const mra_problem& p, const void* base, const int64_t (&s)[4], int64_t heads, int64_t n) {
  const int64_t elem = p.dtype == MRA_DTYPE_F32 ? 4 : 2;
  const kern::RowStrides r = kern::row_strides(s, heads, n, p.dim);
  return {reinterpret_cast<uintptr_t>(base), {r.batch * elem, r.head * elem, r.row * elem}, {p.batch, heads, n},
          p.dim * elem};
}

// Whether two tensors share no byte: their byte ranges are disjoint, or, for a period S (one of their strides) that
// every stride of either of at least S is a multiple of, each reaches less than S bytes through its strides below
// S and the two intervals of residues mod S that they occupy are disjoint. The second admits tensors interleaved
// in one buffer, such as dq, dk and dv in a packed [B, N, 3, H, D] gradient (S: the row stride).
bool disjoint(const Place& a, const Place& b) {
  const auto range = [](const Place& x) {
    int64_t last = x.row_bytes - 1;
    for (int d = 0; d < 3; ++d) last += x.stride[d] * (x.extent[d] - 1);
    return Range{x.base, x.base + uintptr_t(last) + 1};
  };
  if (!overlap(range(a), range(b))) return true;
  // The bytes below the period that x reaches from its base; -1 when a stride of at least S is not a multiple of S.
  const auto low_reach = [](const Place& x, int64_t period) {
    int64_t reach = x.row_bytes - 1;
    for (int d = 0; d < 3; ++d) {
      if (x.extent[d] == 1) continue;
      if (x.stride[d] < period) reach += x.stride[d] * (x.extent[d] - 1);
      else if (x.stride[d] % period != 0) return int64_t(-1);
    }
    return reach;
  };
  for (const Place* x : {&a, &b})
    for (const int64_t period : x->stride) {
      if (period <= 0) continue;
      const int64_t ra = low_reach(a, period), rb = low_reach(b, period);
      if (ra < 0 || rb < 0 || ra >= period || rb >= period) continue;
      const auto P = uintptr_t(period);
      const auto step = int64_t((b.base % P + P - a.base % P) % P);  // b's residues start `step` bytes after a's
      if (step > ra && period - step > rb) return true;
    }
  return false;
}

// §8 for the backward: dq, dk and dv, written with the strides of q, k and v, have distinct elements (rule 3) and
// share no byte with each other or with q, k, v, out and dout (rule 4, with disjoint()).
bool gradients_apart(const mra_problem& p, const BackwardCall& c) {
  const int64_t hkv = kern::kv_heads(p);
  const auto distinct = [&](const int64_t (&s)[4], int64_t heads, int64_t n) {
    return kern::output_distinct(kern::row_strides(s, heads, n, p.dim), p.batch, heads, n, p.dim);
  };
  if (!distinct(p.strides.q, p.heads, p.nq) || !distinct(p.strides.k, hkv, p.nk) || !distinct(p.strides.v, hkv, p.nk))
    return false;
  const Place grads[3] = {place_of(p, c.dq, p.strides.q, p.heads, p.nq), place_of(p, c.dk, p.strides.k, hkv, p.nk),
                          place_of(p, c.dv, p.strides.v, hkv, p.nk)};
  const Place inputs[5] = {place_of(p, c.q, p.strides.q, p.heads, p.nq), place_of(p, c.k, p.strides.k, hkv, p.nk),
                           place_of(p, c.v, p.strides.v, hkv, p.nk), place_of(p, c.out, p.strides.out, p.heads, p.nq),
                           place_of(p, c.dout, p.strides.out, p.heads, p.nq)};
  for (int t = 0; t < 3; ++t) {
    for (const Place& x : inputs)
      if (!disjoint(grads[t], x)) return false;
    for (int u = 0; u < t; ++u)
      if (!disjoint(grads[t], grads[u])) return false;
  }
  return true;
}

// The launch observer (mra_set_launch_observer): the pair under a mutex, so that a call never sees one half of an
// old setting with the other of a new one, and a flag read first, so that an unset observer costs no lock.
struct Observer {
  mra_launch_observer fn = nullptr;
  void* user = nullptr;
};
std::mutex g_observer_mutex;
Observer g_observer;
std::atomic<bool> g_observed{false};

// The observer a call starting now uses, into its kernel arguments.
void observe(kern::KernelArgs& args) {
  if (!g_observed.load(std::memory_order_acquire)) return;
  const std::lock_guard lock(g_observer_mutex);
  args.observer = g_observer.fn;
  args.observer_user = g_observer.user;
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
  kern::KernelArgs args{*p,        layout,    q,      k,     v,        query_mask, key_mask,
                        out,       workspace, stages, stream, cuda_error};
  observe(args);
  return entries[index](&args);
}

// The backward's checks beyond the forward's: every tensor pointer present and 16-byte aligned, both workspaces
// large enough, a generated configuration (each has backward kernels), and gradients that can be written (§8).
mra_status checked_backward(const kern::EntryFn* entries, const mra_problem* p, const BackwardCall& c,
                            cudaStream_t stream, int* cuda_error) {
  if (p == nullptr) return MRA_ERROR_BAD_ARGUMENT;
  kern::Layout layout;
  if (const mra_status s = kern::make_layout(*p, &layout)) return s;
  const int index = find_config(*p);
  if (index < 0) return MRA_ERROR_UNSUPPORTED_CONFIG;  // every generated configuration has a backward
  for (const void* ptr : {c.q, c.k, c.v, c.out, c.dout, static_cast<const void*>(c.dq), static_cast<const void*>(c.dk),
                          static_cast<const void*>(c.dv), c.forward_workspace, static_cast<const void*>(c.workspace)})
    if (ptr == nullptr || !aligned16(ptr)) return MRA_ERROR_BAD_ARGUMENT;
  const kern::BackLayout back = kern::make_back_layout(*p, layout);
  if (c.forward_workspace_bytes < layout.bytes || c.workspace_bytes < back.bytes) return MRA_ERROR_BAD_ARGUMENT;
  if (!gradients_apart(*p, c)) return MRA_ERROR_BAD_ARGUMENT;
  const kern::GradArgs grad{c.out, c.dout, c.dq, c.dk, c.dv, c.workspace, back};
  kern::KernelArgs args{*p,     layout,  c.q,   c.k,    c.v,        c.query_mask, c.key_mask,
                        nullptr, const_cast<void*>(c.forward_workspace), kern::kStageBackward, stream, cuda_error};
  args.grad = &grad;
  observe(args);
  return entries[index](&args);
}

}  // namespace

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
  if (mra::detail::find_config(*problem) < 0) return MRA_ERROR_UNSUPPORTED_CONFIG;
  *bytes = mra::kern::make_back_layout(*problem, layout).bytes;
  return MRA_SUCCESS;
}

extern "C" int mra_last_cuda_error(void) { return mra::detail::t_last_cuda_error; }

extern "C" void mra_set_launch_observer(mra_launch_observer fn, void* user) {
  using namespace mra::detail;
  const std::lock_guard lock(g_observer_mutex);
  g_observer = Observer{fn, user};
  g_observed.store(fn != nullptr, std::memory_order_release);
}
