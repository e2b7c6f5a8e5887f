// tests/emulator/test_basics.cpp: indices, static and dynamic shared memory, __syncthreads (and
// threads that exit before one), barrier predicates, schedules and a race they expose, spin-waits, fiber stacks.
// Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

#include <numeric>

TEST_CASE("threadIdx, blockIdx, blockDim and gridDim in a 3-D launch") {
  EmulatorSettings settings;
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const unsigned per_block = 24, blocks = 12;
  std::vector<unsigned> out(8 * per_block * blocks, 0xFFFFFFFFu);
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    CHECK_LAUNCH(run_write_indices(grid, block, out.data()));
    unsigned wrong = 0;
    for (unsigned bz = 0; bz < 2; ++bz)
      for (unsigned by = 0; by < 2; ++by)
        for (unsigned bx = 0; bx < 3; ++bx)
          for (unsigned tz = 0; tz < 2; ++tz)
            for (unsigned ty = 0; ty < 3; ++ty)
              for (unsigned tx = 0; tx < 4; ++tx) {
                const unsigned b = bx + 3 * (by + 2 * bz), t = tx + 4 * (ty + 3 * tz);
                const unsigned* o = &out[8 * (b * per_block + t)];
                const unsigned expect[8] = {tx, ty, tz, bx, by, bz, 4 * 10000 + 3 * 100 + 2, 3 * 10000 + 2 * 100 + 2};
                for (int k = 0; k < 8; ++k) wrong += o[k] != expect[k];
              }
    CHECK(wrong == 0);
  }
}

TEST_CASE("static __shared__ is one instance per block, also with two worker threads") {
  EmulatorSettings settings;
  const unsigned blocks = 16, threads = 96;
  std::vector<int> values(blocks * threads);
  std::iota(values.begin(), values.end(), -500);
  for (unsigned workers : {1u, 2u}) {
    simt::set_worker_threads(workers);
    CAPTURE(workers);
    std::vector<int> sums(blocks, -1);
    std::vector<unsigned> counts(blocks, 0);
    CHECK_LAUNCH(run_count_threads_in_block(blocks, threads, values.data(), sums.data(), counts.data()));
    for (unsigned b = 0; b < blocks; ++b) {
      CAPTURE(b);
      CHECK(counts[b] == threads);
      CHECK(sums[b] == std::accumulate(values.begin() + b * threads, values.begin() + (b + 1) * threads, 0));
    }
  }
}

TEST_CASE("dynamic shared memory with a partial last warp and a ragged tail") {
  EmulatorSettings settings;
  const unsigned threads = 96, blocks = 3;
  const int n = 250;  // the last block is partly out of range
  std::vector<float> in(n), out(n, -1.0f);
  std::iota(in.begin(), in.end(), 1.0f);
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::fill(out.begin(), out.end(), -1.0f);
    CHECK_LAUNCH(run_reverse_in_block(blocks, threads, in.data(), out.data(), n));
    for (int i = 0; i < n; ++i) {
      const int base = i / static_cast<int>(threads) * static_cast<int>(threads);
      const int src = base + static_cast<int>(threads) - 1 - (i - base);
      CHECK(out[i] == (src < n ? in[src] : -1.0f));
    }
  }
}

TEST_CASE("dynamic shared memory at the sm_90 limits") {
  EmulatorSettings settings;
  unsigned errors = 0;
  SUBCASE("48 KiB without opting in") {
    CHECK(set_fill_dynamic_shared_limit(static_cast<int>(simt::kDefaultDynamicSharedBytes)) == cudaSuccess);
    CHECK_LAUNCH(run_fill_dynamic_shared(2, 256, static_cast<unsigned>(simt::kDefaultDynamicSharedBytes), &errors));
    CHECK(errors == 0);
    CHECK(run_fill_dynamic_shared(1, 256, static_cast<unsigned>(simt::kDefaultDynamicSharedBytes) + 1, &errors) ==
          cudaErrorInvalidValue);
    CHECK(simt::last_error_message().find("49153") != std::string::npos);
  }
  SUBCASE("227 KiB after opting in, one byte more is refused") {
    const int max = static_cast<int>(simt::kMaxDynamicSharedBytesOptIn);
    CHECK(set_fill_dynamic_shared_limit(max) == cudaSuccess);
    CHECK_LAUNCH(run_fill_dynamic_shared(2, 1024, static_cast<unsigned>(max), &errors));
    CHECK(errors == 0);
    CHECK(run_fill_dynamic_shared(1, 1024, static_cast<unsigned>(max) + 1, &errors) == cudaErrorInvalidValue);
    CHECK(set_fill_dynamic_shared_limit(max + 1) == cudaErrorInvalidValue);
    CHECK(set_fill_dynamic_shared_limit(-1) == cudaErrorInvalidValue);
    CHECK(set_fill_dynamic_shared_limit(static_cast<int>(simt::kDefaultDynamicSharedBytes)) == cudaSuccess);
  }
}

