// simt/src/context_x86_64.cpp: the hand-written x86-64 (System V) fiber switch, the default
// backend of mra_simt (MRA_SIMT_CONTEXT=asm). A switch saves the six callee-saved registers on the
// old stack and swaps rsp: about ten instructions, no system call (ucontext's swapcontext makes a
// sigprocmask call per switch, which costs ~200 ns on the project's machines).
// MXCSR and the x87 control word are not switched: kernels never change the rounding mode.
#include "context.h"

#include <cstdint>

#if !defined(__x86_64__)
#error "context_x86_64.cpp is the x86-64 backend; configure with -DMRA_SIMT_CONTEXT=ucontext"
#endif

extern "C" {
void simt_context_switch(void** save_sp, void* new_sp);
void simt_context_start();
}

// A file-scope asm block, emitted once in this translation unit (in a header it would clash under LTO).
asm(R"(
  .text
  .globl simt_context_switch
  .hidden simt_context_switch
  .type simt_context_switch, @function
  .p2align 4
simt_context_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_context_switch, .-simt_context_switch

  .globl simt_context_start
  .hidden simt_context_start
  .type simt_context_start, @function
  .p2align 4
simt_context_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size simt_context_start, .-simt_context_start
)");

namespace simt::detail {

void context_make(Context& ctx, void* stack, size_t size, void (*fn)(void*), void* arg) {
  // After the first switch pops the registers and returns into simt_context_start, rsp is `frame`,
  // 16-byte aligned, so the call into fn sees the ABI's alignment.
  auto top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<void**>(top - 16);
  frame[-1] = reinterpret_cast<void*>(&simt_context_start);
  frame[-2] = nullptr;                              // rbp
  frame[-3] = nullptr;                              // rbx
  frame[-4] = arg;                                  // r12
  frame[-5] = reinterpret_cast<void*>(fn);          // r13
  frame[-6] = nullptr;                              // r14
  frame[-7] = nullptr;                              // r15
  ctx.sp = frame - 7;
}

void context_switch(Context& from, Context& to) { simt_context_switch(&from.sp, to.sp); }

}  // namespace simt::detail
