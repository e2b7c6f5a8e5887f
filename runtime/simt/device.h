// simt/device.h: the CUDA device built-ins for a host compiler (threadIdx, __syncthreads, warp
// operations, atomics, the fp16/bf16 and fast-math functions the toolkit leaves device-only).
// Included by simt/simt.h when __CUDACC__ is not defined; do not include it directly. Build: see simt.h.
#pragma once

#if defined(__CUDACC__)
#error "simt/device.h is the host-compiler side of simt/simt.h; nvcc uses the real built-ins"
#endif

// crt/host_defines.h keeps a definition that already exists when __CUDACC__ is not defined, so the
// emulation's meaning of these qualifiers must be in place before the toolkit headers are read.
// A block runs all its fibers on one OS thread and a worker runs one block at a time, so a
// thread_local static is exactly one instance per resident block. The ABI tag puts "simt_shared"
// into the variable's symbol name: that is how the runtime finds every static __shared__ variable
// (in the ELF symbol table) to poison it at each block start and to count a kernel's static shared
// memory against the limits.
#define __shared__ __attribute__((abi_tag("simt_shared"))) static thread_local
// Kernels carry the ABI tag "simt_kernel" in their symbol names: that is how the runtime tells a
// kernel's static __shared__ variables (which no other kernel can reach) from those of device
// functions, so that a block start poisons only what its kernel can reach. (A section attribute would
// not do: g++ ignores it on template instantiations.) Error messages leave the tag out.
#define __global__ __attribute__((abi_tag("simt_kernel")))
#define __launch_bounds__(...)

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>

#define SIMT_EMULATION 1

// libstdc++ spells the attribute __attribute__((__noinline__)) (in <memory>, included above, so
// its include guard keeps it from being read again), which this macro would break: nvcc solves it
// in its front end, the emulation by defining the macro after those headers. <stacktrace> and
// <experimental/simd> cannot be included after simt/simt.h.
#define __noinline__ __attribute__((noinline))

#if defined(__SANITIZE_THREAD__)
#define SIMT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIMT_TSAN 1
#endif
#endif

#if defined(SIMT_TSAN)
// Happens-before annotations of the racecheck build (docs/emulator.md §7): a CUDA atomic, barrier or
// fence orders the accesses of CUDA threads only through these edges.
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace simt {

enum class Schedule { ascending, descending, shuffled };

// Launch a kernel on the CPU, synchronously. Returns what the CUDA runtime would return for the
// same configuration, or one of the kError* codes of simt.h when the kernel misbehaves.
template <typename... KernelArgs, typename... Args>
cudaError_t launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                   cudaStream_t stream, Args&&... args);

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
template <typename... KernelArgs>
cudaError_t set_max_dynamic_shared(void (*kernel)(KernelArgs...), int bytes);

// Order in which runnable threads of a block are resumed between two synchronisation points. The
// seed only matters for Schedule::shuffled; each block derives its own sequence from it.
void set_schedule(Schedule schedule, uint64_t seed = 0);
// Blocks of a grid are spread over this many OS threads (the calling thread included); 1 runs the
// grid in block order on the calling thread, which is the default.
void set_worker_threads(unsigned n);
// Stack per CUDA thread; 0 restores the default (64 KiB, 256 KiB under AddressSanitizer).
void set_stack_size(size_t bytes);
// The launches the calling thread has asked for so far, refused ones included: lets a test account for every launch
// of a call (tests/kernels/test_launch_stages.cpp). Emulation only.
uint64_t launch_count();
// Describes the last launch of the calling thread that failed (kernel, block, threads); empty after
// a successful launch.
std::string last_error_message();
const char* error_name(cudaError_t error);
// The CUDA runtime's error state (docs/emulator.md §2), under names that cannot clash with libcudart
// in a program that links both: cudaGetLastError, cudaPeekAtLastError, cudaDeviceSynchronize and
// cudaDeviceReset. After a kernel fault every launch returns the fault until device_reset().
cudaError_t get_last_error();
cudaError_t peek_at_last_error();
cudaError_t device_synchronize();
cudaError_t device_reset();

