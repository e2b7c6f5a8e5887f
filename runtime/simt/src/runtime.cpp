// simt/src/runtime.cpp: the CPU execution of a CUDA grid for mra_simt. Blocks run one at a time
// per worker OS thread; the threads of a block are fibers resumed in a ring, in the order the
// schedule dictates, until they block on a barrier or a warp collective, or exit. Also: the checks
// of the kernel contract (divergent barriers, mismatched collectives, spin-waits without progress,
// shared memory limits and guards), the CUDA runtime's error state (sticky faults, last error), and
// the ThreadSanitizer fibers of the racecheck build. Built by runtime/simt/CMakeLists.txt; exercised
// by tests/emulator and tests/racecheck.
#include "simt/simt.h"

#include "context.h"
#include "symbolize.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMT_ASAN 1
#endif
#endif

#if defined(SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// The racecheck build compiles this file without ThreadSanitizer's instrumentation (the scheduler's
// own bookkeeping is shared by fibers that are deliberately not ordered) and defines
// SIMT_RACECHECK, which turns on the fiber and happens-before annotations below.
#if defined(SIMT_RACECHECK)
#include <sanitizer/tsan_interface.h>
// Exported by both runtimes, not declared in their headers.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
#endif

// __tls_get_addr's argument on x86-64 and AArch64 glibc.
extern "C" void* __tls_get_addr(void* index);

namespace simt {
namespace detail {

constinit thread_local ThreadState tls{};

}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;

// A block whose threads only sleep in __nanosleep for this long made no progress: a deadlock.
constexpr auto kSpinTimeout = std::chrono::seconds(2);

// ---- settings ----------------------------------------------------------------------------------

struct Settings {
  std::mutex mutex;
  Schedule schedule = Schedule::ascending;
  uint64_t seed = 0;
  unsigned workers = 1;
  size_t stack_size = 0;
  std::map<const void*, size_t> max_dynamic_shared;
};

Settings& settings() {
  static Settings s;
  return s;
}

size_t default_stack_size() {
#if defined(SIMT_ASAN)
  return 256 * 1024;
#else
  return 64 * 1024;
#endif
}

size_t page_size() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// The device's sticky error: a fault inside a kernel leaves the emulated device unusable, as it
// leaves a CUDA context, until simt::device_reset().
struct DeviceState {
  std::mutex mutex;
  std::atomic<bool> faulted{false};
  cudaError_t error = cudaSuccess;
  std::string message;
};

DeviceState& device() {
  static DeviceState d;
  return d;
}

bool is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorLaunchTimeout:
    case cudaErrorIllegalInstruction:
    case cudaErrorLaunchFailure:
    case cudaErrorMisalignedAddress:
    case cudaErrorIllegalAddress:
      return true;
    default:
      return false;
  }
}

// Appends every piece: GCC 12 reports a false -Wrestrict on "literal" + std::string, so messages
// are built with this instead.
template <typename... Pieces>
std::string cat(const Pieces&... pieces) {
  std::string s;
  ((s += pieces), ...);
  return s;
}

// snprintf rather than string concatenation: GCC 12 reports a false -Wrestrict on the latter.
std::string dim_string(unsigned x, unsigned y, unsigned z) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "(%u,%u,%u)", x, y, z);
  return buf;
}

std::string site_string(const detail::Site& s) {
  const char* slash = std::strrchr(s.file, '/');
  return cat(slash ? slash + 1 : s.file, ":", std::to_string(s.line));
}

}  // namespace

namespace detail {

enum class State : uint8_t { ready, running, barrier, warp, exited, failed };

struct Stack {
  void* mapping = nullptr;
  size_t mapped = 0;
  char* lo = nullptr;
  size_t size = 0;
};

struct Copy {
  void* dst;
  const void* src;
  unsigned bytes;
  unsigned src_bytes;
};

// A pending warp operation: the lanes of `mask` that have arrived, and their operands.
struct WarpGroup {
  unsigned mask = 0;
  unsigned arrived = 0;
  WarpFn fn = nullptr;
  unsigned op = 0;
  unsigned generation = 0;  // completions of this slot; its parity picks the happens-before object
  char sync_object[2] = {};
  LaneCall calls[32];
};

struct Warp {
  unsigned present = 0;
  unsigned live = 0;
  // Bit k: groups[k] is pending. A group is 800 bytes, so the searches go through this word rather
  // than touching every group.
  unsigned used = 0;
  WarpGroup groups[32];
};

struct Fiber {
  Context ctx;
  Stack stack;
  Block* block = nullptr;
  uint3 tid{0, 0, 0};
  unsigned flat = 0;
  State state = State::ready;
  int bar_sum = 0;
  int bar_total = 0;
  std::vector<Copy> copies;
  std::vector<size_t> group_ends;
#if defined(SIMT_RACECHECK)
  void* tsan = nullptr;
#endif
};

// Where a fault caught by the signal handler happened; turned into the block's message afterwards
// (the handler itself does not allocate).
enum class Fault : uint8_t { none, shared_overrun, shared_underrun, stack_overflow };

// One resident block: what a worker thread needs to run the blocks of a grid one after another.
struct Block {
  Context sched;
#if defined(SIMT_ASAN)
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif
#if defined(SIMT_RACECHECK)
  void* sched_tsan = nullptr;
#endif
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned nwarps = 0;
  unsigned n = 0;
  std::vector<unsigned> order;
  size_t cursor = 0;
  unsigned live = 0;
  unsigned bar_arrived = 0;
  int bar_sum = 0;
  Site bar_site{"", 0};
  unsigned bar_generation = 0;
  char bar_object[2] = {};
  // Rounds in which no thread arrived anywhere or exited (only __nanosleep), and since when.
  bool progress = false;
  uint64_t idle_rounds = 0;
  Clock::time_point idle_since{};
  const LaunchSpec* spec = nullptr;
  uint3 block_idx{0, 0, 0};
  uint64_t rng = 0;
  cudaError_t error = cudaSuccess;
  std::string message;
  Fault fault = Fault::none;
  unsigned fault_thread = 0;
  uintptr_t fault_address = 0;

  ~Block() {
    for (auto& f : fibers)
      if (f.stack.mapping) munmap(f.stack.mapping, f.stack.mapped);
  }
};

// Everything an OS thread keeps for running blocks, on the heap (tls.worker points to it).
struct Worker {
  Block block;
  // Dynamic shared memory between two inaccessible pages, its end against the upper one.
  void* smem_mapping = nullptr;
  size_t smem_mapped = 0;
  size_t smem_capacity = 0;
  unsigned char* smem_lo = nullptr;  // the data pages
  unsigned char* smem = nullptr;     // what the kernel gets
  size_t smem_bytes = 0;
  void* altstack = nullptr;
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
  uint64_t launches = 0;  // launch_count()