TEST_CASE("a shared-memory tree reduction is correct under every schedule") {
  EmulatorSettings settings;
  const unsigned blocks = 6;
  std::vector<int> in(blocks * 256);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>((i * 2654435761u) % 1000) - 500;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(blocks, 0x7fffffff);
    CHECK_LAUNCH(run_tree_sum(blocks, in.data(), out.data()));
    for (unsigned b = 0; b < blocks; ++b)
      CHECK(out[b] == std::accumulate(in.begin() + b * 256, in.begin() + (b + 1) * 256, 0));
  }
}

TEST_CASE("a missing __syncthreads shows up as a difference between schedules") {
  EmulatorSettings settings;
  const unsigned threads = 64;
  std::vector<int> in(threads);
  std::iota(in.begin(), in.end(), 1000);
  auto run = [&](bool with_barrier, const NamedSchedule& s) {
    settings.use(s);
    std::vector<int> out(threads, 0);
    CHECK_LAUNCH(run_rotate(with_barrier, threads, in.data(), out.data()));
    return out;
  };
  std::vector<int> expected(threads);
  for (unsigned t = 0; t < threads; ++t) expected[t] = in[(t + 1) % threads];

  const auto& schedules = all_schedules();
  for (const auto& s : schedules) CHECK(run(true, s) == expected);

  // Without the barrier, each schedule lets a different subset of threads read before their
  // neighbour wrote; the ascending order reads almost only unwritten (poisoned) memory.
  const auto ascending = run(false, schedules[0]);
  const auto descending = run(false, schedules[1]);
  CHECK(ascending != descending);
  CHECK(ascending != expected);
  CHECK(ascending[0] == -1);  // 0xFF-poisoned dynamic shared memory
}

TEST_CASE("a __syncthreads that threads skip by exiting is reported, whatever the order") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    simt::device_reset();
    std::vector<int> out(128, -7);
    CHECK_LAUNCH(run_early_exit_then_barrier(128, out.data()));
    for (int t = 0; t < 128; ++t) CHECK(out[t] == 2 * (127 - t) + 1);
    for (int n : {1, 31, 33, 100, 127}) {
      CAPTURE(n);
      simt::device_reset();
      CHECK(run_early_exit_then_barrier(n, out.data()) == simt::kErrorBarrierMisuse);
      const std::string m = simt::last_error_message();
      CAPTURE(m);
      CHECK(m.find("kernel 'early_exit_then_barrier(int, int*)' block (0,0,0)") != std::string::npos);
      CHECK(m.find("every thread of a block must reach each __syncthreads") != std::string::npos);
      CHECK(m.find("basics.cu:") != std::string::npos);
    }
  }
}

TEST_CASE("__syncthreads_count, __syncthreads_and and __syncthreads_or") {
  EmulatorSettings settings;
  const unsigned threads = 100;
  std::vector<int> out(threads * 5, -1);
  CHECK_LAUNCH(run_barrier_predicates(threads, out.data()));
  for (unsigned t = 0; t < threads; ++t) {
    CAPTURE(t);
    CHECK(out[t * 5 + 0] == 34);
    CHECK(out[t * 5 + 1] == 1);
    CHECK(out[t * 5 + 2] == 0);
    CHECK(out[t * 5 + 3] == 1);
    CHECK(out[t * 5 + 4] == 0);
  }
}

TEST_CASE("a spin-wait that yields with __nanosleep makes progress") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(64, 0);
    CHECK_LAUNCH(run_spin_until_published(64, out.data()));
    for (int v : out) CHECK(v == 42);
  }
}

TEST_CASE("fiber stacks hold large per-thread arrays, at any configured size") {
  EmulatorSettings settings;
  std::vector<int> expected(64);
  for (int t = 0; t < 64; ++t) {
    int acc = 0;
    for (int i = 0; i < 4096; i += 7) acc += i ^ t;
    expected[t] = acc;
  }
  for (size_t stack : {size_t{0}, size_t{48 * 1024}, size_t{1024 * 1024}}) {
    CAPTURE(stack);
    simt::set_stack_size(stack);
    std::vector<int> out(64, 0);
    CHECK_LAUNCH(run_large_local_array(64, out.data()));
    CHECK(out == expected);
  }
}