namespace detail {

struct Block;
struct Fiber;

struct Worker;

// Per OS thread view of the CUDA thread that is running right now; the scheduler rewrites it on
// every switch, so kernels read it through the threadIdx/... macros below. Defined (constant-
// initialised, with a non-zero field) in runtime.cpp, so it lies in the initialised part of the TLS
// block, which precedes the zero-initialised part holding the static __shared__ variables: an
// overrun of a shared array runs away from the emulator's own state instead of into it.
struct ThreadState {
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{};
  dim3 grid_dim{};
  unsigned lane = 0;
  unsigned placement = 1;  // non-zero: keeps the variable out of .tbss
  unsigned char* dynamic_smem = nullptr;
  Block* block = nullptr;
  Fiber* fiber = nullptr;
  Worker* worker = nullptr;  // this OS thread's blocks, stacks and error state (heap)
};
extern constinit thread_local ThreadState tls;

struct LaunchSpec {
  const void* kernel;
  void (*entry)(void* pack);
  void* pack;
  dim3 grid;
  dim3 block;
  size_t dynamic_smem_bytes;
};
cudaError_t launch(const LaunchSpec& spec);
cudaError_t set_max_dynamic_shared(const void* kernel, int bytes);

// A warp collective: every lane of `mask` contributes `in` and receives `out`; the last lane to
// arrive runs `fn` over all of them. `arg` is a per-lane scalar (a source lane, an operation).
struct LaneCall {
  const void* in;
  void* out;
  unsigned arg;
};
// calls[l] is null for lanes that do not take part (outside the mask or exited). Lanes meet in one
// operation only when they call the same `fn` with the same `op` (the instruction's variant: shuffle
// mode, reduction, vote kind); anything else under one mask is reported as warp misuse.
using WarpFn = void (*)(LaneCall* const calls[32], unsigned participants);
void warp_collective(unsigned mask, WarpFn fn, unsigned op, const void* in, void* out, unsigned arg);
[[noreturn]] void active_mask();

// The call site of a __syncthreads: every thread of the block must reach the same one.
struct Site {
  const char* file;
  int line;
};
int syncthreads_count(int predicate, Site site);
int syncthreads_and(int predicate, Site site);
int syncthreads_or(int predicate, Site site);
void nanosleep_yield();
[[noreturn]] void fail(cudaError_t error, const char* what);

void cp_async(void* smem, const void* gmem, unsigned bytes, unsigned src_bytes);
void cp_async_commit();
void cp_async_wait(int newest_groups_left_pending);

// Bytes a lane reads from an inactive or exited lane: NaN for floating point, -1 for integers.
inline constexpr unsigned char kPoisonByte = 0xFF;

template <size_t N>
void shfl_fn(LaneCall* const calls[32], unsigned participants) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!calls[l]) continue;
    const unsigned src = calls[l]->arg;
    if ((participants >> src) & 1u)
      std::memcpy(calls[l]->out, calls[src]->in, N);
    else
      std::memset(calls[l]->out, kPoisonByte, N);
  }
}

enum class ShflMode { idx, up, down, bfly };

// The source-lane rule of PTX shfl.sync, evaluated per lane as the hardware does.
inline unsigned shfl_source(ShflMode mode, unsigned lane, int b, int width) {
  const unsigned bval = static_cast<unsigned>(b) & 31u;
  const unsigned segmask = static_cast<unsigned>(32 - width) & 31u;
  const unsigned cval = mode == ShflMode::up ? 0u : 31u;
  const int max_lane = static_cast<int>((lane & segmask) | (cval & ~segmask));
  const unsigned min_lane = lane & segmask;
  int j = 0;
  bool in_range = false;
  switch (mode) {
    case ShflMode::up:
      j = static_cast<int>(lane) - static_cast<int>(bval);
      in_range = j >= max_lane;
      break;
    case ShflMode::down:
      j = static_cast<int>(lane + bval);
      in_range = j <= max_lane;
      break;
    case ShflMode::bfly:
      j = static_cast<int>(lane ^ bval);
      in_range = j <= max_lane;
      break;
    case ShflMode::idx:
      j = static_cast<int>(min_lane | (bval & ~segmask));
      in_range = j <= max_lane;
      break;
  }
  return in_range ? static_cast<unsigned>(j) : lane;
}

template <typename T>
T shfl(unsigned mask, T var, ShflMode mode, int b, int width) {
  // __half2 and __nv_bfloat162 are not trivially copyable by the letter (user-provided assignment)
  // but are plain bits, like every type CUDA's shuffles accept.
  static_assert(std::is_standard_layout_v<T> && std::is_trivially_destructible_v<T> && sizeof(T) <= 16,
                "shuffle of a value wider than 16 bytes or with a non-trivial destructor");
  T out;
  warp_collective(mask, &shfl_fn<sizeof(T)>, static_cast<unsigned>(mode), &var, &out, shfl_source(mode, tls.lane, b, width));
  return out;
}

