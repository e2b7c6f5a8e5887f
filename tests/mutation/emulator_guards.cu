// tests/mutation/emulator_guards.cu: emulator cases the mutation suite (tests/mutation) showed missing from
// tests/emulator, run under label `emulator`; each names the mutants (tests/mutation/mutants/) it kills. A CUDA
// source compiled as C++ against runtime/simt, like the kernels of tests/emulator.
//   build/tests/mutation/test_emulator_guards
#include "common/doctest.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "simt/simt.h"

namespace {

// Lanes 0-15 shuffle under the mask of lanes 0-15 from lane + 16, which is outside the mask; lanes 16-31 shuffle
// among themselves from lane - 16 + 16 (inside their own mask). Integer and float operands.
__global__ void shuffle_from_outside_the_mask(int* ints, float* floats) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const unsigned mask = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  const int src = lane < 16 ? lane + 16 : 16 + (lane + 1) % 16;
  ints[lane] = __shfl_sync(mask, 100 + lane, src);
  floats[lane] = __shfl_sync(mask, 0.5f + static_cast<float>(lane), src);
}

}  // namespace

// Kills emu-shfl-inactive-source (docs/emulator.md, "Warp operations": a shuffle that reads a lane outside the
// participating lanes receives poison, all bytes 0xFF).
TEST_CASE("a shuffle from a lane outside its mask receives poison, not a value") {
  int ints[32];
  float floats[32];
  std::memset(ints, 0, sizeof ints);
  std::memset(floats, 0, sizeof floats);
  REQUIRE(simt::launch(shuffle_from_outside_the_mask, dim3(1), dim3(32), 0, nullptr, ints, floats) == cudaSuccess);
  for (int lane = 0; lane < 32; ++lane) {
    CAPTURE(lane);
    if (lane < 16) {
      CHECK(ints[lane] == -1);
      CHECK(std::isnan(floats[lane]));
    } else {
      const int src = 16 + (lane + 1) % 16;
      CHECK(ints[lane] == 100 + src);
      CHECK(floats[lane] == 0.5f + static_cast<float>(src));
    }
  }
}