  ~Worker() {
    if (smem_mapping) munmap(smem_mapping, smem_mapped);
    if (altstack) {
      stack_t none{};
      none.ss_flags = SS_DISABLE;
      sigaltstack(&none, nullptr);
      munmap(altstack, kAltStackBytes);
    }
  }
  static constexpr size_t kAltStackBytes = 64 * 1024;
};

namespace {

// Deletes this thread's Worker when the thread ends. In the racecheck build the fibers' reads of the
// emulator's own memory (operands of warp collectives) are not ordered before this thread: the free
// is hidden from ThreadSanitizer, which would otherwise report it as a race.
struct WorkerOwner {
  ~WorkerOwner() {
#if defined(SIMT_RACECHECK)
    __tsan_ignore_thread_begin();
#endif
    delete tls.worker;
    tls.worker = nullptr;
#if defined(SIMT_RACECHECK)
    __tsan_ignore_thread_end();
#endif
  }
};

Worker& this_worker() {
  if (!tls.worker) {
    static thread_local WorkerOwner owner;
    (void)owner;
    tls.worker = new Worker;
#if defined(SIMT_ASAN)
    Block& b = tls.worker->block;
    pthread_attr_t attr;
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &addr, &size);
      pthread_attr_destroy(&attr);
    }
    b.sched_stack_bottom = addr;
    b.sched_stack_size = size;
#endif
  }
  return *tls.worker;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// ---- switching ---------------------------------------------------------------------------------

// Every switch is announced to the sanitizers in this frame, right before the stack changes:
// AddressSanitizer needs the target stack, ThreadSanitizer the target fiber (with no_sync, so that
// only the CUDA synchronisation below orders the fibers' accesses).
void switch_to_fiber(Context& from, Fiber& to, bool from_exits) {
#if defined(SIMT_RACECHECK)
  __tsan_switch_to_fiber(to.tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(SIMT_ASAN)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(from_exits ? nullptr : &fake_stack, to.stack.lo, to.stack.size);
  context_switch(from, to.ctx);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)from_exits;
  context_switch(from, to.ctx);
#endif
}

void switch_to_scheduler(Block& b, Context& from, bool from_exits) {
#if defined(SIMT_RACECHECK)
  __tsan_switch_to_fiber(b.sched_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(SIMT_ASAN)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(from_exits ? nullptr : &fake_stack, b.sched_stack_bottom, b.sched_stack_size);
  context_switch(from, b.sched);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)from_exits;
  context_switch(from, b.sched);
#endif
}

void enter(Fiber& f) {
  f.state = State::running;
  tls.thread_idx = f.tid;
  tls.lane = f.flat & 31u;
  tls.fiber = &f;
}

Fiber* next_ready(Block& b) {
  while (b.cursor < b.order.size()) {
    Fiber& f = b.fibers[b.order[b.cursor++]];
    if (f.state == State::ready) return &f;
  }
  return nullptr;
}

// Leaves fiber `f` (whose state says why) for the next runnable fiber of this round, or for the
// scheduler when the round is over. Returns when `f` is resumed.
void suspend(Block& b, Fiber& f, bool exits = false) {
  if (Fiber* n = next_ready(b)) {
    enter(*n);
    switch_to_fiber(f.ctx, *n, exits);
  } else {
    tls.fiber = nullptr;
    switch_to_scheduler(b, f.ctx, exits);
  }
}

// ---- messages ----------------------------------------------------------------------------------

std::string thread_name(const Block& b, unsigned flat) {
  const dim3 d = b.spec->block;
  return dim_string(flat % d.x, (flat / d.x) % d.y, flat / (d.x * d.y));
}

// "(0,0,0)-(15,0,0), (32,0,0)": runs of consecutive linear thread ids.
std::string thread_list(const Block& b, const std::vector<unsigned>& flats) {
  std::string s;
  for (size_t i = 0; i < flats.size();) {
    size_t j = i;
    while (j + 1 < flats.size() && flats[j + 1] == flats[j] + 1) ++j;
    if (!s.empty()) s += ", ";
    s += thread_name(b, flats[i]);
    if (j > i) s += cat("-", thread_name(b, flats[j]));
    i = j + 1;
  }
  return s;
}

std::vector<unsigned> threads_in(const Block& b, State state) {
  std::vector<unsigned> out;
  for (unsigned i = 0; i < b.n; ++i)
    if (b.fibers[i].state == state) out.push_back(i);
  return out;
}

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string where(const Block& b) {
  return cat("kernel '", symbolize(b.spec->kernel), "' block ", dim_string(b.block_idx.x, b.block_idx.y, b.block_idx.z));
}

// ---- happens-before edges of the racecheck build --------------------------------------------

// Every fiber releases this at its end and the host acquires it when the launch returns, so the
// host sees the kernel's writes; workers never acquire it between blocks, so blocks of a grid stay
// unordered, as on a GPU.
char g_launch_object;
#if defined(SIMT_RACECHECK)
inline void hb_release(void* o) { __tsan_release(o); }
inline void hb_acquire(void* o) { __tsan_acquire(o); }
#else
inline void hb_release(void*) {}
inline void hb_acquire(void*) {}
#endif

// Records the first failure of the block (the message names kernel, block and thread).
void record_failure(Block& b, const Fiber& f, cudaError_t error, const std::string& what) {
  if (b.error != cudaSuccess) return;
  b.error = error;
  b.message = cat(where(b), " thread ", thread_name(b, f.flat), ": ", what);
}

// Leaves a fiber that failed for good: its frames are abandoned, as a faulted GPU thread's are.
[[noreturn]] void abandon(Block& b, Fiber& f) {
  f.state = State::failed;
  tls.fiber = nullptr;
  hb_release(&g_launch_object);
  switch_to_scheduler(b, f.ctx, true);
  __builtin_unreachable();
}


void complete_group(Block& b, Warp& w, WarpGroup& g) {
  LaneCall* calls[32] = {};
  for (unsigned l = 0; l < 32; ++l)
    if ((g.arrived >> l) & 1u) calls[l] = &g.calls[l];
  g.fn(calls, g.arrived);
  const unsigned base = static_cast<unsigned>(&w - b.warps.data()) * 32u;
  for (unsigned l = 0; l < 32; ++l)
    if ((g.arrived >> l) & 1u) b.fibers[base + l].state = State::ready;
  w.used &= ~(1u << static_cast<unsigned>(&g - w.groups));
  ++g.generation;
}

void release_barrier(Block& b) {
  for (unsigned i = 0; i < b.n; ++i) {
    Fiber& f = b.fibers[i];
    if (f.state == State::barrier) {
      f.state = State::ready;
      f.bar_sum = b.bar_sum;
      f.bar_total = static_cast<int>(b.bar_arrived);
    }
  }
  b.bar_arrived = 0;
  b.bar_sum = 0;
  ++b.bar_generation;
}

void flush_copies(Fiber& f, size_t count) {
  for (size_t i = 0; i < count; ++i) {
    const Copy& c = f.copies[i];
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    if (c.src_bytes < c.bytes) std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
  f.copies.erase(f.copies.begin(), f.copies.begin() + static_cast<ptrdiff_t>(count));
}

void thread_exit(Block& b, Fiber& f) {
  flush_copies(f, f.copies.size());
  f.group_ends.clear();
  b.progress = true;
  if (b.bar_arrived > 0)
    record_failure(b, f, kErrorBarrierMisuse,
                   cat("exited while threads ", thread_list(b, threads_in(b, State::barrier)), " wait at __syncthreads (",
                       site_string(b.bar_site), "): every thread of a block must reach each __syncthreads"));
  --b.live;
  Warp& w = b.warps[f.flat / 32];
  w.live &= ~(1u << (f.flat & 31u));
  for (unsigned used = w.used; used; used &= used - 1) {
    WarpGroup& g = w.groups[std::countr_zero(used)];
    if (g.arrived == (g.mask & w.live)) complete_group(b, w, g);
  }
}

void fiber_main(void* arg) {
  Fiber& f = *static_cast<Fiber*>(arg);
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  Block& b = *f.block;
  b.spec->entry(b.spec->pack);
  hb_release(&g_launch_object);
  thread_exit(b, f);
  if (b.error != cudaSuccess) abandon(b, f);
  f.state = State::exited;
  suspend(b, f, true);
}

std::string deadlock_message(const Block& b) {
  std::string m = cat("deadlock in ", where(b), ":");
  std::vector<unsigned> at_barrier = threads_in(b, State::barrier);
  if (!at_barrier.empty())
    m += cat(" threads ", thread_list(b, at_barrier), " wait at __syncthreads (", std::to_string(b.bar_arrived), " of ",
             std::to_string(b.live), " live threads arrived) at ", site_string(b.bar_site), ";");
  for (size_t wi = 0; wi < b.nwarps; ++wi) {
    const Warp& w = b.warps[wi];
    for (unsigned used = w.used; used; used &= used - 1) {
      const WarpGroup& g = w.groups[std::countr_zero(used)];
      std::vector<unsigned> waiting, missing;
      for (unsigned l = 0; l < 32; ++l) {
        if ((g.arrived >> l) & 1u) waiting.push_back(static_cast<unsigned>(wi) * 32 + l);
        if (((g.mask & w.live & ~g.arrived) >> l) & 1u) missing.push_back(static_cast<unsigned>(wi) * 32 + l);
      }
      m += cat(" warp ", std::to_string(wi), ": threads ", thread_list(b, waiting), " wait in a warp operation with mask ",
               hex(g.mask), " for threads ", thread_list(b, missing), ", which never arrive;");
    }
  }
  const std::vector<unsigned> sleeping = threads_in(b, State::ready);
  if (!sleeping.empty())
    m += cat(" threads ", thread_list(b, sleeping), " spin in __nanosleep without progress for ",
             std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kSpinTimeout).count()), " s;");
  m.pop_back();
  return m;
}