// out: {votes, participants}. `kind` tells __ballot_sync, __any_sync, ... apart.
enum class VoteKind : unsigned { ballot, any, all, uni, match_all };
void vote_fn(LaneCall* const calls[32], unsigned participants);
inline void vote(unsigned mask, int predicate, unsigned out[2], VoteKind kind) {
  warp_collective(mask, &vote_fn, static_cast<unsigned>(kind), &predicate, out, 0);
}
void sync_fn(LaneCall* const calls[32], unsigned participants);

template <typename T>
void match_any_fn(LaneCall* const calls[32], unsigned) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!calls[l]) continue;
    unsigned same = 0;
    for (unsigned k = 0; k < 32; ++k)
      if (calls[k] && std::memcmp(calls[k]->in, calls[l]->in, sizeof(T)) == 0) same |= 1u << k;
    *static_cast<unsigned*>(calls[l]->out) = same;
  }
}

template <typename T>
unsigned match_any(unsigned mask, T value) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8);
  unsigned out;
  warp_collective(mask, &match_any_fn<T>, 0, &value, &out, 0);
  return out;
}

enum class ReduceOp : unsigned { add, min, max, and_, or_, xor_ };

template <typename T>
void reduce_fn(LaneCall* const calls[32], unsigned) {
  bool first = true;
  T acc{};
  // Every lane passed the same operation (warp_collective checks it).
  const auto op = static_cast<ReduceOp>([&] {
    for (unsigned l = 0; l < 32; ++l)
      if (calls[l]) return calls[l]->arg;
    return 0u;
  }());
  for (unsigned l = 0; l < 32; ++l) {
    if (!calls[l]) continue;
    const T v = *static_cast<const T*>(calls[l]->in);
    if (first) {
      acc = v;
      first = false;
      continue;
    }
    switch (op) {
      case ReduceOp::add: acc = static_cast<T>(acc + v); break;
      case ReduceOp::min: acc = v < acc ? v : acc; break;
      case ReduceOp::max: acc = v > acc ? v : acc; break;
      case ReduceOp::and_: acc = acc & v; break;
      case ReduceOp::or_: acc = acc | v; break;
      case ReduceOp::xor_: acc = acc ^ v; break;
    }
  }
  for (unsigned l = 0; l < 32; ++l)
    if (calls[l]) *static_cast<T*>(calls[l]->out) = acc;
}

template <typename T>
T warp_reduce(unsigned mask, T value, ReduceOp op) {
  T out;
  warp_collective(mask, &reduce_fn<T>, static_cast<unsigned>(op), &value, &out, static_cast<unsigned>(op));
  return out;
}

// Atomics act on the object in place, so they are exact across the worker threads of a grid. CUDA's
// atomic* functions are relaxed: they order nothing but themselves (a fence does the rest), and so
// do these, which lets the racecheck build see a flag-and-data race that lacks its fence.
inline constexpr std::memory_order kAtomicOrder = std::memory_order_relaxed;
template <typename T, typename F>
T atomic_update(T* address, F f) {
  std::atomic_ref<T> ref(*address);
  T old = ref.load(kAtomicOrder);
  while (!ref.compare_exchange_weak(old, f(old), kAtomicOrder, kAtomicOrder)) {
  }
  return old;
}

// __threadfence*: a sequentially consistent fence; in the racecheck build also a release and an
// acquire on one process-wide object, since ThreadSanitizer does not model fences (this orders more
// than a GPU fence does, so it can hide a race, never invent one).
inline void fence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(SIMT_TSAN)
  static char fence_object;
  __tsan_release(&fence_object);
  __tsan_acquire(&fence_object);
#endif
}

// fp16/bf16 fma with a single rounding: the product of two halves (or bfloat16s) is exact in
// double; the sum is rounded to odd there, which makes the final rounding to 16 bits exact.
double fma_round_to_odd(double a, double b, double c);

}  // namespace detail
}  // namespace simt

