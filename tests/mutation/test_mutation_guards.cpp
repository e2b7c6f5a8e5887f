// tests/mutation/test_mutation_guards.cpp: kernel cases the mutation suite (tests/mutation) showed missing from
// tests/kernels, run under label `kernels`. Each case names the mutants (tests/mutation/mutants/) it kills.
//   build/tests/mutation/test_mutation_guards
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/check.h"
#include "common/inputs.h"
#include "mra.h"
#include "mra/reference.h"

namespace {

// The configurations this build has (generated/registry.inc filtered by MRA_KERNELS).
struct Built {
  const char* name;
  mra_dtype dtype;
  int64_t dim;
  int32_t levels;
  int64_t s1;
};
constexpr Built kBuilt[] = {
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, dtype, dim, levels, s1},
#include "registry.inc"
#undef MRA_CONFIG
};

// Anonymous memory reserved, not committed: pages never written read as zero and cost nothing, so a tensor of
// many GiB is affordable when a test writes only a few of its rows.
class SparseBuffer {
 public:
  explicit SparseBuffer(size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<unsigned char*>(p);
  }
  ~SparseBuffer() {
    if (data_) munmap(data_, bytes_);
  }
  SparseBuffer(const SparseBuffer&) = delete;
  SparseBuffer& operator=(const SparseBuffer&) = delete;
  unsigned char* data() const { return data_; }

 private:
  size_t bytes_;
  unsigned char* data_;
};

// Stores x at element i of a 16-bit tensor and returns the value the kernel will read.
float store16(unsigned char* base, mra_dtype t, size_t i, float x) {
  if (t == MRA_DTYPE_F16) {
    const __half h = __float2half_rn(x);
    std::memcpy(base + 2 * i, &h, 2);
    return __half2float(h);
  }
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  std::memcpy(base + 2 * i, &h, 2);
  return __bfloat162float(h);
}

float load16(const unsigned char* base, mra_dtype t, size_t i) {
  if (t == MRA_DTYPE_F16) {
    __half h;
    std::memcpy(&h, base + 2 * i, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, base + 2 * i, 2);
  return __bfloat162float(h);
}

}  // namespace

