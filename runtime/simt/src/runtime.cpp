// simt/src/runtime.cpp: the CPU execution of a CUDA grid for mra_simt. Blocks run one at a time
// per worker OS thread; the threads of a block are fibers resumed in a ring, in the order the
// schedule dictates, until they block on a barrier or a warp collective, or exit. Built by
// runtime/simt/CMakeLists.txt; exercised by tests/emulator.
#include "simt/simt.h"

#include "context.h"
#include "symbolize.h"

#include <sys/mman.h>
#include <unistd.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
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

namespace simt {
namespace {

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

thread_local std::string t_last_message;

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

struct WarpGroup {
  bool used = false;
  unsigned mask = 0;
  unsigned arrived = 0;
  WarpFn fn = nullptr;
  LaneCall calls[32];
};

struct Warp {
  unsigned present = 0;
  unsigned live = 0;
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
};

// One resident block: what a worker thread needs to run the blocks of a grid one after another.
struct Block {
  Context sched;
#if defined(SIMT_ASAN)
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned nwarps = 0;
  std::vector<unsigned> order;
  size_t cursor = 0;
  unsigned live = 0;
  unsigned bar_arrived = 0;
  int bar_sum = 0;
  const LaunchSpec* spec = nullptr;
  uint3 block_idx{0, 0, 0};
  uint64_t rng = 0;
  cudaError_t error = cudaSuccess;
  std::string message;

  ~Block() {
    for (auto& f : fibers)
      if (f.stack.mapping) munmap(f.stack.mapping, f.stack.mapped);
  }
};

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void switch_fiber(Context& from, Context& to, const void* to_bottom, size_t to_size, bool from_exits) {
#if defined(SIMT_ASAN)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(from_exits ? nullptr : &fake_stack, to_bottom, to_size);
  context_switch(from, to);
  __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
  (void)to_bottom, (void)to_size, (void)from_exits;
  context_switch(from, to);
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
    switch_fiber(f.ctx, n->ctx, n->stack.lo, n->stack.size, exits);
  } else {
    tls.fiber = nullptr;
#if defined(SIMT_ASAN)
    switch_fiber(f.ctx, b.sched, b.sched_stack_bottom, b.sched_stack_size, exits);
#else
    switch_fiber(f.ctx, b.sched, nullptr, 0, exits);
#endif
  }
}

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

std::string hex(unsigned v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string where(const Block& b) {
  return cat("kernel '", symbolize(b.spec->kernel), "' block ", dim_string(b.block_idx.x, b.block_idx.y, b.block_idx.z));
}

void complete_group(Block& b, Warp& w, WarpGroup& g) {
  LaneCall* calls[32] = {};
  for (unsigned l = 0; l < 32; ++l)
    if ((g.arrived >> l) & 1u) calls[l] = &g.calls[l];
  g.fn(calls, g.arrived);
  const unsigned base = static_cast<unsigned>(&w - b.warps.data()) * 32u;
  for (unsigned l = 0; l < 32; ++l)
    if ((g.arrived >> l) & 1u) b.fibers[base + l].state = State::ready;
  g.used = false;
}

void release_barrier(Block& b) {
  for (auto& f : b.fibers)
    if (f.state == State::barrier) {
      f.state = State::ready;
      f.bar_sum = b.bar_sum;
      f.bar_total = static_cast<int>(b.bar_arrived);
    }
  b.bar_arrived = 0;
  b.bar_sum = 0;
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
  --b.live;
  if (b.bar_arrived > 0 && b.bar_arrived == b.live) release_barrier(b);
  Warp& w = b.warps[f.flat / 32];
  w.live &= ~(1u << (f.flat & 31u));
  for (auto& g : w.groups)
    if (g.used && g.arrived == (g.mask & w.live)) complete_group(b, w, g);
}

void fiber_main(void* arg) {
  Fiber& f = *static_cast<Fiber*>(arg);
#if defined(SIMT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  Block& b = *f.block;
  b.spec->entry(b.spec->pack);
  thread_exit(b, f);
  f.state = State::exited;
  suspend(b, f, true);
}

std::string deadlock_message(const Block& b) {
  std::string m = cat("deadlock in ", where(b), ":");
  std::vector<unsigned> at_barrier;
  for (const auto& f : b.fibers)
    if (f.state == State::barrier) at_barrier.push_back(f.flat);
  if (!at_barrier.empty())
    m += cat(" threads ", thread_list(b, at_barrier), " wait at __syncthreads (", std::to_string(b.bar_arrived), " of ",
             std::to_string(b.live), " live threads arrived);");
  for (size_t wi = 0; wi < b.nwarps; ++wi) {
    const Warp& w = b.warps[wi];
    for (const auto& g : w.groups) {
      if (!g.used) continue;
      std::vector<unsigned> waiting, missing;
      for (unsigned l = 0; l < 32; ++l) {
        if ((g.arrived >> l) & 1u) waiting.push_back(static_cast<unsigned>(wi) * 32 + l);
        if (((g.mask & w.live & ~g.arrived) >> l) & 1u) missing.push_back(static_cast<unsigned>(wi) * 32 + l);
      }
      m += cat(" warp ", std::to_string(wi), ": threads ", thread_list(b, waiting), " wait in a warp operation with mask ",
               hex(g.mask), " for threads ", thread_list(b, missing), ", which never arrive;");
    }
  }
  m.pop_back();
  return m;
}

// Runs block `linear` of the launch on this OS thread. Returns false (with b.error set) when the
// block fails; the other fibers of the block are then abandoned, as a trapped GPU block is.
bool run_block(Block& b, const LaunchSpec& spec, uint64_t linear, Schedule schedule, uint64_t seed, size_t stack_size) {
  const dim3 bd = spec.block;
  const unsigned n = bd.x * bd.y * bd.z;
  b.spec = &spec;
  b.block_idx = uint3{static_cast<unsigned>(linear % spec.grid.x),
                      static_cast<unsigned>((linear / spec.grid.x) % spec.grid.y),
                      static_cast<unsigned>(linear / (uint64_t{spec.grid.x} * spec.grid.y))};
  b.rng = seed ^ (linear * 0xD1B54A32D192ED03ull);
  b.error = cudaSuccess;
  b.message.clear();
  b.live = n;
  b.bar_arrived = 0;
  b.bar_sum = 0;

  if (b.fibers.size() < n) b.fibers.resize(n);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
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
  for (unsigned i = n; i < b.fibers.size(); ++i) b.fibers[i].state = State::exited;

  const unsigned nwarps = (n + 31) / 32;
  if (b.warps.size() < nwarps) b.warps.resize(nwarps);
  b.nwarps = nwarps;
  for (unsigned w = 0; w < nwarps; ++w) {
    const unsigned lanes = std::min(32u, n - w * 32);
    b.warps[w].present = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    b.warps[w].live = b.warps[w].present;
    for (auto& g : b.warps[w].groups) g.used = false;
  }

  b.order.resize(n);
  for (unsigned i = 0; i < n; ++i) b.order[i] = schedule == Schedule::descending ? n - 1 - i : i;

  tls.block_idx = b.block_idx;
  tls.block = &b;

  while (b.live > 0 && b.error == cudaSuccess) {
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
    switch_fiber(b.sched, f->ctx, f->stack.lo, f->stack.size, false);
  }
  tls.fiber = nullptr;
  tls.block = nullptr;
  return b.error == cudaSuccess;
}

Block& this_thread_block() {
  thread_local Block block;
#if defined(SIMT_ASAN)
  if (!block.sched_stack_bottom) {
    pthread_attr_t attr;
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &addr, &size);
      pthread_attr_destroy(&attr);
    }
    block.sched_stack_bottom = addr;
    block.sched_stack_size = size;
  }
#endif
  return block;
}

