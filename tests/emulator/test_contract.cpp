// tests/emulator/test_contract.cpp: one test per statement of the emulator's contract that goes
// beyond running correct code (docs/emulator.md §2-§3): poisoned static shared memory, divergent
// __syncthreads, mismatched warp collectives, spin-waits without progress, static + dynamic shared
// memory limits, guarded dynamic shared memory, sticky faults and the last error, __activemask,
// __noinline__. Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

#include <chrono>

namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#else
constexpr bool kAsan = false;
#endif

}  // namespace

TEST_CASE("static __shared__ is poisoned at the start of every block, on every worker") {
  EmulatorSettings settings;
  for (unsigned workers : {1u, 2u}) {
    simt::set_worker_threads(workers);
    CAPTURE(workers);
    const unsigned blocks = 6;
    std::vector<unsigned> out(blocks * 3, 0);
    for (int launch = 0; launch < 2; ++launch) {
      CHECK_LAUNCH(run_read_static_shared_first(blocks, out.data()));
      for (unsigned b = 0; b < blocks; ++b) {
        CAPTURE(b);
        CHECK(out[b * 3 + 0] == 0xFFFFFFFFu);  // not the previous block's blockIdx.x + 1
        CHECK(out[b * 3 + 1] == 0xFFFFFFFFu);  // a NaN, not the previous block's 1.0f
      }
    }
  }
}

TEST_CASE("static __shared__ of a device function is poisoned at the start of every block of every kernel") {
  EmulatorSettings settings;
  const unsigned blocks = 3;
  for (int round = 0; round < 2; ++round)
    for (int kernel : {0, 1}) {
      CAPTURE(round);
      CAPTURE(kernel);
      std::vector<unsigned> out(blocks, 0);
      CHECK_LAUNCH(run_device_function_shared(kernel, blocks, out.data()));
      for (unsigned b = 0; b < blocks; ++b) CHECK(out[b] == 0xFFFFFFFFu);  // not the previous block's value
    }
}

TEST_CASE("a block start poisons only the static __shared__ its kernel can reach") {
  // A kernel's own variables cannot be reached by another kernel: its blocks leave them alone, so a
  // block does not pay for the shared memory of every kernel in the program. One worker (the
  // default): the block runs on this thread, whose instance of the variable the test then reads.
  EmulatorSettings settings;
  uintptr_t own = 0;
  CHECK_LAUNCH(run_write_own_shared(&own));
  REQUIRE(own != 0);
  std::vector<unsigned> out(6 * 3, 0);
  CHECK_LAUNCH(run_read_static_shared_first(6, out.data()));
  CHECK(*reinterpret_cast<const unsigned*>(own) == 7u);
}

TEST_CASE("the emulator's per-thread state lies below every static __shared__ variable") {
  // An overrun of a static shared array runs towards higher addresses; the scheduler's state is
  // initialised thread-local data, which the TLS block places before the zero-initialised part.
  EmulatorSettings settings;
  uintptr_t probe = 0;
  CHECK_LAUNCH(run_static_shared_address(&probe));
  CHECK(probe > reinterpret_cast<uintptr_t>(&simt::detail::tls) + sizeof(simt::detail::tls));
}

TEST_CASE("threads that wait at different __syncthreads are reported, though the barrier could complete") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    simt::device_reset();
    std::vector<int> out(64, 0);
    CHECK(run_contract_kernel(ContractKernel::barrier_at_two_sites, out.data()) == simt::kErrorBarrierMisuse);
    const std::string m = simt::last_error_message();
    CAPTURE(m);
    CHECK(contains(m, "kernel 'barrier_at_two_sites(int*)' block (0,0,0)"));
    CHECK(contains(m, "the threads of a block must meet at the same __syncthreads"));
    CHECK(contains(m, "contract.cu:"));
  }
}

TEST_CASE("different collectives under one mask are reported instead of paired") {
  EmulatorSettings settings;
  std::vector<unsigned> out(32, 0);
  for (ContractKernel k : {ContractKernel::reduce_add_against_max, ContractKernel::shuffle_xor_against_down,
                           ContractKernel::any_against_all}) {
    CAPTURE(static_cast<int>(k));
    simt::device_reset();
    CHECK(run_contract_kernel(k, out.data()) == simt::kErrorWarpMisuse);
    CHECK(contains(simt::last_error_message(), "lanes of mask 0xffffffff meet in one warp operation through different operations"));
  }
}

TEST_CASE("__activemask is refused with a clear error") {
  EmulatorSettings settings;
  std::vector<unsigned> out(32, 0);
  CHECK(run_contract_kernel(ContractKernel::active_mask, out.data()) == simt::kErrorWarpMisuse);
  CHECK(contains(simt::last_error_message(), "__activemask() is not emulated"));
}

TEST_CASE("a __nanosleep spin-wait that cannot end is reported as a deadlock") {
  EmulatorSettings settings;
  std::vector<int> out(32, 0);
  const auto start = std::chrono::steady_clock::now();
  CHECK(run_contract_kernel(ContractKernel::spin_on_unset_flag, out.data()) == simt::kErrorDeadlock);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string m = simt::last_error_message();
  CAPTURE(m);
  CAPTURE(seconds);
  CHECK(contains(m, "deadlock in kernel 'spin_on_unset_flag(int*)' block (0,0,0)"));
  CHECK(contains(m, "threads (0,0,0) spin in __nanosleep without progress for 2 s"));
}

