// tests/emulator/test_errors.cpp: what a launch returns when the kernel cannot complete (deadlocks
// named by kernel, block and threads), misuses a warp operation or traps, and when the CUDA runtime
// would reject the configuration. Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// A fault is sticky (test_contract.cpp checks how); after device_reset() the emulator works again.
void check_recovers() {
  std::vector<int> out(128, 0);
  CHECK(run_early_exit_then_barrier(128, out.data()) != cudaSuccess);
  CHECK(out[0] == 0);
  simt::device_reset();
  CHECK_LAUNCH(run_early_exit_then_barrier(128, out.data()));
  CHECK(out[0] == 2 * 127 + 1);
}

}  // namespace

TEST_CASE("a full-mask shuffle that half the warp skips is reported as a deadlock") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(128, 0);
    CHECK(run_error_kernel(ErrorKernel::shuffle_half_warp, out.data()) == simt::kErrorDeadlock);
    const std::string m = simt::last_error_message();
    CAPTURE(m);
    CHECK(contains(m, "deadlock_shuffle_half_warp"));
    CHECK(contains(m, "block (0,0,0)"));
    CHECK(contains(m, "threads (16,0,0)-(31,0,0), (48,0,0)-(63,0,0) wait at __syncthreads"));
    CHECK(contains(m, "warp 0: threads (0,0,0)-(15,0,0) wait in a warp operation with mask 0xffffffff for threads (16,0,0)-(31,0,0)"));
    check_recovers();
  }
}

TEST_CASE("__syncthreads against a __syncwarp that needs the waiting thread") {
  EmulatorSettings settings;
  std::vector<int> out(32, 0);
  CHECK(run_error_kernel(ErrorKernel::barrier_vs_syncwarp, out.data()) == simt::kErrorDeadlock);
  const std::string m = simt::last_error_message();
  CAPTURE(m);
  CHECK(contains(m, "deadlock_barrier_vs_syncwarp"));
  CHECK(contains(m, "threads (0,0,0) wait at __syncthreads (1 of 2 live threads arrived) at errors.cu:"));
  CHECK(contains(m, "threads (1,0,0) wait in a warp operation with mask 0x00000003 for threads (0,0,0)"));
  check_recovers();
}

TEST_CASE("threads that reach __syncthreads a different number of times") {
  EmulatorSettings settings;
  std::vector<int> out(8, 0);
  CHECK(run_error_kernel(ErrorKernel::uneven_barriers, out.data()) == simt::kErrorDeadlock);
  const std::string m = simt::last_error_message();
  CAPTURE(m);
  CHECK(contains(m, "threads (0,0,0)-(2,0,0), (4,0,0)-(7,0,0) wait at __syncthreads (7 of 8 live threads arrived)"));
  CHECK(contains(m, "threads (3,0,0) wait in a warp operation with mask 0x0000000c for threads (2,0,0)"));
  check_recovers();
}

TEST_CASE("warp operations used against their rules") {
  EmulatorSettings settings;
  std::vector<int> out(128, 0);
  SUBCASE("a mask that leaves out the calling lane") {
    CHECK(run_error_kernel(ErrorKernel::mask_without_caller, out.data()) == simt::kErrorWarpMisuse);
    CHECK(contains(simt::last_error_message(), "thread (7,0,0): warp operation with mask 0x00000001 that leaves out the calling lane"));
  }
  SUBCASE("different operations under one mask") {
    CHECK(run_error_kernel(ErrorKernel::mixed_operations, out.data()) == simt::kErrorWarpMisuse);
    CHECK(contains(simt::last_error_message(), "through different operations"));
  }
  check_recovers();
}

TEST_CASE("__trap aborts the launch and names the block and thread") {
  EmulatorSettings settings;
  for (unsigned workers : {1u, 2u}) {
    simt::set_worker_threads(workers);
    std::vector<int> out(128, 0);
    CHECK(run_error_kernel(ErrorKernel::trap, out.data()) == simt::kErrorTrap);
    const std::string m = simt::last_error_message();
    CAPTURE(m);
    CHECK(contains(m, "trap_in_block_two"));
    CHECK(contains(m, "block (2,0,0) thread (5,0,0): __trap() called"));
    check_recovers();
  }
}

TEST_CASE("launch configurations the CUDA runtime rejects") {
  EmulatorSettings settings;
  int out = 0;
  CHECK_LAUNCH(run_no_op(dim3(1), dim3(1024), 0, &out));
  CHECK_LAUNCH(run_no_op(dim3(1), dim3(2, 8, 64), 0, &out));
  CHECK_LAUNCH(run_no_op(dim3(2, 65535, 1), dim3(1), 0, &out));
  CHECK(out == 1);
  for (dim3 block : {dim3(1025), dim3(0), dim3(1, 0, 1), dim3(1, 1, 65), dim3(1, 2048, 1), dim3(64, 4, 8)}) {
    CAPTURE(block.x);
    CAPTURE(block.y);
    CAPTURE(block.z);
    CHECK(run_no_op(dim3(1), block, 0, &out) == cudaErrorInvalidConfiguration);
    CHECK(contains(simt::last_error_message(), "exceeds the sm_90 limits"));
  }
  for (dim3 grid : {dim3(0), dim3(1, 65536, 1), dim3(1, 1, 65536), dim3(0x80000000u)}) {
    CAPTURE(grid.x);
    CHECK(run_no_op(grid, dim3(32), 0, &out) == cudaErrorInvalidConfiguration);
  }
  CHECK(run_no_op(dim3(1), dim3(32), simt::kDefaultDynamicSharedBytes + 1, &out) == cudaErrorInvalidValue);
  CHECK(set_no_op_dynamic_shared_limit(static_cast<int>(simt::kMaxDynamicSharedBytesOptIn) + 1) == cudaErrorInvalidValue);
  CHECK(set_no_op_dynamic_shared_limit(64 * 1024) == cudaSuccess);
  CHECK_LAUNCH(run_no_op(dim3(1), dim3(32), 64 * 1024, &out));
  CHECK(run_no_op(dim3(1), dim3(32), 64 * 1024 + 1, &out) == cudaErrorInvalidValue);
  CHECK(set_no_op_dynamic_shared_limit(static_cast<int>(simt::kDefaultDynamicSharedBytes)) == cudaSuccess);
  CHECK_LAUNCH(run_no_op(dim3(1), dim3(32), 0, &out));
  CHECK(simt::last_error_message().empty());
}