std::string fault_message(const Block& b) {
  const std::string who = cat(where(b), " thread ", thread_name(b, b.fault_thread), ": ");
  char at[64];
  std::snprintf(at, sizeof at, "%#lx", static_cast<unsigned long>(b.fault_address));
  switch (b.fault) {
    case Fault::shared_overrun:
      return cat(who, "access past the end of the ", std::to_string(b.spec->dynamic_smem_bytes),
                 " bytes of dynamic shared memory (address ", at, ")");
    case Fault::shared_underrun:
      return cat(who, "access before the start of dynamic shared memory (address ", at, ")");
    case Fault::stack_overflow:
      return cat(who, "stack overflow (address ", at, "): raise simt::set_stack_size");
    case Fault::none: break;
  }
  return who;
}

// ---- shared memory ----------------------------------------------------------------------------

// The static __shared__ variables of the program (thread-local symbols that carry the "simt_shared"
// tag), found once, each with the kernel whose body declares it, if any. A kernel's own variables
// can be reached by that kernel's blocks only (a kernel cannot call another); every other variable
// (in a device function, or in a lambda) may be reached by any kernel.
inline constexpr size_t kNoKernel = SIZE_MAX;

struct SharedVariable {
  TlsSymbol symbol;
  size_t index;  // in tls_symbols(): adjacent indices have no other thread-local symbol between them
  size_t owner;  // in SharedCatalog::kernels, or kNoKernel
};

struct SharedCatalog {
  std::vector<std::string> kernels;  // "_ZZ<kernel>E", the start of its local statics' names; sorted
  std::vector<SharedVariable> variables;
};

bool is_shared_symbol(const std::string& name) { return name.find("B11simt_shared") != std::string::npos; }

// The start of the symbol names of a function's local statics: _ZZ<encoding>E.
std::string local_prefix(const std::string& function) {
  return function.compare(0, 2, "_Z") == 0 ? cat("_ZZ", function.substr(2), "E")
                                            : cat("_ZZ", std::to_string(function.size()), function, "E");
}

constexpr std::string_view kKernelTag = "[abi:simt_kernel]";

// In a demangled name, the kernel whose tag is at `at`, spelled out in full: its qualified name, tag,
// template arguments and parameters ("ns::k[abi:simt_kernel]<int>(float*)"). Empty when the text
// around the tag does not have that shape.
std::string_view kernel_signature(std::string_view d, size_t at) {
  size_t begin = at;
  while (begin > 0 && (std::isalnum(static_cast<unsigned char>(d[begin - 1])) || d[begin - 1] == '_' || d[begin - 1] == ':'))
    --begin;
  // The index just past the bracket that closes the one at i, or npos.
  auto close = [d](size_t i, char open, char shut) {
    int depth = 0;
    for (; i < d.size(); ++i) {
      if (d[i] == open) ++depth;
      if (d[i] == shut && --depth == 0) return i + 1;
    }
    return std::string_view::npos;
  };
  size_t end = at + kKernelTag.size();
  if (end < d.size() && d[end] == '<') end = close(end, '<', '>');
  if (end >= d.size() || d[end] != '(') return {};
  end = close(end, '(', ')');
  if (end == std::string_view::npos || begin == at) return {};
  return d.substr(begin, end - begin);
}