// The built-in variables are copies of the running CUDA thread's values, not references to the
// thread_local: a reference makes -fsanitize=null test the thread_local's address against null at
// every use, and g++ 12 at -O1 with AddressSanitizer miscompiles that test when it keeps the TLS
// base in a register (the `add %fs:0` that set the flags becomes a `lea`, so the `je` reads the flags
// of the previous shadow-memory check and reports "member access within null pointer" for
// threadIdx.x after a __syncthreads). A copy reads the fields at %fs:offset with no check. Caching
// the TLS base across a fiber switch is correct here: every fiber of a block runs on the OS thread
// that started the block (runtime.cpp, run_block), so the base never changes under a fiber.
#define threadIdx (static_cast<uint3>(::simt::detail::tls.thread_idx))
#define blockIdx (static_cast<uint3>(::simt::detail::tls.block_idx))
#define blockDim (static_cast<dim3>(::simt::detail::tls.block_dim))
#define gridDim (static_cast<dim3>(::simt::detail::tls.grid_dim))

inline constexpr int warpSize = 32;

#define SIMT_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::simt::detail::tls.dynamic_smem)

// ---- synchronisation ---------------------------------------------------------------------------

// The defaulted arguments are the caller's file and line (kernels call these with the CUDA
// signatures): threads of a block that reach different __syncthreads calls are reported.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  (void)::simt::detail::syncthreads_count(0, {file, line});
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::syncthreads_count(predicate, {file, line});
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::syncthreads_and(predicate, {file, line});
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::simt::detail::syncthreads_or(predicate, {file, line});
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::simt::detail::warp_collective(mask, &::simt::detail::sync_fn, 0, nullptr, nullptr, 0);
}
inline void __threadfence() { ::simt::detail::fence(); }
inline void __threadfence_block() { ::simt::detail::fence(); }
inline void __threadfence_system() { ::simt::detail::fence(); }
// Lets a spin-wait make progress: the other threads of the block run before this one resumes. A
// block whose threads only sleep for 2 s is reported as a deadlock (docs/emulator.md §2).
inline void __nanosleep(unsigned) { ::simt::detail::nanosleep_yield(); }
[[noreturn]] inline void __trap() { ::simt::detail::fail(::cudaErrorLaunchFailure, "__trap() called"); }

// ---- warp operations ---------------------------------------------------------------------------

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return ::simt::detail::shfl(mask, var, ::simt::detail::ShflMode::idx, src_lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return ::simt::detail::shfl(mask, var, ::simt::detail::ShflMode::up, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return ::simt::detail::shfl(mask, var, ::simt::detail::ShflMode::down, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return ::simt::detail::shfl(mask, var, ::simt::detail::ShflMode::bfly, lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  unsigned out[2];
  ::simt::detail::vote(mask, predicate, out, ::simt::detail::VoteKind::ballot);
  return out[0];
}
inline int __any_sync(unsigned mask, int predicate) {
  unsigned out[2];
  ::simt::detail::vote(mask, predicate, out, ::simt::detail::VoteKind::any);
  return out[0] != 0;
}
// Lanes of the mask that exited do not vote, so "all" and "uni" are over the lanes that took part.
inline int __all_sync(unsigned mask, int predicate) {
  unsigned out[2];
  ::simt::detail::vote(mask, predicate, out, ::simt::detail::VoteKind::all);
  return out[0] == out[1];
}
inline int __uni_sync(unsigned mask, int predicate) {
  unsigned out[2];
  ::simt::detail::vote(mask, predicate, out, ::simt::detail::VoteKind::uni);
  return out[0] == 0 || out[0] == out[1];
}
// Which lanes execute together is a property of the GPU's convergence, which fibers do not model:
// the launch fails with kErrorWarpMisuse and says so (pass the mask explicitly instead).
inline unsigned __activemask() { ::simt::detail::active_mask(); }
template <typename T>
unsigned __match_any_sync(unsigned mask, T value) {
  return ::simt::detail::match_any(mask, value);
}
template <typename T>
unsigned __match_all_sync(unsigned mask, T value, int* pred) {
  const unsigned same = ::simt::detail::match_any(mask, value);
  unsigned out[2];
  ::simt::detail::vote(mask, 1, out, ::simt::detail::VoteKind::match_all);
  *pred = same == out[1];
  return *pred ? same : 0u;
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::add); }
inline int __reduce_add_sync(unsigned mask, int v) {
  return static_cast<int>(::simt::detail::warp_reduce(mask, static_cast<unsigned>(v), ::simt::detail::ReduceOp::add));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::min); }
inline int __reduce_min_sync(unsigned mask, int v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::min); }
inline unsigned __reduce_max_sync(unsigned mask, unsigned v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::max); }
inline int __reduce_max_sync(unsigned mask, int v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::max); }
inline unsigned __reduce_and_sync(unsigned mask, unsigned v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::and_); }
inline unsigned __reduce_or_sync(unsigned mask, unsigned v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::or_); }
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) { return ::simt::detail::warp_reduce(mask, v, ::simt::detail::ReduceOp::xor_); }