// ---- worker pool -------------------------------------------------------------------------------

struct Grid {
  const LaunchSpec* spec;
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

void run_blocks(Grid& g) {
  Block& b = this_thread_block();
  dim3 saved_block_dim = tls.block_dim, saved_grid_dim = tls.grid_dim;
  tls.block_dim = g.spec->block;
  tls.grid_dim = g.spec->grid;
  for (;;) {
    if (g.stop.load(std::memory_order_relaxed)) break;
    const uint64_t i = g.next.fetch_add(1);
    if (i >= g.total) break;
    // Block-sized dynamic shared memory, exactly as large as requested so that AddressSanitizer
    // reports the first byte past it, and poisoned so reads before writes show up.
    unsigned char* smem = static_cast<unsigned char*>(std::malloc(g.spec->dynamic_smem_bytes));
    if (smem) std::memset(smem, kPoisonByte, g.spec->dynamic_smem_bytes);
    tls.dynamic_smem = smem;
    const bool ok = run_block(b, *g.spec, i, g.schedule, g.seed, g.stack_size);
    tls.dynamic_smem = nullptr;
    std::free(smem);
    if (!ok) {
      std::lock_guard lock(g.mutex);
      if (i < g.failed_block) {
        g.failed_block = i;
        g.error = b.error;
        g.message = b.message;
      }
      g.stop = true;
    }
  }
  tls.block_dim = saved_block_dim;
  tls.grid_dim = saved_grid_dim;
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

}  // namespace

// ---- what kernels call -------------------------------------------------------------------------

void syncthreads() { (void)syncthreads_count(0); }

int syncthreads_count(int predicate) {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  ++b.bar_arrived;
  b.bar_sum += predicate != 0;
  f.state = State::barrier;
  if (b.bar_arrived == b.live) release_barrier(b);
  suspend(b, f);
  return f.bar_sum;
}

int syncthreads_and(int predicate) {
  const int n = syncthreads_count(predicate);
  return n == tls.fiber->bar_total;
}

int syncthreads_or(int predicate) { return syncthreads_count(predicate) != 0; }

void yield() {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  f.state = State::ready;
  suspend(b, f);
}

void fail(cudaError_t error, const char* what) {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  if (b.error == cudaSuccess) {
    b.error = error;
    b.message = cat(where(b), " thread ", thread_name(b, f.flat), ": ", what);
  }
  f.state = State::failed;
  tls.fiber = nullptr;
#if defined(SIMT_ASAN)
  switch_fiber(f.ctx, b.sched, b.sched_stack_bottom, b.sched_stack_size, true);
#else
  switch_fiber(f.ctx, b.sched, nullptr, 0, true);
#endif
  __builtin_unreachable();
}

void warp_collective(unsigned mask, WarpFn fn, const void* in, void* out, unsigned arg) {
  Block& b = *tls.block;
  Fiber& f = *tls.fiber;
  Warp& w = b.warps[f.flat / 32];
  const unsigned lane = f.flat & 31u;
  // No std::string here: fail() never returns, so a temporary's buffer would leak.
  char what[96];
  if (!((mask >> lane) & 1u)) {
    std::snprintf(what, sizeof what, "warp operation with mask 0x%08x that leaves out the calling lane", mask);
    fail(kErrorWarpMisuse, what);
  }
  WarpGroup* g = nullptr;
  WarpGroup* free_group = nullptr;
  for (auto& c : w.groups) {
    if (c.used && c.mask == mask) {
      g = &c;
      break;
    }
    if (!c.used && !free_group) free_group = &c;
  }
  if (!g) {
    g = free_group;
    g->used = true;
    g->mask = mask;
    g->arrived = 0;
    g->fn = fn;
  } else if (g->fn != fn) {
    std::snprintf(what, sizeof what, "lanes of mask 0x%08x meet in one warp operation through different operations", mask);
    fail(kErrorWarpMisuse, what);
  }
  g->calls[lane] = LaneCall{in, out, arg};
  g->arrived |= 1u << lane;
  f.state = State::warp;
  if (g->arrived == (mask & w.live)) complete_group(b, w, *g);
  suspend(b, f);
}

unsigned active_mask() { return tls.block->warps[tls.fiber->flat / 32].live; }

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

cudaError_t set_max_dynamic_shared(const void* kernel, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > kMaxDynamicSharedBytesOptIn) return cudaErrorInvalidValue;
  auto& s = settings();
  std::lock_guard lock(s.mutex);
  s.max_dynamic_shared[kernel] = static_cast<size_t>(bytes);
  return cudaSuccess;
}

