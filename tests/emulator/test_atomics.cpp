// tests/emulator/test_atomics.cpp: contended atomics of every kind across blocks running on two
// worker threads at once, and the "last block done" pattern. Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

TEST_CASE("contended atomics on global and shared memory") {
  EmulatorSettings settings;
  const unsigned blocks = 24, threads = 128, n = blocks * threads;
  for (unsigned workers : {1u, 2u}) {
    simt::set_worker_threads(workers);
    CAPTURE(workers);
    AtomicCounters c{};
    c.i_max = -1;
    c.i_min = 1;
    c.u_min = 0xFFFFFFFFu;
    c.ll_max = -1;
    c.ull_min = ~0ull;
    c.u_and = 0xFFFFFFFFu;
    c.i_exch = -1;
    c.h_add = __float2half(0.0f);
    std::vector<int> totals(blocks, 0);
    CHECK_LAUNCH(run_contended_atomics(blocks, threads, &c, totals.data()));
    CHECK(c.i_add == static_cast<int>(n));
    CHECK(c.i_sub == -2 * static_cast<int>(n));
    CHECK(c.u_add == 3 * n);
    CHECK(c.ull_add == (static_cast<unsigned long long>(n) << 33));
    CHECK(c.f_add == static_cast<float>(n));
    CHECK(c.d_add == 0.5 * n);
    CHECK(c.i_max == static_cast<int>(n) - 1);
    CHECK(c.i_min == -(static_cast<int>(n) - 1));
    CHECK(c.u_max == 2 * (n - 1));
    CHECK(c.u_min == 5u);
    CHECK(c.ll_max == static_cast<long long>(n - 1) << 33);
    CHECK(c.ull_min == 9ull);
    CHECK(c.u_or == 0xFFFFFFFFu);
    unsigned x = 0;
    for (unsigned i = 0; i < n; ++i) x ^= i;
    CHECK(c.u_xor == x);
    CHECK(c.u_and == 0x80000000u);
    CHECK(c.u_inc == n % 10);
    CHECK(c.i_exch >= 0);
    CHECK(c.i_exch < static_cast<int>(n));
    CHECK(c.i_cas == 7 * static_cast<int>(n));
    CHECK(__half2float(c.h_add) == 2048.0f);  // 1 + 2048 rounds back to 2048 in fp16
    for (unsigned b = 0; b < blocks; ++b) {
      const int first = static_cast<int>(b * threads), last = first + static_cast<int>(threads) - 1;
      CHECK(totals[b] == (first + last) * static_cast<int>(threads) / 2);
    }
  }
}

TEST_CASE("the last block to finish sums the partial results of all blocks") {
  EmulatorSettings settings;
  const unsigned blocks = 20;
  std::vector<int> in(blocks * 128);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i % 17) - 8;
  int expected = 0;
  for (int v : in) expected += v;
  for (unsigned workers : {1u, 2u}) {
    simt::set_worker_threads(workers);
    for (const auto& s : all_schedules()) {
      settings.use(s);
      CAPTURE(s.name);
      std::vector<int> partials(blocks, 0);
      unsigned ticket = 0;
      int total = 0x12345;
      CHECK_LAUNCH(run_last_block_sums(blocks, in.data(), partials.data(), &ticket, &total));
      CHECK(total == expected);
      CHECK(ticket == blocks);  // atomicInc wraps only once the old value reaches the limit
    }
  }
}
