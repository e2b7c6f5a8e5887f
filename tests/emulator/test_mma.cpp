// tests/emulator/test_mma.cpp: the intrinsics layer: mma.sync m16n8k16 (f16 and bf16) against a
// plain matrix product with fragments built by hand and loaded by ldmatrix in all four storage
// layouts, ldmatrix x1/x2/x4 with and without .trans against the PTX fragment rule, and cp.async
// commit/wait groups. Part of emulator_tests (ctest -L emulator).
#include "kernels.h"
#include "support.h"

#include <random>

namespace {

// Values on a 1/8 grid in [-4, 4]: every product and partial sum is exact in f32, so the GPU and
// the emulator must both match the plain product exactly.
struct MmaCase {
  std::vector<uint16_t> A, B;  // A 16x16 row-major, B 16x8 (K x N) row-major, as 16-bit patterns
  std::vector<float> Af, Bf, C;
};

MmaCase make_case(bool bf16, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> eighths(-32, 32);
  MmaCase m;
  auto bits = [&](float v) {
    return bf16 ? __bfloat16_as_ushort(__float2bfloat16(v)) : __half_as_ushort(__float2half(v));
  };
  for (int i = 0; i < 256; ++i) {
    m.Af.push_back(static_cast<float>(eighths(rng)) / 8.0f);
    m.A.push_back(bits(m.Af.back()));
  }
  for (int i = 0; i < 128; ++i) {
    m.Bf.push_back(static_cast<float>(eighths(rng)) / 8.0f);
    m.B.push_back(bits(m.Bf.back()));
    m.C.push_back(static_cast<float>(eighths(rng)));
  }
  return m;
}

std::vector<float> plain_product(const MmaCase& m) {
  std::vector<float> D(128);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      float acc = m.C[i * 8 + j];
      for (int k = 0; k < 16; ++k) acc += m.Af[i * 16 + k] * m.Bf[k * 8 + j];
      D[i * 8 + j] = acc;
    }
  return D;
}

template <typename T>
std::vector<T> transpose(const std::vector<T>& v, int rows, int cols) {
  std::vector<T> t(v.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t[c * rows + r] = v[r * cols + c];
  return t;
}

}  // namespace

TEST_CASE("mma.sync m16n8k16 with fragments built by the PTX layout equals the plain product") {
  EmulatorSettings settings;
  for (bool bf16 : {false, true}) {
    CAPTURE(bf16);
    for (unsigned seed : {1u, 2u, 3u}) {
      const MmaCase m = make_case(bf16, seed);
      std::vector<float> D(128, -999.0f);
      CHECK_LAUNCH(run_mma_direct(bf16, m.A.data(), m.B.data(), m.C.data(), D.data(), 0));
      CHECK(D == plain_product(m));
    }
  }
}

TEST_CASE("a kernel that swaps two A fragments gets a wrong product, as on the GPU") {
  EmulatorSettings settings;
  const MmaCase m = make_case(false, 7);
  std::vector<float> D(128);
  CHECK_LAUNCH(run_mma_direct(false, m.A.data(), m.B.data(), m.C.data(), D.data(), 1));
  const auto want = plain_product(m);
  int wrong = 0;
  for (int i = 0; i < 128; ++i) wrong += D[i] != want[i];
  CHECK(wrong > 64);
}

TEST_CASE("mma.sync fed by ldmatrix from every storage layout of A and B") {
  EmulatorSettings settings;
  for (bool bf16 : {false, true})
    for (bool a_col : {false, true})
      for (bool b_col : {false, true}) {
        CAPTURE(bf16);
        CAPTURE(a_col);
        CAPTURE(b_col);
        const MmaCase m = make_case(bf16, 11);
        const auto A = a_col ? transpose(m.A, 16, 16) : m.A;
        const auto B = b_col ? transpose(m.B, 16, 8) : m.B;
        std::vector<float> D(128, -999.0f);
        CHECK_LAUNCH(run_mma_ldmatrix(bf16, a_col, b_col, A.data(), B.data(), m.C.data(), D.data()));
        CHECK(D == plain_product(m));
      }
}

TEST_CASE("ldmatrix x1, x2, x4 with and without .trans follow the PTX fragment rule") {
  EmulatorSettings settings;
  std::vector<uint16_t> in(256);
  for (int i = 0; i < 256; ++i) in[i] = static_cast<uint16_t>(0x100 + i);
  for (int num : {1, 2, 4})
    for (bool trans : {false, true}) {
      CAPTURE(num);
      CAPTURE(trans);
      std::vector<uint32_t> out(128, 0);
      CHECK_LAUNCH(run_ldmatrix_dump(num, trans, in.data(), out.data()));
      int wrong = 0;
      for (unsigned lane = 0; lane < 32; ++lane)
        for (int m = 0; m < 4; ++m) {
          // Thread lane holds row lane/4, columns 2(lane%4) and 2(lane%4)+1 of each matrix (of
          // the transposed matrix with .trans); matrix m is rows 8m..8m+7 of the input.
          const unsigned g = lane / 4, t = lane % 4;
          auto at = [&](unsigned r, unsigned c) { return static_cast<uint32_t>(in[(8 * m + r) * 8 + c]); };
          uint32_t want = 0xdeadbeefu;
          if (m < num) want = trans ? at(2 * t, g) | (at(2 * t + 1, g) << 16) : at(g, 2 * t) | (at(g, 2 * t + 1) << 16);
          wrong += out[lane * 4 + m] != want;
        }
      CHECK(wrong == 0);
    }
}

TEST_CASE("cp.async copies land at the wait that covers their group") {
  EmulatorSettings settings;
  const unsigned threads = 64;
  std::vector<int4> in(2 * threads);
  for (unsigned i = 0; i < in.size(); ++i) in[i] = make_int4(1000 + static_cast<int>(i), 0, 0, 0);
  for (const auto& s : all_schedules()) {
    settings.use(s);
    CAPTURE(s.name);
    std::vector<int> out(threads * 6, 0);
    CHECK_LAUNCH(run_cp_async_groups(threads, in.data(), out.data()));
    for (unsigned t = 0; t < threads; ++t) {
      CAPTURE(t);
      const int first = 1000 + 2 * static_cast<int>(t), second = first + 1;
      CHECK(out[t * 6 + 0] == -1);  // still the poison of fresh dynamic shared memory
      CHECK(out[t * 6 + 1] == -1);
      CHECK(out[t * 6 + 2] == first);
      CHECK(out[t * 6 + 3] == -1);
      CHECK(out[t * 6 + 4] == first);
      CHECK(out[t * 6 + 5] == second);
    }
  }
}

TEST_CASE("cp.async of 4, 8 and 16 bytes, with a zero-filled tail") {
  EmulatorSettings settings;
  const unsigned threads = 64;
  std::vector<int> in(threads * 8);
  for (unsigned i = 0; i < in.size(); ++i) in[i] = static_cast<int>(i / 8 * 100 + i % 8);
  for (unsigned src_bytes : {16u, 8u, 0u}) {
    CAPTURE(src_bytes);
    std::vector<int> out(threads * 8, -5);
    CHECK_LAUNCH(run_cp_async_sizes(threads, in.data(), src_bytes, out.data()));
    for (unsigned t = 0; t < threads; ++t) {
      const int n = static_cast<int>((t + 1) % threads);
      for (unsigned k = 0; k < 8; ++k) {
        int want = n * 100 + static_cast<int>(k);
        if (k == 1 || (k >= 4 && (k - 4) * 4 >= src_bytes)) want = 0;
        CHECK(out[t * 8 + k] == want);
      }
    }
  }
}