// Kills offset-32bit-exact-keys and offset-32bit-pooling: element offsets key * D past 2^32. One query block
// attends to Nk = 2^32 / D + s_1 keys of which only two blocks are real: block 0 and the last block, whose
// offsets exceed 2^32 elements; K and V are reserved, not committed (8 GiB each, a few pages written). The
// last block is built to win the single refined slot (its keys lean towards the queries), so its keys are read
// exactly and its pooled mean decides the selection; block 0 enters as a coarse term. Masked keys change
// nothing (§2.2), so the output must equal the reference's on the same two blocks side by side (Nk = 2 s_1).
// A 32-bit offset reads block 0's rows in place of the last block's.
TEST_CASE("element offsets beyond 2^32 (keys past 2^32 / D)") {
  const Built* cfg = nullptr;
  for (const Built& b : kBuilt)
    if (b.levels == 2 && b.dim == 128 && b.dtype != MRA_DTYPE_F32 && (!cfg || b.s1 > cfg->s1)) cfg = &b;
  REQUIRE_MESSAGE(cfg, "no 2-level 16-bit configuration with D = 128 is built (CMake registers this test only "
                       "when there is one)");
  const int64_t D = cfg->dim, s = cfg->s1;
  const int64_t nq = s, nk = (int64_t(1) << 32) / D + s;
  const int64_t far = nk - s;  // first key of the last block: far * D >= 2^32
  INFO("configuration ", std::string(cfg->name), ", Nk ", nk, ", last block at key ", far);

  uint64_t seed = 0x6f66667365747321u;
  mra::test::Rng rng(seed);
  INFO("seed ", seed);
  SparseBuffer k(size_t(nk * D) * 2), v(size_t(nk * D) * 2);
  REQUIRE_MESSAGE(k.data() != nullptr, "cannot reserve ", nk * D * 2, " bytes of address space for K");
  REQUIRE_MESSAGE(v.data() != nullptr, "cannot reserve ", nk * D * 2, " bytes of address space for V");
  std::vector<unsigned char> q(size_t(nq * D) * 2);
  std::vector<uint8_t> kmask(size_t(nk), 0);
  // The small problem: block 0's keys, then the last block's, as floats.
  std::vector<float> qf(size_t(nq * D)), kf(size_t(2 * s * D)), vf(size_t(2 * s * D));
  const std::vector<float> lean = mra::test::noise(rng, 1, 1, 1, D);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t d = 0; d < D; ++d)
      qf[size_t(i * D + d)] = store16(q.data(), cfg->dtype, size_t(i * D + d), float(rng.normal()) + 2 * lean[size_t(d)]);
  for (int64_t half = 0; half < 2; ++half) {
    const int64_t first = half == 0 ? 0 : far;
    const float sign = half == 0 ? -1.f : 1.f;
    for (int64_t j = 0; j < s; ++j) {
      kmask[size_t(first + j)] = 1;
      for (int64_t d = 0; d < D; ++d) {
        const size_t big = size_t((first + j) * D + d), small = size_t((half * s + j) * D + d);
        kf[small] = store16(k.data(), cfg->dtype, big, float(rng.normal()) + sign * lean[size_t(d)]);
        vf[small] = store16(v.data(), cfg->dtype, big, float(rng.normal()));
      }
    }
  }

  mra_problem p{};
  p.batch = p.heads = 1;
  p.nq = nq;
  p.nk = nk;
  p.dim = D;
  p.dtype = cfg->dtype;
  p.levels = 2;
  p.resolutions[0] = s;
  p.resolutions[1] = 1;
  p.budgets[0] = 1;
  p.mode = MRA_MODE_FULL;
  size_t ws_bytes = 0;
  REQUIRE(mra_workspace_size(&p, &ws_bytes) == MRA_SUCCESS);
  std::vector<unsigned char> ws(ws_bytes), out(size_t(nq * D) * 2, 0x7b);  // 0x7b7b: a large finite poison
  REQUIRE(mra_forward_host(&p, q.data(), k.data(), v.data(), nullptr, kmask.data(), out.data(), ws.data(),
                           ws_bytes) == MRA_SUCCESS);

  mra::ref::Problem rp;
  rp.nq = nq;
  rp.nk = 2 * s;
  rp.dim = D;
  rp.q = qf.data();
  rp.k = kf.data();
  rp.v = vf.data();
  mra::ref::Config rc;
  rc.scales = {s, 1};
  rc.budgets = {1};
  const mra::ref::Selection sel = mra::ref::select(rp, rc);
  REQUIRE(sel.at(0, 0, 0) == std::vector<int64_t>{1});  // the last block is the refined one, as built
  std::vector<float> want(size_t(nq * D)), got(size_t(nq * D));
  mra::ref::attend(rp, rc, sel, want.data());
  for (size_t i = 0; i < got.size(); ++i) got[i] = load16(out.data(), cfg->dtype, i);

  // Tolerance: the output rounded once to the 16-bit type (rtol), plus f32 accumulation over 2 s_1 exact and
  // coarse terms and D-term logits of size |q||k| ~ D, through exp: a few hundred u times max|v|.
  double vmax = 0;
  for (float x : vf) vmax = std::fmax(vmax, std::fabs(x));
  const double u = 0x1.0p-24, rtol = (cfg->dtype == MRA_DTYPE_F16 ? 0x1.0p-11 : 0x1.0p-8) + 2 * u;
  const double atol = 4.0 * double(2 * s + D) * u * vmax * std::sqrt(double(D));
  const auto cmp = mra::test::compare(got.data(), want.data(), int64_t(got.size()), atol, rtol, {nq, D});
  INFO(cmp.report);
  CHECK(cmp.ok);
  CHECK(mra::test::norm2(want) > 0);
  MESSAGE(std::string(cfg->name), ": ", cmp.report);
}