const SharedCatalog& shared_catalog() {
  static const SharedCatalog catalog = [] {
    SharedCatalog c;
    for (const std::string& k : kernel_symbols()) c.kernels.push_back(local_prefix(k));
    std::sort(c.kernels.begin(), c.kernels.end());
    // Each kernel's full signature, which a demangled name shows before "::" when it names something
    // local to the kernel (a lambda of its body, or a function instantiated with one).
    std::map<std::string, size_t> signatures;
    for (size_t k = 0; k < c.kernels.size(); ++k) {
      const std::string& prefix = c.kernels[k];
      const std::string d = demangle(cat("_Z", prefix.substr(3, prefix.size() - 4)));
      const std::string_view signature = kernel_signature(d, d.find(kKernelTag));
      if (!signature.empty()) signatures.emplace(signature, k);
    }
    const std::vector<TlsSymbol> all = tls_symbols();
    for (size_t i = 0; i < all.size(); ++i) {
      if (!is_shared_symbol(all[i].name) || all[i].size == 0) continue;
      // Declared in a kernel's body: the owner's encoding ends at one of the name's 'E's, the first
      // that closes a kernel's prefix.
      size_t owner = kNoKernel;
      const std::string& name = all[i].name;
      for (size_t e = name.find('E'); e != std::string::npos && owner == kNoKernel; e = name.find('E', e + 1)) {
        const auto it = std::lower_bound(c.kernels.begin(), c.kernels.end(), std::string_view(name).substr(0, e + 1));
        if (it != c.kernels.end() && *it == std::string_view(name).substr(0, e + 1))
          owner = static_cast<size_t>(it - c.kernels.begin());
      }
      // Otherwise, in a function whose name involves something local to one kernel (a device function
      // instantiated with a lambda of the kernel's body): only that kernel's code can name it, so only
      // its blocks can reach it. Two kernels named so, or none: any kernel may reach it.
      if (owner == kNoKernel && name.find("simt_kernel") != std::string::npos) {
        const std::string d = demangle(name);
        bool ambiguous = false;
        for (size_t at = d.find(kKernelTag); at != std::string::npos && !ambiguous; at = d.find(kKernelTag, at + 1)) {
          const std::string_view signature = kernel_signature(d, at);
          if (signature.empty()) continue;
          const size_t after = static_cast<size_t>(signature.data() - d.data()) + signature.size();
          if (d.compare(after, 2, "::") != 0) continue;
          const auto it = signatures.find(std::string(signature));
          if (it == signatures.end()) continue;
          if (owner != kNoKernel && owner != it->second) ambiguous = true;
          owner = it->second;
        }
        if (ambiguous) owner = kNoKernel;
      }
      c.variables.push_back({all[i], i, owner});
    }
    return c;
  }();
  return catalog;
}

// What a kernel's blocks count against the limits, and poison at their start: the runs of adjacent
// static __shared__ variables it can reach. Poisoning every variable of the program instead costs a
// memset of all kernels' shared memory per block (megabytes in a binary with many configurations).
struct SharedRange {
  size_t module;
  size_t offset;
  size_t size;
};

struct KernelShared {
  size_t static_bytes = 0;  // declared in the kernel's own body
  std::vector<SharedRange> poison;
};

KernelShared find_kernel_shared(const void* kernel) {
  KernelShared k;
  const std::string name = mangled_name(kernel);
  const std::string prefix = name.empty() ? std::string() : local_prefix(name);
  const SharedCatalog& catalog = shared_catalog();
  const auto found = std::lower_bound(catalog.kernels.begin(), catalog.kernels.end(), prefix);
  const size_t index = found != catalog.kernels.end() && *found == prefix ? static_cast<size_t>(found - catalog.kernels.begin()) : kNoKernel;
  const SharedVariable* previous = nullptr;
  for (const SharedVariable& v : catalog.variables) {
    const bool own = !prefix.empty() && v.symbol.name.compare(0, prefix.size(), prefix) == 0;
    if (own) k.static_bytes += v.symbol.size;
    if (!own && v.owner != kNoKernel && v.owner != index) continue;
    const TlsSymbol& t = v.symbol;
    // Extend the previous run when nothing but padding separates it from this variable.
    if (previous && previous->index + 1 == v.index && k.poison.back().module == t.module &&
        k.poison.back().offset + k.poison.back().size <= t.offset && t.offset - (k.poison.back().offset + k.poison.back().size) < 16)
      k.poison.back().size = t.offset + t.size - k.poison.back().offset;
    else
      k.poison.push_back({t.module, t.offset, t.size});
    previous = &v;
  }
  return k;
}

// Read from the symbol tables once per kernel; entries are never removed, so the reference stays valid.
const KernelShared& kernel_shared(const void* kernel) {
  static std::mutex mutex;
  static std::map<const void*, KernelShared> known;
  {
    std::lock_guard lock(mutex);
    const auto it = known.find(kernel);
    if (it != known.end()) return it->second;
  }
  KernelShared k = find_kernel_shared(kernel);
  std::lock_guard lock(mutex);
  return known.try_emplace(kernel, std::move(k)).first->second;
}

size_t static_shared_bytes(const void* kernel) { return kernel_shared(kernel).static_bytes; }

using PoisonList = std::vector<std::pair<unsigned char*, size_t>>;

// This OS thread's instances of the ranges.
PoisonList thread_instances(const std::vector<SharedRange>& ranges) {
  PoisonList out;
  out.reserve(ranges.size());
  for (const SharedRange& r : ranges) {
    size_t index[2] = {r.module, r.offset};
    out.emplace_back(static_cast<unsigned char*>(__tls_get_addr(index)), r.size);
  }
  return out;
}