TEST_CASE("static and dynamic shared memory count together against the limits") {
  EmulatorSettings settings;
  int out = 0;
  // 40 KiB static: 8 KiB of dynamic shared memory are left of the default 48 KiB.
  CHECK_LAUNCH(run_forty_kib_static(8 * 1024, &out));
  CHECK(out == 3);
  CHECK(run_forty_kib_static(8 * 1024 + 1, &out) == cudaErrorInvalidValue);
  CHECK(contains(simt::last_error_message(), "with 40960 bytes of static shared memory"));
  // Opting in: dynamic up to 227 KiB minus the static 40 KiB.
  CHECK(set_forty_kib_static_limit(227 * 1024 - 40 * 1024 + 1) == cudaErrorInvalidValue);
  CHECK(set_forty_kib_static_limit(227 * 1024 - 40 * 1024) == cudaSuccess);
  CHECK_LAUNCH(run_forty_kib_static(227 * 1024 - 40 * 1024, &out));
  CHECK(run_forty_kib_static(227 * 1024 - 40 * 1024 + 1, &out) == cudaErrorInvalidValue);
  CHECK(set_forty_kib_static_limit(8 * 1024) == cudaSuccess);
}

TEST_CASE("an access past dynamic shared memory is a cudaError, not corruption" * doctest::skip(kAsan)) {
  // (AddressSanitizer builds give dynamic shared memory an exactly sized heap block and report the
  // overflow themselves: emulator.sanitize.dynamic_shared_overflow.)
  EmulatorSettings settings;
  for (int offset : {1, 64, 1000}) {
    CAPTURE(offset);
    simt::device_reset();
    std::vector<int> out(128, 0);
    CHECK(run_write_dynamic_shared_at(64, offset, out.data()) == cudaErrorIllegalAddress);
    const std::string m = simt::last_error_message();
    CAPTURE(m);
    CHECK(contains(m, "kernel 'write_dynamic_shared_at(int*, int)' block (0,0,0) thread"));
    CHECK(contains(m, "access past the end of the 256 bytes of dynamic shared memory"));
  }
  // The emulator is intact: after the reset the same kernel runs in bounds.
  simt::device_reset();
  std::vector<int> out(64, 0);
  CHECK_LAUNCH(run_write_dynamic_shared_at(64, 0, out.data()));
  CHECK(out[63] == 1);
}

TEST_CASE("a kernel fault is sticky, as in the CUDA runtime, until device_reset") {
  EmulatorSettings settings;
  std::vector<int> out(64, 0);
  CHECK(run_contract_kernel(ContractKernel::barrier_at_two_sites, out.data()) == simt::kErrorBarrierMisuse);
  const std::string first = simt::last_error_message();
  // Later launches do not run and return the fault; so do the error queries, which do not clear it.
  std::vector<int> probe(128, -7);
  CHECK(run_early_exit_then_barrier(128, probe.data()) == simt::kErrorBarrierMisuse);
  CHECK(probe[0] == -7);
  CHECK(contains(simt::last_error_message(), "the emulated device is unusable after an earlier kernel fault"));
  CHECK(contains(simt::last_error_message(), first.c_str()));
  CHECK(simt::device_synchronize() == simt::kErrorBarrierMisuse);
  CHECK(simt::get_last_error() == simt::kErrorBarrierMisuse);
  CHECK(simt::get_last_error() == simt::kErrorBarrierMisuse);
  CHECK(simt::peek_at_last_error() == simt::kErrorBarrierMisuse);
  CHECK(set_no_op_dynamic_shared_limit(1024) == simt::kErrorBarrierMisuse);
  // device_reset clears it, and the device works again.
  CHECK(simt::device_reset() == cudaSuccess);
  CHECK(simt::get_last_error() == cudaSuccess);
  CHECK(simt::device_synchronize() == cudaSuccess);
  CHECK_LAUNCH(run_early_exit_then_barrier(128, probe.data()));
  CHECK(probe[0] == 2 * 127 + 1);
}

TEST_CASE("a rejected launch is this thread's last error once, and not sticky") {
  EmulatorSettings settings;
  int out = 0;
  CHECK(run_no_op(dim3(1), dim3(2048), 0, &out) == cudaErrorInvalidConfiguration);
  // A later good launch neither fails nor clears the error, as in the CUDA runtime.
  CHECK_LAUNCH(run_no_op(dim3(1), dim3(32), 0, &out));
  CHECK(out == 1);
  CHECK(simt::peek_at_last_error() == cudaErrorInvalidConfiguration);
  CHECK(simt::get_last_error() == cudaErrorInvalidConfiguration);
  CHECK(simt::get_last_error() == cudaSuccess);
  CHECK(simt::device_synchronize() == cudaSuccess);
}

TEST_CASE("__noinline__ device functions compile and run") {
  EmulatorSettings settings;
  std::vector<int> out(40, 0);
  CHECK_LAUNCH(run_call_noinline(40, out.data()));
  for (int t = 0; t < 40; ++t) CHECK(out[t] == t + 1);
}
