// tests/emulator/test_warp.cpp: warp shuffles (every mode and width, partial and divergent masks,
// only warp 0 shuffling), votes, match, reduce, __syncwarp and partial warps, checked against a
// model of the CUDA/PTX rules. Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

#include <cstring>

TEST_CASE("block sum whose butterfly only warp 0 executes") {
  EmulatorSettings settings;
  for (unsigned threads : {96u, 256u, 1024u}) {
    CAPTURE(threads);
    const unsigned blocks = 5;
    std::vector<float> in(blocks * threads);
    unsigned nonzero_expected = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = (i % 7 == 0) ? 0.0f : static_cast<float>(static_cast<int>(i % 13) - 6);
      nonzero_expected += in[i] != 0.0f;
    }
    for (const auto& s : all_schedules()) {
      settings.use(s);
      CAPTURE(s.name);
      std::vector<float> out(blocks, -1.0f);
      unsigned nonzero = 0;
      CHECK_LAUNCH(run_block_sum_warp0_butterfly(blocks, threads, in.data(), out.data(), &nonzero));
      CHECK(nonzero == nonzero_expected);
      for (unsigned b = 0; b < blocks; ++b) {
        float sum = 0;
        for (unsigned t = 0; t < threads; ++t) sum += in[b * threads + t];
        CHECK(out[b] == sum);
      }
    }
  }
}

TEST_CASE("disjoint partial masks in divergent branches run side by side") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(64, -1);
    CHECK_LAUNCH(run_divergent_half_masks(64, out.data()));
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32;
      int expect;
      if (lane < 16) {
        expect = (lane ^ 1) * 10;
        if (lane < 8) expect += ((7 - lane) ^ 1) * 10;
      } else {
        expect = lane + 2 <= 31 ? (lane + 2) * 10 : lane * 10;
      }
      CAPTURE(t);
      CHECK(out[t] == expect);
    }
  }
}

namespace {

// CUDA's shuffle rules per width-sized segment. The offset and source lane only count modulo 32,
// because the PTX instruction takes the low five bits of them.
int model_shuffle(int mode, int lane, int offset, int width, const int* v) {
  const int b = offset & 31;
  const int start = lane / width * width, end = start + width;
  switch (mode) {
    case 0: return v[start + b % width];
    case 1: return lane - start >= b ? v[lane - b] : v[lane];
    case 2: return lane + b < end ? v[lane + b] : v[lane];
    default: return (lane ^ b) < end ? v[lane ^ b] : v[lane];
  }
}

}  // namespace

TEST_CASE("__shfl_sync, _up, _down and _xor at every width, including offsets past the segment") {
  EmulatorSettings settings;
  const int widths[6] = {1, 2, 4, 8, 16, 32};
  const int offsets[kShuffleOffsets] = {0, 1, 3, 5, 16, 31, 33};
  int v[32];
  for (int l = 0; l < 32; ++l) v[l] = 100 + l;
  const int stride = 6 * kShuffleOffsets * 32;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(4 * stride, -1);
    CHECK_LAUNCH(run_shuffle_modes(out.data()));
    int wrong = 0;
    for (int mode = 0; mode < 4; ++mode)
      for (int w = 0; w < 6; ++w)
        for (int o = 0; o < kShuffleOffsets; ++o)
          for (int lane = 0; lane < 32; ++lane) {
            const int got = out[mode * stride + (w * kShuffleOffsets + o) * 32 + lane];
            const int want = model_shuffle(mode, lane, offsets[o], widths[w], v);
            if (got != want) {
              ++wrong;
              MESSAGE("mode ", mode, " width ", widths[w], " offset ", offsets[o], " lane ", lane, ": got ", got, " want ", want);
            }
          }
    CHECK(wrong == 0);
  }
}