// ---- atomics -----------------------------------------------------------------------------------

// Exactly the overloads CUDA declares, so that a kernel that builds here also builds with nvcc.
#define SIMT_RELAXED ::simt::detail::kAtomicOrder
#define SIMT_ATOMIC_ADD_EXCH_CAS(T)                                                          \
  inline T atomicAdd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_add(v, SIMT_RELAXED); } \
  inline T atomicExch(T* a, T v) { return std::atomic_ref<T>(*a).exchange(v, SIMT_RELAXED); } \
  inline T atomicCAS(T* a, T compare, T v) {                                                 \
    std::atomic_ref<T>(*a).compare_exchange_strong(compare, v, SIMT_RELAXED);                \
    return compare;                                                                          \
  }
#define SIMT_ATOMIC_BITS(T)                                                                  \
  inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v, SIMT_RELAXED); } \
  inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v, SIMT_RELAXED); }   \
  inline T atomicXor(T* a, T v) { return std::atomic_ref<T>(*a).fetch_xor(v, SIMT_RELAXED); }
#define SIMT_ATOMIC_MIN_MAX(T)                                                               \
  inline T atomicMin(T* a, T v) { return ::simt::detail::atomic_update(a, [v](T o) { return v < o ? v : o; }); } \
  inline T atomicMax(T* a, T v) { return ::simt::detail::atomic_update(a, [v](T o) { return v > o ? v : o; }); }
SIMT_ATOMIC_ADD_EXCH_CAS(int)
SIMT_ATOMIC_ADD_EXCH_CAS(unsigned)
SIMT_ATOMIC_ADD_EXCH_CAS(unsigned long long)
SIMT_ATOMIC_BITS(int)
SIMT_ATOMIC_BITS(unsigned)
SIMT_ATOMIC_BITS(unsigned long long)
SIMT_ATOMIC_MIN_MAX(int)
SIMT_ATOMIC_MIN_MAX(unsigned)
SIMT_ATOMIC_MIN_MAX(long long)
SIMT_ATOMIC_MIN_MAX(unsigned long long)
#undef SIMT_ATOMIC_ADD_EXCH_CAS
#undef SIMT_ATOMIC_BITS
#undef SIMT_ATOMIC_MIN_MAX

inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v, SIMT_RELAXED); }
inline unsigned atomicSub(unsigned* a, unsigned v) { return std::atomic_ref<unsigned>(*a).fetch_sub(v, SIMT_RELAXED); }
inline unsigned short atomicCAS(unsigned short* a, unsigned short compare, unsigned short v) {
  std::atomic_ref<unsigned short>(*a).compare_exchange_strong(compare, v, SIMT_RELAXED);
  return compare;
}
inline float atomicAdd(float* a, float v) { return ::simt::detail::atomic_update(a, [v](float o) { return o + v; }); }
inline double atomicAdd(double* a, double v) { return ::simt::detail::atomic_update(a, [v](double o) { return o + v; }); }
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v, SIMT_RELAXED); }
#undef SIMT_RELAXED
inline unsigned atomicInc(unsigned* a, unsigned limit) {
  return ::simt::detail::atomic_update(a, [limit](unsigned o) { return o >= limit ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* a, unsigned limit) {
  return ::simt::detail::atomic_update(a, [limit](unsigned o) { return (o == 0 || o > limit) ? limit : o - 1; });
}
inline __half atomicAdd(__half* a, __half v) {
  auto* bits = reinterpret_cast<unsigned short*>(a);
  const unsigned short old = ::simt::detail::atomic_update(bits, [v](unsigned short o) {
    return __half_as_ushort(__hadd(__ushort_as_half(o), v));
  });
  return __ushort_as_half(old);
}
inline __half2 atomicAdd(__half2* a, __half2 v) {
  // Two independent 16-bit additions in one 32-bit compare-and-swap, as the hardware's atomic is.
  auto* bits = reinterpret_cast<unsigned*>(a);
  auto add = [v](unsigned o) {
    const __half lo = __hadd(__ushort_as_half(static_cast<unsigned short>(o)), __low2half(v));
    const __half hi = __hadd(__ushort_as_half(static_cast<unsigned short>(o >> 16)), __high2half(v));
    return static_cast<unsigned>(__half_as_ushort(lo)) | (static_cast<unsigned>(__half_as_ushort(hi)) << 16);
  };
  const unsigned old = ::simt::detail::atomic_update(bits, add);
  return __halves2half2(__ushort_as_half(static_cast<unsigned short>(old)),
                        __ushort_as_half(static_cast<unsigned short>(old >> 16)));
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  auto* bits = reinterpret_cast<unsigned short*>(a);
  const unsigned short old = ::simt::detail::atomic_update(bits, [v](unsigned short o) {
    return __bfloat16_as_ushort(__float2bfloat16(__bfloat162float(__ushort_as_bfloat16(o)) + __bfloat162float(v)));
  });
  return __ushort_as_bfloat16(old);
}

// Scope variants: one emulated device, so every scope is the same.
template <typename T, typename V>
auto atomicAdd_block(T* a, V v) { return atomicAdd(a, v); }
template <typename T, typename V>
auto atomicAdd_system(T* a, V v) { return atomicAdd(a, v); }
template <typename T, typename V>
auto atomicMax_block(T* a, V v) { return atomicMax(a, v); }
template <typename T, typename V>
auto atomicMin_block(T* a, V v) { return atomicMin(a, v); }
template <typename T, typename V>
auto atomicExch_block(T* a, V v) { return atomicExch(a, v); }
template <typename T, typename V>
auto atomicCAS_block(T* a, V c, V v) { return atomicCAS(a, c, v); }

// ---- integer and bit intrinsics ----------------------------------------------------------------

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long bytes = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((bytes >> (((s >> (4 * i)) & 7u) * 8)) & 0xFFu) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift & 31u)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift & 31u));
}
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return (a << 8 >> 8) * (b << 8 >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }
template <typename T>
T __ldg(const T* p) { return *p; }
inline long long clock64() {
  return static_cast<long long>(__builtin_ia32_rdtsc());
}

// ---- reinterpretation and conversions ----------------------------------------------------------

inline int __float_as_int(float x) { int r; std::memcpy(&r, &x, 4); return r; }
inline unsigned __float_as_uint(float x) { unsigned r; std::memcpy(&r, &x, 4); return r; }
inline float __int_as_float(int x) { float r; std::memcpy(&r, &x, 4); return r; }
inline float __uint_as_float(unsigned x) { float r; std::memcpy(&r, &x, 4); return r; }
inline long long __double_as_longlong(double x) { long long r; std::memcpy(&r, &x, 8); return r; }
inline double __longlong_as_double(long long x) { double r; std::memcpy(&r, &x, 8); return r; }
// The default rounding mode of the host is round-to-nearest-even, which is what _rn asks for.
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(std::nearbyint(x)); }
inline unsigned __float2uint_rz(float x) { return static_cast<unsigned>(x); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline long long __float2ll_rn(float x) { return static_cast<long long>(std::nearbyint(x)); }
inline long long __float2ll_rz(float x) { return static_cast<long long>(x); }

// ---- float: IEEE-exact and fast-math intrinsics ------------------------------------------------
// The _rn forms are exact on the host. The approximate ones (__expf, __sinf, rsqrtf, ...) use the
// host's correctly rounded or libm result; the GPU's approximations differ by a few ulp, so tests
// compare them with a tolerance (docs/emulator.md lists them).

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float exp10f(float x) { return std::pow(10.0f, x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }

// ---- fp16 and bf16 operations the toolkit defines for the device only --------------------------

inline __half __hfma(__half a, __half b, __half c) {
  return __double2half(::simt::detail::fma_round_to_odd(__half2float(a), __half2float(b), __half2float(c)));
}
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(__hfma(__low2half(a), __low2half(b), __low2half(c)),
                        __hfma(__high2half(a), __high2half(b), __high2half(c)));
}
inline __half __hfma_relu(__half a, __half b, __half c) {
  const __half r = __hfma(a, b, c);
  return __hisnan(r) ? r : (__half2float(r) < 0.0f ? __float2half(0.0f) : r);
}
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __double2bfloat16(
      ::simt::detail::fma_round_to_odd(__bfloat162float(a), __bfloat162float(b), __bfloat162float(c)));
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return __halves2bfloat162(__hfma(__low2bfloat16(a), __low2bfloat16(b), __low2bfloat16(c)),
                            __hfma(__high2bfloat16(a), __high2bfloat16(b), __high2bfloat16(c)));
}

