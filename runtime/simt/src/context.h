// simt/src/context.h: the fiber context switch of the emulator, internal to mra_simt. One backend is
// compiled in, chosen by CMake (MRA_SIMT_CONTEXT=asm|ucontext): context_x86_64.cpp or
// context_ucontext.cpp.
#pragma once

#include <cstddef>

#if defined(SIMT_CONTEXT_UCONTEXT)
#include <ucontext.h>
#endif

namespace simt::detail {

struct Context {
#if defined(SIMT_CONTEXT_UCONTEXT)
  ucontext_t uc;
#else
  void* sp = nullptr;
#endif
};

// Prepares `ctx` so that the first switch to it calls fn(arg) on the stack [stack, stack + size).
// fn must never return; it leaves by switching away for the last time.
void context_make(Context& ctx, void* stack, size_t size, void (*fn)(void*), void* arg);
// Saves the current execution into `from` and resumes `to`. Opaque to the optimiser: it is a call
// into another translation unit, so no value in memory is cached across it.
void context_switch(Context& from, Context& to);

}  // namespace simt::detail
