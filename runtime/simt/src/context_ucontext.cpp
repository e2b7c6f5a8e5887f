// simt/src/context_ucontext.cpp: the portable fiber switch of mra_simt (MRA_SIMT_CONTEXT=ucontext),
// for hosts without the x86-64 backend. Correct everywhere glibc runs, but each swapcontext makes a
// sigprocmask system call, so barriers cost several times more than with the asm backend.
#include "context.h"

#include <cstdint>

namespace simt::detail {
namespace {

// makecontext passes int arguments only, so the pointers travel as two halves.
void start(unsigned fn_hi, unsigned fn_lo, unsigned arg_hi, unsigned arg_lo) {
  auto join = [](unsigned hi, unsigned lo) { return (static_cast<uintptr_t>(hi) << 32) | lo; };
  auto fn = reinterpret_cast<void (*)(void*)>(join(fn_hi, fn_lo));
  fn(reinterpret_cast<void*>(join(arg_hi, arg_lo)));
}

}  // namespace

void context_make(Context& ctx, void* stack, size_t size, void (*fn)(void*), void* arg) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack;
  ctx.uc.uc_stack.ss_size = size;
  ctx.uc.uc_link = nullptr;
  const auto f = reinterpret_cast<uintptr_t>(fn);
  const auto a = reinterpret_cast<uintptr_t>(arg);
  makecontext(&ctx.uc, reinterpret_cast<void (*)()>(&start), 4, static_cast<unsigned>(f >> 32),
              static_cast<unsigned>(f), static_cast<unsigned>(a >> 32), static_cast<unsigned>(a));
}

void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

}  // namespace simt::detail