// Dynamic shared memory of `bytes` for the next block, poisoned. AddressSanitizer builds use an
// exactly sized heap block (ASan names the overflow); the others a mapping whose end touches an
// inaccessible page, so the first byte past the (16-byte rounded) size faults and the signal
// handler fails the launch.
unsigned char* acquire_dynamic_smem(Worker& w, size_t bytes) {
#if defined(SIMT_ASAN)
  w.smem = static_cast<unsigned char*>(std::malloc(bytes ? bytes : 1));
#else
  const size_t page = page_size();
  const size_t rounded = (bytes + 15) / 16 * 16;
  if (!w.smem_mapping || rounded > w.smem_capacity) {
    if (w.smem_mapping) munmap(w.smem_mapping, w.smem_mapped);
    w.smem_mapping = nullptr;
    const size_t data = std::max(page, (rounded + page - 1) / page * page);
    void* m = mmap(nullptr, data + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    if (mprotect(static_cast<char*>(m) + page, data, PROT_READ | PROT_WRITE) != 0) {
      munmap(m, data + 2 * page);
      return nullptr;
    }
    w.smem_mapping = m;
    w.smem_mapped = data + 2 * page;
    w.smem_capacity = data;
    w.smem_lo = static_cast<unsigned char*>(m) + page;
  }
  w.smem = w.smem_lo + w.smem_capacity - rounded;
#endif
  w.smem_bytes = bytes;
  if (w.smem) {
    std::memset(w.smem, kPoisonByte, bytes);
  }
  return w.smem;
}

void release_dynamic_smem(Worker& w) {
#if defined(SIMT_ASAN)
  std::free(w.smem);
#endif
  w.smem = nullptr;
}

// ---- faults ------------------------------------------------------------------------------------

#if !defined(SIMT_ASAN) && !defined(SIMT_RACECHECK)
#define SIMT_FAULT_HANDLER 1
struct sigaction g_previous_segv, g_previous_bus;

// A fault of a CUDA thread in a guard page (past either end of dynamic shared memory, or below its
// stack) fails the block like __trap does; any other fault goes to the handler that was there
// before (by default, the process dies as it would have).
void on_fault(int sig, siginfo_t* info, void* context) {
  Block* b = tls.block;
  Fiber* f = tls.fiber;
  Worker* w = tls.worker;
  const auto a = reinterpret_cast<uintptr_t>(info->si_addr);
  if (b && f && w) {
    const size_t page = page_size();
    const auto lo = reinterpret_cast<uintptr_t>(w->smem_lo);
    const auto stack = reinterpret_cast<uintptr_t>(f->stack.mapping);
    Fault fault = Fault::none;
    if (w->smem_mapping && a >= lo + w->smem_capacity && a < lo + w->smem_capacity + page)
      fault = Fault::shared_overrun;
    else if (w->smem_mapping && a >= lo - page && a < lo)
      fault = Fault::shared_underrun;
    else if (a >= stack && a < stack + page)
      fault = Fault::stack_overflow;
    if (fault != Fault::none) {
      if (b->error == cudaSuccess) {
        b->error = fault == Fault::stack_overflow ? cudaErrorLaunchFailure : cudaErrorIllegalAddress;
        b->fault = fault;
        b->fault_thread = f->flat;
        b->fault_address = a;
      }
      abandon(*b, *f);
    }
  }
  const struct sigaction& previous = sig == SIGBUS ? g_previous_bus : g_previous_segv;
  if (previous.sa_flags & SA_SIGINFO) {
    previous.sa_sigaction(sig, info, context);
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(sig);
  } else {
    // Returning re-executes the faulting access, which then takes the default action.
    signal(sig, SIG_DFL);
  }
}

// The handler is in place only while launches run (a test framework or the program may install its
// own between them): the first of the concurrent launches installs it, the last puts back what was
// there before.
struct FaultHandlerScope {
  FaultHandlerScope() {
    std::lock_guard lock(mutex());
    if (active()++ > 0) return;
    struct sigaction sa {};
    sa.sa_sigaction = &on_fault;
    sigemptyset(&sa.sa_mask);
    // NODEFER: the handler leaves by switching to the scheduler, never by returning, so the signal
    // must not stay blocked; ONSTACK: a stack overflow leaves no room on the fiber's own stack.
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, &g_previous_segv);
    sigaction(SIGBUS, &sa, &g_previous_bus);
  }
  ~FaultHandlerScope() {
    std::lock_guard lock(mutex());
    if (--active() > 0) return;
    sigaction(SIGSEGV, &g_previous_segv, nullptr);
    sigaction(SIGBUS, &g_previous_bus, nullptr);
  }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static unsigned& active() {
    static unsigned n = 0;
    return n;
  }
};

// Each OS thread that runs blocks needs its own alternate signal stack.
void install_alternate_stack(Worker& w) {
  if (w.altstack) return;
  void* m = mmap(nullptr, Worker::kAltStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return;
  stack_t ss{};
  ss.ss_sp = m;
  ss.ss_size = Worker::kAltStackBytes;
  if (sigaltstack(&ss, nullptr) != 0) {
    munmap(m, Worker::kAltStackBytes);
    return;
  }
  w.altstack = m;
}
#endif

// ---- running a block ---------------------------------------------------------------------------

// Runs block `linear` of the launch on this OS thread. Returns false (with b.error set) when the
// block fails; the other fibers of the block are then abandoned, as a trapped GPU block is.
bool run_block(Worker& w, const LaunchSpec& spec, uint64_t linear, Schedule schedule, uint64_t seed, size_t stack_size,
               const PoisonList& poison) {
  Block& b = w.block;
  const dim3 bd = spec.block;
  const unsigned n = bd.x * bd.y * bd.z;
  b.spec = &spec;
  b.n = n;
  b.block_idx = uint3{static_cast<unsigned>(linear % spec.grid.x),
                      static_cast<unsigned>((linear / spec.grid.x) % spec.grid.y),
                      static_cast<unsigned>(linear / (uint64_t{spec.grid.x} * spec.grid.y))};
  b.rng = seed ^ (linear * 0xD1B54A32D192ED03ull);
  b.error = cudaSuccess;
  b.message.clear();
  b.fault = Fault::none;
  b.live = n;
  b.bar_arrived = 0;
  b.bar_sum = 0;
  b.progress = true;
  b.idle_rounds = 0;

  // Every static __shared__ variable the kernel can reach starts the block poisoned, like dynamic
  // shared memory.
  for (const auto& [p, size] : poison) {
    std::memset(p, kPoisonByte, size);
  }

  if (b.fibers.size() < n) b.fibers.resize(n);
  const size_t page = page_size();
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    if (f.stack.mapping && f.stack.size != stack_size) {
      munmap(f.stack.mapping, f.stack.mapped);
      f.stack = Stack{};
    }
    if (!f.stack.mapping) {
      // The lowest page stays inaccessible: a stack overflow faults instead of corrupting a neighbour.
      const size_t mapped = stack_size + page;
      void* m = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
      if (m == MAP_FAILED || mprotect(m, page, PROT_NONE) != 0) {
        if (m != MAP_FAILED) munmap(m, mapped);
        b.error = cudaErrorMemoryAllocation;
        b.message = cat("cannot map a ", std::to_string(stack_size), "-byte fiber stack for ", where(b));
        return false;
      }
      f.stack = Stack{m, mapped, static_cast<char*>(m) + page, stack_size};
    }
#if defined(SIMT_ASAN)
    // An abandoned or finished fiber leaves its frames' redzones poisoned.
    __asan_unpoison_memory_region(f.stack.lo, f.stack.size);
#endif
    f.block = &b;
    f.flat = i;
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    f.state = State::ready;
    f.copies.clear();
    f.group_ends.clear();
    context_make(f.ctx, f.stack.lo, f.stack.size, &fiber_main, &f);
  }

  const unsigned nwarps = (n + 31) / 32;
  if (b.warps.size() < nwarps) b.warps.resize(nwarps);
  b.nwarps = nwarps;
  for (unsigned wi = 0; wi < nwarps; ++wi) {
    const unsigned lanes = std::min(32u, n - wi * 32);
    b.warps[wi].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    b.warps[wi].live = b.warps[wi].present;
    b.warps[wi].used = 0;
  }

  b.order.resize(n);
  for (unsigned i = 0; i < n; ++i) b.order[i] = schedule == Schedule::descending ? n - 1 - i : i;

  tls.block_idx = b.block_idx;
  tls.block = &b;

#if defined(SIMT_RACECHECK)
  // Created after all the setup above, so each fiber starts ordered after it (and after the host's
  // writes that the worker is ordered after); one fiber per CUDA thread, destroyed with the block.
  b.sched_tsan = __tsan_get_current_fiber();
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    f.tsan = __tsan_create_fiber(0);
    char name[96];
    std::snprintf(name, sizeof name, "CUDA thread (%u,%u,%u) of block (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z, b.block_idx.x,
                  b.block_idx.y, b.block_idx.z);
    __tsan_set_fiber_name(f.tsan, name);
  }