// Unary fp16/bf16 math: computed in float and rounded once to 16 bits, as the device's float-based
// implementations do up to their approximation error. The pair forms are h2exp, h2log, ...
#define SIMT_HALF_UNARY2(scalar, pair, expr)                                                 \
  inline __half scalar(__half h) {                                                           \
    const float x = __half2float(h);                                                         \
    return __float2half(expr);                                                               \
  }                                                                                          \
  inline __half2 pair(__half2 h) { return __halves2half2(scalar(__low2half(h)), scalar(__high2half(h))); } \
  inline __nv_bfloat16 scalar(__nv_bfloat16 h) {                                             \
    const float x = __bfloat162float(h);                                                     \
    return __float2bfloat16(expr);                                                           \
  }                                                                                          \
  inline __nv_bfloat162 pair(__nv_bfloat162 h) {                                             \
    return __halves2bfloat162(scalar(__low2bfloat16(h)), scalar(__high2bfloat16(h)));        \
  }
SIMT_HALF_UNARY2(hexp, h2exp, std::exp(x))
SIMT_HALF_UNARY2(hexp2, h2exp2, std::exp2(x))
SIMT_HALF_UNARY2(hexp10, h2exp10, std::pow(10.0f, x))
SIMT_HALF_UNARY2(hlog, h2log, std::log(x))
SIMT_HALF_UNARY2(hlog2, h2log2, std::log2(x))
SIMT_HALF_UNARY2(hlog10, h2log10, std::log10(x))
SIMT_HALF_UNARY2(hsqrt, h2sqrt, std::sqrt(x))
SIMT_HALF_UNARY2(hrsqrt, h2rsqrt, 1.0f / std::sqrt(x))
SIMT_HALF_UNARY2(hrcp, h2rcp, 1.0f / x)
SIMT_HALF_UNARY2(hsin, h2sin, std::sin(x))
SIMT_HALF_UNARY2(hcos, h2cos, std::cos(x))
SIMT_HALF_UNARY2(hceil, h2ceil, std::ceil(x))
SIMT_HALF_UNARY2(hfloor, h2floor, std::floor(x))
SIMT_HALF_UNARY2(htrunc, h2trunc, std::trunc(x))
SIMT_HALF_UNARY2(hrint, h2rint, std::nearbyint(x))
#undef SIMT_HALF_UNARY2

inline int __half2int_rn(__half h) { return __float2int_rn(__half2float(h)); }
inline int __half2int_rd(__half h) { return __float2int_rd(__half2float(h)); }
inline int __half2int_ru(__half h) { return __float2int_ru(__half2float(h)); }
inline int __bfloat162int_rn(__nv_bfloat16 h) { return __float2int_rn(__bfloat162float(h)); }

// ---- launch ------------------------------------------------------------------------------------

namespace simt {

template <typename... KernelArgs, typename... Args>
cudaError_t launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                   cudaStream_t, Args&&... args) {
  static_assert(sizeof...(KernelArgs) == sizeof...(Args), "simt::launch: wrong number of kernel arguments");
  // Converted once, as the CUDA runtime copies the parameters into the launch; every CUDA thread
  // then receives its own copy through the by-value call.
  struct Pack {
    void (*kernel)(KernelArgs...);
    std::tuple<std::decay_t<KernelArgs>...> args;
  } pack{kernel, std::tuple<std::decay_t<KernelArgs>...>(std::forward<Args>(args)...)};
  const detail::LaunchSpec spec{
      reinterpret_cast<const void*>(kernel),
      [](void* p) {
        auto& pk = *static_cast<Pack*>(p);
        std::apply(pk.kernel, pk.args);
      },
      &pack, grid, block, dynamic_smem_bytes};
  return detail::launch(spec);
}

template <typename... KernelArgs>
cudaError_t set_max_dynamic_shared(void (*kernel)(KernelArgs...), int bytes) {
  return detail::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), bytes);
}

}  // namespace simt