TEST_CASE("shuffles of double, __half2 and __nv_bfloat16") {
  EmulatorSettings settings;
  double d[32];
  __half2 h[32];
  __nv_bfloat16 b[32];
  std::memset(static_cast<void*>(h), 0, sizeof h);
  std::memset(static_cast<void*>(b), 0, sizeof b);
  CHECK_LAUNCH(run_shuffle_wide_types(d, h, b));
  for (unsigned lane = 0; lane < 32; ++lane) {
    CAPTURE(lane);
    const unsigned x = lane ^ 3u;
    CHECK(d[lane] == 1.5 * x + 1e-12 * x);
    CHECK(__low2float(h[lane]) == static_cast<float>(31 - lane));
    CHECK(__high2float(h[lane]) == -static_cast<float>(31 - lane));
    CHECK(__bfloat162float(b[lane]) == static_cast<float>(lane == 0 ? 0 : lane - 1) * 0.25f);
  }
}

TEST_CASE("__ballot_sync, __any_sync, __all_sync and __match_any_sync, full and partial masks") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<unsigned> out(64 * 6, 0xFFFFFFFFu);
    CHECK_LAUNCH(run_votes(64, out.data()));
    unsigned thirds = 0, odd_high = 0;
    for (unsigned l = 0; l < 32; l += 3) thirds |= 1u << l;
    for (unsigned l = 21; l < 32; l += 2) odd_high |= 1u << l;
    for (unsigned t = 0; t < 64; ++t) {
      const unsigned lane = t % 32;
      const unsigned* o = &out[t * 6];
      CAPTURE(t);
      CHECK(o[0] == thirds);
      CHECK(o[1] == 1u);
      CHECK(o[2] == 0u);
      CHECK(o[3] == (lane % 2 ? odd_high : 0x5u));
      CHECK(o[4] == (lane % 2 ? 1u : 0u));
      CHECK(o[5] == 0xFu << (4 * (lane / 4)));
    }
  }
}

TEST_CASE("a partial warp completes full-mask operations, exited lanes do not vote") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<unsigned> out(40 * 3, 0xabcdu);
    CHECK_LAUNCH(run_partial_warp(out.data()));
    for (unsigned t = 0; t < 40; ++t) {
      CAPTURE(t);
      CHECK(out[t * 3 + 0] == (t < 32 ? 528u : 36u));
      CHECK(out[t * 3 + 1] == (t < 32 ? 93u : 21u));
      CHECK(out[t * 3 + 2] == (t < 32 ? 0xFFFFFFFFu : t < 36 ? 0xFu : 0xabcdu));
    }
  }
}

TEST_CASE("a lane that exits while its warp waits in a warp operation counts as arrived") {
  EmulatorSettings settings;
  const int unwritten = 0x5a5a5a5a;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(64 * 3, unwritten);
    CHECK_LAUNCH(run_lane_exits_while_warp_waits(out.data()));
    for (int t = 0; t < 64; ++t) {
      CAPTURE(t);
      const int* o = &out[static_cast<size_t>(t) * 3];
      if (t % 32 == 31) {
        CHECK(o[0] == unwritten);
        CHECK(o[2] == unwritten);
      } else if (t < 32) {
        CHECK(o[0] == (t == 30 ? -1 : (t + 1) * 10));  // lane 30 reads the exited lane 31: poison
        CHECK(static_cast<unsigned>(o[1]) == 0x7FFFFFFFu);
        CHECK(o[2] == 1);
      } else {
        CHECK(static_cast<unsigned>(o[0]) == 0x49249249u);  // lanes 0, 3, ..., 30: lane 30 voted
        CHECK(o[2] == 1);
      }
    }
  }
}

TEST_CASE("__syncwarp orders shared-memory exchanges within a warp") {
  EmulatorSettings settings;
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(64, 0);
    CHECK_LAUNCH(run_syncwarp_exchange(out.data()));
    for (int t = 0; t < 64; ++t) {
      const int base = t / 32 * 32, partner = base + (31 - t % 32);
      const int src = base + (partner % 32 + 5) % 32;
      CHECK(out[t] == src * src + 1);
    }
  }
}