#endif

  while (b.live > 0 && b.error == cudaSuccess) {
    // A round with no arrival and no exit: only __nanosleep ran. Enough of them for long enough is
    // a spin-wait that cannot end.
    if (b.progress) {
      b.idle_rounds = 0;
    } else if (++b.idle_rounds == 1) {
      b.idle_since = Clock::now();
    } else if (b.idle_rounds % 256 == 0 && Clock::now() - b.idle_since >= kSpinTimeout) {
      b.error = kErrorDeadlock;
      b.message = deadlock_message(b);
      break;
    }
    b.progress = false;
    if (schedule == Schedule::shuffled)
      for (unsigned i = n - 1; i > 0; --i) std::swap(b.order[i], b.order[splitmix64(b.rng) % (i + 1)]);
    b.cursor = 0;
    Fiber* f = next_ready(b);
    if (!f) {
      b.error = kErrorDeadlock;
      b.message = deadlock_message(b);
      break;
    }
    enter(*f);
    switch_to_fiber(b.sched, *f, false);
  }
  if (b.fault != Fault::none) b.message = fault_message(b);
#if defined(SIMT_RACECHECK)
  for (unsigned i = 0; i < n; ++i) {
    __tsan_destroy_fiber(b.fibers[i].tsan);
    b.fibers[i].tsan = nullptr;
  }
#endif
  tls.fiber = nullptr;
  tls.block = nullptr;
  return b.error == cudaSuccess;
}

// ---- worker pool -------------------------------------------------------------------------------

struct Grid {
  const LaunchSpec* spec;
  const KernelShared* shared;
  uint64_t total;
  Schedule schedule;
  uint64_t seed;
  size_t stack_size;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  uint64_t failed_block = UINT64_MAX;
  cudaError_t error = cudaSuccess;
  std::string message;
};

// Runs block i of the grid on this OS thread; a failure is recorded in the grid and stops it.
void run_grid_block(Grid& g, uint64_t i, Worker& w, const PoisonList& poison) {
  tls.dynamic_smem = acquire_dynamic_smem(w, g.spec->dynamic_smem_bytes);
  bool ok;
  if (!tls.dynamic_smem) {
    w.block.error = cudaErrorMemoryAllocation;
    w.block.message = "cannot allocate the block's dynamic shared memory";
    ok = false;
  } else {
    ok = run_block(w, *g.spec, i, g.schedule, g.seed, g.stack_size, poison);
  }
  tls.dynamic_smem = nullptr;
  release_dynamic_smem(w);
  if (!ok) {
    std::lock_guard lock(g.mutex);
    if (i < g.failed_block) {
      g.failed_block = i;
      g.error = w.block.error;
      g.message = w.block.message;
    }
    g.stop = true;
  }
}

void run_blocks(Grid& g) {
#if defined(SIMT_RACECHECK)
  // Each block on a fresh OS thread: ThreadSanitizer starts a thread with clean shadow memory for its
  // thread-local storage (the static __shared__ variables), and the thread maps fresh stacks and
  // dynamic shared memory, so the previous block's accesses to that memory are forgotten without
  // ordering the blocks' other accesses (LLVM 14's runtime ignores AnnotateNewMemory).
  for (;;) {
    if (g.stop.load(std::memory_order_relaxed)) break;
    const uint64_t i = g.next.fetch_add(1);
    if (i >= g.total) break;
    std::thread block_thread([&g, i] {
      tls.block_dim = g.spec->block;
      tls.grid_dim = g.spec->grid;
      run_grid_block(g, i, this_worker(), thread_instances(g.shared->poison));
    });
    block_thread.join();
  }
#else
  Worker& w = this_worker();
#if defined(SIMT_FAULT_HANDLER)
  install_alternate_stack(w);
#endif
  const PoisonList poison = thread_instances(g.shared->poison);
  dim3 saved_block_dim = tls.block_dim, saved_grid_dim = tls.grid_dim;
  tls.block_dim = g.spec->block;
  tls.grid_dim = g.spec->grid;
  for (;;) {
    if (g.stop.load(std::memory_order_relaxed)) break;
    const uint64_t i = g.next.fetch_add(1);
    if (i >= g.total) break;
    run_grid_block(g, i, w, poison);
  }
  tls.block_dim = saved_block_dim;
  tls.grid_dim = saved_grid_dim;
#endif
}

class Pool {
 public:
  ~Pool() { resize(0); }