cudaError_t launch(const LaunchSpec& spec) {
  t_last_message.clear();
  if (tls.block) {
    t_last_message = "simt::launch called from inside a kernel (dynamic parallelism is not emulated)";
    return cudaErrorNotSupported;
  }
  const dim3 b = spec.block, g = spec.grid;
  const uint64_t threads = uint64_t{b.x} * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > kMaxThreadsPerBlock) {
    t_last_message = cat("block ", dim_string(b.x, b.y, b.z), " exceeds the sm_90 limits (1024,1024,64), 1024 threads");
    return cudaErrorInvalidConfiguration;
  }
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
    t_last_message = cat("grid ", dim_string(g.x, g.y, g.z), " exceeds the sm_90 limits (2^31-1,65535,65535)");
    return cudaErrorInvalidConfiguration;
  }
  auto& s = settings();
  Grid grid;
  unsigned workers;
  {
    std::lock_guard lock(s.mutex);
    const auto it = s.max_dynamic_shared.find(spec.kernel);
    const size_t limit = it == s.max_dynamic_shared.end() ? kDefaultDynamicSharedBytes : it->second;
    if (spec.dynamic_smem_bytes > limit) {
      t_last_message = cat(std::to_string(spec.dynamic_smem_bytes), " bytes of dynamic shared memory exceed the kernel's limit of ",
                           std::to_string(limit), " (raise it with simt::set_max_dynamic_shared, up to 227 KiB)");
      return cudaErrorInvalidValue;
    }
    grid.schedule = s.schedule;
    grid.seed = s.seed;
    grid.stack_size = s.stack_size ? s.stack_size : default_stack_size();
    workers = s.workers;
  }
  grid.spec = &spec;
  grid.total = uint64_t{g.x} * g.y * g.z;
  const unsigned helpers = static_cast<unsigned>(std::min<uint64_t>(workers, grid.total)) - 1;
  if (helpers == 0)
    run_blocks(grid);
  else
    pool().run(grid, helpers);
  t_last_message = grid.message;
  return grid.error;
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
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  s.stack_size = (bytes + page - 1) / page * page;
}

std::string last_error_message() { return t_last_message; }

const char* error_name(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchTimeout: return "cudaErrorLaunchTimeout";
    case cudaErrorIllegalInstruction: return "cudaErrorIllegalInstruction";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaError (not produced by the emulator)";
  }
}

}  // namespace simt