  // Runs run_blocks(g) on `helpers` pool threads and the calling thread, and waits for all.
  void run(Grid& g, unsigned helpers) {
    resize(helpers);
    {
      std::lock_guard lock(mutex_);
      grid_ = &g;
      pending_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    run_blocks(g);
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    grid_ = nullptr;
  }

 private:
  void resize(unsigned n) {
    if (threads_.size() == n) return;
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
    quit_ = false;
    // The thread starts from the generation current now, so a run() issued before it first takes
    // the lock is still seen as new work.
    for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this, g = generation_] { loop(g); });
  }

  void loop(uint64_t seen) {
    for (;;) {
      Grid* g;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (quit_) return;
        g = grid_;
      }
      run_blocks(*g);
      std::lock_guard lock(mutex_);
      if (--pending_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;
  Grid* grid_ = nullptr;
  unsigned pending_ = 0;
  uint64_t generation_ = 0;
  bool quit_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

}  // namespace

// ---- what kernels call -------------------------------------------------------------------------

int syncthreads_count(int predicate, Site site) {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  b.progress = true;
  if (b.live < b.n) {
    record_failure(b, f, kErrorBarrierMisuse,
                   cat("__syncthreads at ", site_string(site), " after threads ", thread_list(b, threads_in(b, State::exited)),
                       " exited: every thread of a block must reach each __syncthreads"));
    abandon(b, f);
  }
  if (b.bar_arrived > 0 && !same_site(site, b.bar_site)) {
    record_failure(b, f, kErrorBarrierMisuse,
                   cat("__syncthreads at ", site_string(site), " while threads ", thread_list(b, threads_in(b, State::barrier)),
                       " wait at the one at ", site_string(b.bar_site),
                       ": the threads of a block must meet at the same __syncthreads"));
    abandon(b, f);
  }
  if (b.bar_arrived == 0) b.bar_site = site;
  ++b.bar_arrived;
  b.bar_sum += predicate != 0;
  f.state = State::barrier;
  // The barrier's generation parity picks the object: a thread that leaves barrier k late must not
  // acquire what faster threads released at barrier k+1.
  char* object = &b.bar_object[b.bar_generation & 1u];
  hb_release(object);
  if (b.bar_arrived == b.live) release_barrier(b);
  suspend(b, f);
  hb_acquire(object);
  return f.bar_sum;
}

int syncthreads_and(int predicate, Site site) {
  const int n = syncthreads_count(predicate, site);
  return n == tls.fiber->bar_total;
}

int syncthreads_or(int predicate, Site site) { return syncthreads_count(predicate, site) != 0; }

void nanosleep_yield() {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  f.state = State::ready;
  suspend(b, f);
}

void fail(cudaError_t error, const char* what) {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  record_failure(b, f, error, what);
  abandon(b, f);
}

void warp_collective(unsigned mask, WarpFn fn, unsigned op, const void* in, void* out, unsigned arg) {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  Warp& w = b.warps[f.flat / 32];
  const unsigned lane = f.flat & 31u;
  b.progress = true;
  // No std::string here: fail() never returns, so a temporary's buffer would leak.
  char what[128];
  if (!((mask >> lane) & 1u)) {
    std::snprintf(what, sizeof what, "warp operation with mask 0x%08x that leaves out the calling lane", mask);
    fail(kErrorWarpMisuse, what);
  }
  WarpGroup* g = nullptr;
  for (unsigned used = w.used; used && !g; used &= used - 1)
    if (w.groups[std::countr_zero(used)].mask == mask) g = &w.groups[std::countr_zero(used)];
  if (!g) {
    // A free group exists: each pending one holds a waiting lane, and this lane waits in none.
    const unsigned k = static_cast<unsigned>(std::countr_zero(~w.used));
    g = &w.groups[k];
    w.used |= 1u << k;
    g->mask = mask;
    g->arrived = 0;
    g->fn = fn;
    g->op = op;
  } else if (g->fn != fn || g->op != op) {
    std::snprintf(what, sizeof what, "lanes of mask 0x%08x meet in one warp operation through different operations", mask);
    fail(kErrorWarpMisuse, what);
  }
  g->calls[lane] = LaneCall{in, out, arg};
  g->arrived |= 1u << lane;
  f.state = State::warp;
  char* object = &g->sync_object[g->generation & 1u];
  hb_release(object);
  if (g->arrived == (mask & w.live)) {
    // The last lane reads every lane's operand and writes every result: ordered after the others'
    // arrivals, and before their departures.
    hb_acquire(object);
    complete_group(b, w, *g);
    hb_release(object);
  }
  suspend(b, f);
  hb_acquire(object);
}

void active_mask() {
  fail(kErrorWarpMisuse,
       "__activemask() is not emulated: fibers do not model which lanes of a warp run together; pass the mask explicitly");
}

void sync_fn(LaneCall* const[32], unsigned) {}

void vote_fn(LaneCall* const calls[32], unsigned participants) {
  unsigned votes = 0;
  for (unsigned l = 0; l < 32; ++l)
    if (calls[l] && *static_cast<const int*>(calls[l]->in)) votes |= 1u << l;
  for (unsigned l = 0; l < 32; ++l)
    if (calls[l]) {
      static_cast<unsigned*>(calls[l]->out)[0] = votes;
      static_cast<unsigned*>(calls[l]->out)[1] = participants;
    }
}

void cp_async(void* smem, const void* gmem, unsigned bytes, unsigned src_bytes) {
  tls.fiber->copies.push_back(Copy{smem, gmem, bytes, src_bytes});
}

void cp_async_commit() { tls.fiber->group_ends.push_back(tls.fiber->copies.size()); }

void cp_async_wait(int newest_groups_left_pending) {
  Fiber& f = *tls.fiber;
  const size_t groups = f.group_ends.size();
  const size_t keep = static_cast<size_t>(newest_groups_left_pending);
  if (groups <= keep) return;
  const size_t done = f.group_ends[groups - keep - 1];
  flush_copies(f, done);
  f.group_ends.erase(f.group_ends.begin(), f.group_ends.begin() + static_cast<ptrdiff_t>(groups - keep));
  for (auto& e : f.group_ends) e -= done;
}

double fma_round_to_odd(double a, double b, double c) {
  const double p = a * b;  // exact for 16-bit float inputs
  const double s = p + c;
  // Two-sum: s + e == p + c exactly.
  const double bb = s - p;
  const double e = (p - (s - bb)) + (c - bb);
  if (e == 0.0 || !std::isfinite(s)) return s;
  uint64_t bits;
  std::memcpy(&bits, &s, 8);
  if (bits & 1u) return s;
  return std::nextafter(s, e > 0 ? INFINITY : -INFINITY);
}

// ---- launch ------------------------------------------------------------------------------------

namespace {

// Records the outcome of a host call as the CUDA runtime does: an error becomes this thread's last
// error; a kernel fault also becomes the device's sticky error.
cudaError_t finish(cudaError_t error, std::string message) {
  Worker& w = this_worker();
  if (error != cudaSuccess) {
    w.last_error = error;
    if (is_sticky(error)) {
      DeviceState& d = device();
      std::lock_guard lock(d.mutex);
      if (!d.faulted.load(std::memory_order_relaxed)) {
        d.error = error;
        d.message = message;
        d.faulted.store(true, std::memory_order_release);
      }
    }
  }
  w.last_message = std::move(message);
  return error;
}

// The sticky error, if a kernel faulted since the last device_reset(), with the message to give.
cudaError_t sticky_error(std::string* message) {
  DeviceState& d = device();
  if (!d.faulted.load(std::memory_order_acquire)) return cudaSuccess;
  std::lock_guard lock(d.mutex);
  if (message)
    *message = cat("the emulated device is unusable after an earlier kernel fault (", error_name(d.error), ": ", d.message,
                   "); simt::device_reset() clears it");
  return d.error;
}

}  // namespace

cudaError_t set_max_dynamic_shared(const void* kernel, int bytes) {
  std::string message;
  if (const cudaError_t e = sticky_error(&message)) return finish(e, message);
  const size_t static_bytes = static_shared_bytes(kernel);
  if (bytes < 0 || static_cast<size_t>(bytes) + static_bytes > kMaxDynamicSharedBytesOptIn)
    return finish(cudaErrorInvalidValue,
                  cat("a dynamic shared memory limit of ", std::to_string(bytes), " bytes plus the kernel's ",
                      std::to_string(static_bytes), " bytes of static shared memory exceed 227 KiB (or is negative)"));
  auto& s = settings();
  std::lock_guard lock(s.mutex);
  s.max_dynamic_shared[kernel] = static_cast<size_t>(bytes);
  return cudaSuccess;
}

cudaError_t launch(const LaunchSpec& spec) {
  if (tls.block)  // no finish(): this thread's state belongs to the running kernel
    return cudaErrorNotSupported;
  ++this_worker().launches;
  std::string sticky_message;
  if (const cudaError_t e = sticky_error(&sticky_message)) return finish(e, sticky_message);
  const dim3 b = spec.block, g = spec.grid;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > kMaxThreadsPerBlock)
    return finish(cudaErrorInvalidConfiguration,
                  cat("block ", dim_string(b.x, b.y, b.z), " exceeds the sm_90 limits (1024,1024,64), 1024 threads"));
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535)
    return finish(cudaErrorInvalidConfiguration,
                  cat("grid ", dim_string(g.x, g.y, g.z), " exceeds the sm_90 limits (2^31-1,65535,65535)"));
  const KernelShared& shared = kernel_shared(spec.kernel);
  const size_t static_bytes = shared.static_bytes;
  auto& s = settings();
  Grid grid;
  unsigned workers;
  {
    std::lock_guard lock(s.mutex);
    const auto it = s.max_dynamic_shared.find(spec.kernel);
    // As on the GPU: static and dynamic shared memory share the 48 KiB a kernel gets without opting
    // in; an opted-in limit counts dynamic shared memory alone (set_max_dynamic_shared checked the sum).
    const size_t limit = it != s.max_dynamic_shared.end()      ? it->second
                         : static_bytes <= kDefaultDynamicSharedBytes ? kDefaultDynamicSharedBytes - static_bytes
                                                                      : 0;
    if (static_bytes > kDefaultDynamicSharedBytes || spec.dynamic_smem_bytes > limit)
      return finish(cudaErrorInvalidValue,
                    cat(std::to_string(spec.dynamic_smem_bytes), " bytes of dynamic shared memory with ",
                        std::to_string(static_bytes), " bytes of static shared memory exceed the kernel's limit (",
                        std::to_string(limit), " bytes of dynamic shared memory; raise it with simt::set_max_dynamic_shared, "
                        "static + dynamic up to 227 KiB, static alone up to 48 KiB)"));
    grid.schedule = s.schedule;
    grid.seed = s.seed;
    grid.stack_size = s.stack_size ? s.stack_size : default_stack_size();
    workers = s.workers;
  }
  grid.spec = &spec;
  grid.shared = &shared;
  grid.total = uint64_t{g.x} * g.y * g.z;
  const unsigned helpers = static_cast<unsigned>(std::min<uint64_t>(workers, grid.total)) - 1;
#if defined(SIMT_FAULT_HANDLER)
  const FaultHandlerScope fault_handler;
#endif
  if (helpers == 0)
    run_blocks(grid);
  else
    pool().run(grid, helpers);
  hb_acquire(&g_launch_object);
  return finish(grid.error, std::move(grid.message));
}

}  // namespace detail

void set_schedule(Schedule schedule, uint64_t seed) {
  auto& s = settings();
  std::lock_guard lock(s.mutex);
  s.schedule = schedule;
  s.seed = seed;
}

void set_worker_threads(unsigned n) {
  auto& s = settings();
  std::lock_guard lock(s.mutex);
  s.workers = n == 0 ? 1 : n;
}

void set_stack_size(size_t bytes) {
  auto& s = settings();
  std::lock_guard lock(s.mutex);
  const size_t page = page_size();
  s.stack_size = (bytes + page - 1) / page * page;
}

std::string last_error_message() { return detail::this_worker().last_message; }

uint64_t launch_count() { return detail::this_worker().launches; }

cudaError_t get_last_error() {
  if (const cudaError_t e = detail::sticky_error(nullptr)) return e;
  detail::Worker& w = detail::this_worker();
  const cudaError_t e = w.last_error;
  w.last_error = cudaSuccess;
  return e;
}

cudaError_t peek_at_last_error() {
  if (const cudaError_t e = detail::sticky_error(nullptr)) return e;
  return detail::this_worker().last_error;
}

cudaError_t device_synchronize() { return detail::sticky_error(nullptr); }

cudaError_t device_reset() {
  DeviceState& d = device();
  {
    std::lock_guard lock(d.mutex);
    d.error = cudaSuccess;
    d.message.clear();
    d.faulted.store(false, std::memory_order_release);
  }
  detail::Worker& w = detail::this_worker();
  w.last_error = cudaSuccess;
  w.last_message.clear();
  return cudaSuccess;
}

const char* error_name(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchTimeout: return "cudaErrorLaunchTimeout";
    case cudaErrorIllegalInstruction: return "cudaErrorIllegalInstruction";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaError (not produced by the emulator)";
  }
}

}  // namespace simt
