// tests/mutation/test_mutation_guards.cpp: kernel cases the mutation suite (tests/mutation) showed missing from
// tests/kernels, run under label `kernels`. Each case names the mutants (tests/mutation/mutants/) it kills.
//   build/tests/mutation/test_mutation_guards
#include "common/doctest.h"

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
#include "common/problem.h"
#include "mra.h"
#include "mra/reference.h"

namespace {

// The configurations this build has (generated/registry.inc filtered by MRA_KERNELS).
struct Built {
  const char* name;
  mra_dtype dtype;
  int64_t dim;
  int32_t levels;
  int64_t s1, s2;
};
constexpr Built kBuilt[] = {
#define MRA_CONFIG(name, dtype, dim, levels, s1, s2, s3, s4) {#name, dtype, dim, levels, s1, s2},
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

// Stores x at element i of a tensor of dtype t and returns the value the kernel will read.
float store(unsigned char* base, mra_dtype t, size_t i, float x) {
  if (t == MRA_DTYPE_F32) {
    std::memcpy(base + 4 * i, &x, 4);
    return x;
  }
  if (t == MRA_DTYPE_F16) {
    const __half h = __float2half_rn(x);
    std::memcpy(base + 2 * i, &h, 2);
    return __half2float(h);
  }
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  std::memcpy(base + 2 * i, &h, 2);
  return __bfloat162float(h);
}

float load(const unsigned char* base, mra_dtype t, size_t i) {
  if (t == MRA_DTYPE_F32) {
    float x;
    std::memcpy(&x, base + 4 * i, 4);
    return x;
  }
  if (t == MRA_DTYPE_F16) {
    __half h;
    std::memcpy(&h, base + 2 * i, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, base + 2 * i, 2);
  return __bfloat162float(h);
}


// The reference's view of one batch and head of Nq queries and Nk keys and values in f32.
mra::ref::Problem ref_problem(int64_t nq, int64_t nk, int64_t dim, const std::vector<float>& q,
                              const std::vector<float>& k, const std::vector<float>& v) {
  return mra::ref::Problem::of(1, 1, nq, nk, dim, q.data(), k.data(), v.data());
}

double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float e : x) m = std::fmax(m, std::fabs(e));
  return m;
}

// The one comparison rule on every element of the [Nq, D] output, reported; a zero reference would pass anything.
void check_output(const Built& cfg, const std::vector<float>& got, const std::vector<float>& want, double atol,
                  double rtol, int64_t nq, int64_t dim) {
  const auto cmp = mra::test::compare(got.data(), want.data(), int64_t(got.size()), atol, rtol, {nq, dim});
  INFO(cmp.report);
  CHECK(cmp.ok);
  CHECK(mra::test::norm2(want) > 0);
  MESSAGE(std::string(cfg.name), ": ", cmp.report);
}

}  // namespace

// Kills offset-32bit-exact-keys and offset-32bit-pooling: element offsets key * s_N past 2^32. One query block
// attends to two key blocks, Nk = 2 s_1, with K and V given a row stride s_N = 2^32 / s_1 elements (§8), so the
// first key of block 1 lies 2^32 elements past key 0. Every key row the kernels read is addressed as
// row0 + j * s_N (Rows::row, common.cuh), a contiguous tensor's rows alike with s_N = D, so a row past 2^32
// elements is the same product whether it comes from a large stride or from 2^32 / D keys: this geometry needs
// 2 s_1 keys where a contiguous one needs 2^32 / D (2^25 keys at D = 128, whose pooling and level-1 selection
// over 2^19 key blocks took minutes of emulation). K and V are reserved, not committed (16 GiB each, 2 s_1 rows
// written). Block 1 is built to win the single refined slot (its keys lean towards the queries), so its keys are
// read exactly and its pooled mean decides the selection; block 0 enters as a coarse term. The output must equal
// the reference's on the same two blocks stored contiguously. A 32-bit offset reads block 0's rows in place of
// block 1's (s_1 * s_N = 2^32 wraps to 0).
TEST_CASE("element offsets beyond 2^32 (key rows past 2^32 elements)") {
  const Built* cfg = nullptr;
  for (const Built& b : kBuilt)
    if (b.levels == 2 && b.dtype != MRA_DTYPE_F32 && (!cfg || b.dim < cfg->dim)) cfg = &b;
  REQUIRE_MESSAGE(cfg, "no 2-level 16-bit configuration is built (CMake registers this test only when there is one)");
  const int64_t D = cfg->dim, s = cfg->s1;
  const int64_t nq = s, nk = 2 * s, stride = (int64_t(1) << 32) / s;  // a multiple of 8 elements (16 bytes): §8
  INFO("configuration ", std::string(cfg->name), ", key row stride ", stride, " elements");

  uint64_t seed = 0x6f66667365747321u;
  mra::test::Rng rng(seed);
  INFO("seed ", seed);
  const size_t span = size_t((nk - 1) * stride + D);  // elements from key 0 to the end of the last key row
  SparseBuffer k(span * 2), v(span * 2);
  REQUIRE_MESSAGE(k.data() != nullptr, "cannot reserve ", span * 2, " bytes of address space for K");
  REQUIRE_MESSAGE(v.data() != nullptr, "cannot reserve ", span * 2, " bytes of address space for V");
  std::vector<unsigned char> q(size_t(nq * D) * 2);
  // The same problem stored contiguously, as floats: block 0's keys, then block 1's.
  std::vector<float> qf(size_t(nq * D)), kf(size_t(nk * D)), vf(size_t(nk * D));
  const std::vector<float> lean = mra::test::noise(rng, 1, 1, 1, D);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t d = 0; d < D; ++d)
      qf[size_t(i * D + d)] = store(q.data(), cfg->dtype, size_t(i * D + d), float(rng.normal()) + 2 * lean[size_t(d)]);
  for (int64_t j = 0; j < nk; ++j) {
    const float sign = j < s ? -1.f : 1.f;
    for (int64_t d = 0; d < D; ++d) {
      const size_t big = size_t(j * stride + d), small = size_t(j * D + d);
      kf[small] = store(k.data(), cfg->dtype, big, float(rng.normal()) + sign * lean[size_t(d)]);
      vf[small] = store(v.data(), cfg->dtype, big, float(rng.normal()));
    }
  }

  mra_problem p = mra::test::mra_problem_of(1, 1, nq, nk, D, cfg->dtype, {s, 1}, {1});
  const int64_t contiguous[4] = {nq * D, nq * D, D, 1}, strided[4] = {nk * stride, nk * stride, stride, 1};
  for (int i = 0; i < 4; ++i) {
    p.strides.q[i] = p.strides.out[i] = contiguous[i];
    p.strides.k[i] = p.strides.v[i] = strided[i];
  }
  size_t ws_bytes = 0;
  REQUIRE(mra_workspace_size(&p, &ws_bytes) == MRA_SUCCESS);
  std::vector<unsigned char> ws(ws_bytes), out(size_t(nq * D) * 2, 0x7b);  // 0x7b7b: a large finite poison
  REQUIRE(mra_forward_host(&p, q.data(), k.data(), v.data(), nullptr, nullptr, out.data(), ws.data(), ws_bytes) ==
          MRA_SUCCESS);

  const mra::ref::Problem rp = ref_problem(nq, nk, D, qf, kf, vf);
  mra::ref::Config rc;
  rc.scales = {s, 1};
  rc.budgets = {1};
  const mra::ref::Selection sel = mra::ref::select(rp, rc);
  REQUIRE(sel.at(0, 0, 0) == std::vector<int64_t>{1});  // block 1 is the refined one, as built
  std::vector<float> want(size_t(nq * D)), got(size_t(nq * D));
  mra::ref::attend(rp, rc, sel, want.data());
  for (size_t i = 0; i < got.size(); ++i) got[i] = load(out.data(), cfg->dtype, i);

  // Tolerance: the output rounded once to the 16-bit type (rtol); the attention weights rounded to it before the
  // product with V (the tensor-core path): u_T max|v|; f32 accumulation over 2 s_1 exact and coarse terms and
  // D-term logits of size |q||k| ~ D, through exp: a few hundred u times max|v|.
  const double vmax = max_abs(vf);
  const double u = 0x1.0p-24, ut = cfg->dtype == MRA_DTYPE_F16 ? 0x1.0p-11 : 0x1.0p-8, rtol = ut + 2 * u;
  const double atol = (ut + 4.0 * double(2 * s + D) * u * std::sqrt(double(D))) * vmax;
  check_output(*cfg, got, want, atol, rtol, nq, D);
}

// Written against coarse-first-chunk-only when attend_kernel folded the level-1 candidates in chunks of one per
// thread (up to 256); level 1 is now coarse_level1_kernel's, which sweeps 64 key blocks per column tile, so the
// case spans 5 tiles: with one slice and one band the layout splits them into 5 column ranges (layout.h), whose
// partials coarse_merge_kernel rescales and merges (a whole-band sweep of several tiles: test `column split`). One query block against 300 key blocks (the last one partial):
// the blocks from 128 on lean towards the queries, so most of the coarse weight lies beyond the first 128; two
// of them are refined. Against the reference on the same f32 problem.
TEST_CASE("the coarse fold of one query block over more key blocks than threads") {
  const Built* cfg = nullptr;
  for (const Built& b : kBuilt)
    if (b.levels == 2 && b.dtype == MRA_DTYPE_F32 && (!cfg || b.dim < cfg->dim)) cfg = &b;
  REQUIRE_MESSAGE(cfg, "no 2-level f32 configuration is built (CMake registers this test only when there is one)");
  const int64_t D = cfg->dim, s = cfg->s1, blocks = 300;
  const int64_t nq = s, nk = (blocks - 1) * s + s / 2;
  INFO("configuration ", std::string(cfg->name), ", Nk ", nk);
  uint64_t seed = 0x636f617273652121u;
  mra::test::Rng rng(seed);
  INFO("seed ", seed);
  const std::vector<float> lean = mra::test::noise(rng, 1, 1, 1, D);
  std::vector<float> q = mra::test::noise(rng, 1, 1, nq, D), k = mra::test::noise(rng, 1, 1, nk, D),
                     v = mra::test::noise(rng, 1, 1, nk, D);
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t d = 0; d < D; ++d) q[size_t(i * D + d)] += 2 * lean[size_t(d)];
  for (int64_t j = 128 * s; j < nk; ++j)
    for (int64_t d = 0; d < D; ++d) k[size_t(j * D + d)] += lean[size_t(d)];

  mra_problem p = mra::test::mra_problem_of(1, 1, nq, nk, D, MRA_DTYPE_F32, {s, 1}, {2});
  size_t ws_bytes = 0;
  REQUIRE(mra_workspace_size(&p, &ws_bytes) == MRA_SUCCESS);
  std::vector<unsigned char> ws(ws_bytes);
  std::vector<float> got(size_t(nq * D), 3.0e38f), want(size_t(nq * D));  // a large finite poison
  REQUIRE(mra_forward_host(&p, q.data(), k.data(), v.data(), nullptr, nullptr, got.data(), ws.data(), ws_bytes) ==
          MRA_SUCCESS);
  const mra::ref::Problem rp = ref_problem(nq, nk, D, q, k, v);
  mra::ref::Config rc;
  rc.scales = {s, 1};
  rc.budgets = {2};
  mra::ref::mra_attention(rp, rc, want.data());

  // Tolerance: f32 logits of norm |q||k| (about 2 D here) carry D u of it each, exp turns that into a relative
  // weight error, and the sums run over Nk + 2 s_1 terms in f32: 4 (2 D + Nk) u max|v|.
  const double vmax = max_abs(v);
  const double u = 0x1.0p-24, atol = 4.0 * double(2 * D + nk) * u * vmax, rtol = 2 * u;
  check_output(*cfg, got, want, atol, rtol, nq, D);
}

// Kills block-max-last-warp: block_max (128 threads, 4 warps) gives the row maximum of a level-2 row in
// refine_keys_kernel, and a row's selection scores are relative to it. One level-1 query block, every one of its
// 32 key blocks refined, so each level-2 row has 32 rho candidates, one per thread: those of key blocks 24-31 fall
// to the last warp, and those keys lean towards the queries of the first level-2 row only, so that row's maximum
// lies there. A wrong maximum shifts that row's scores against the other rows' and changes which level-2 blocks
// are refined. Against the reference on the same problem, end to end.
TEST_CASE("a level-2 row whose maximum lies in the last warp of the row's threads") {
  const Built* cfg = nullptr;
  for (const Built& b : kBuilt)
    if (b.levels == 3 && b.s1 == 16 && b.s2 == 4 && (!cfg || b.dim < cfg->dim)) cfg = &b;
  REQUIRE_MESSAGE(cfg, "no 3-level configuration with sides 16, 4, 1 is built (CMake registers this test only when "
                       "there is one)");
  const int64_t D = cfg->dim, s = cfg->s1, rho = cfg->s1 / cfg->s2, blocks = 128 / rho;
  const int64_t nq = s, nk = blocks * s;
  INFO("configuration ", std::string(cfg->name));
  uint64_t seed = 0x6c61737477617270u;
  mra::test::Rng rng(seed);
  INFO("seed ", seed);
  const size_t es = cfg->dtype == MRA_DTYPE_F32 ? 4 : 2;
  const std::vector<float> lean = mra::test::noise(rng, 1, 1, 1, D);
  std::vector<unsigned char> qs(size_t(nq * D) * es), ks(size_t(nk * D) * es), vs(size_t(nk * D) * es);
  std::vector<float> q(size_t(nq * D)), k(size_t(nk * D)), v(size_t(nk * D));
  for (int64_t i = 0; i < nq; ++i)
    for (int64_t d = 0; d < D; ++d) {
      const float x = float(rng.normal()) + (i < cfg->s2 ? 3 * lean[size_t(d)] : 0.f);
      q[size_t(i * D + d)] = store(qs.data(), cfg->dtype, size_t(i * D + d), x);
    }
  for (int64_t j = 0; j < nk; ++j)
    for (int64_t d = 0; d < D; ++d) {
      const float x = float(rng.normal()) + (j >= (blocks * 3 / 4) * s ? lean[size_t(d)] : 0.f);
      k[size_t(j * D + d)] = store(ks.data(), cfg->dtype, size_t(j * D + d), x);
      v[size_t(j * D + d)] = store(vs.data(), cfg->dtype, size_t(j * D + d), float(rng.normal()));
    }
  mra_problem p = mra::test::mra_problem_of(1, 1, nq, nk, D, cfg->dtype, {s, cfg->s2, 1}, {blocks, 2 * blocks});
  size_t ws_bytes = 0;
  REQUIRE(mra_workspace_size(&p, &ws_bytes) == MRA_SUCCESS);
  std::vector<unsigned char> ws(ws_bytes), out(size_t(nq * D) * es, 0x7b);  // 0x7b..: a large finite poison
  REQUIRE(mra_forward_host(&p, qs.data(), ks.data(), vs.data(), nullptr, nullptr, out.data(), ws.data(), ws_bytes) ==
          MRA_SUCCESS);
  const mra::ref::Problem rp = ref_problem(nq, nk, D, q, k, v);
  mra::ref::Config rc;
  rc.scales = {s, cfg->s2, 1};
  rc.budgets = {blocks, 2 * blocks};
  std::vector<float> want(size_t(nq * D)), got(size_t(nq * D));
  mra::ref::mra_attention(rp, rc, want.data());
  for (size_t i = 0; i < got.size(); ++i) got[i] = load(out.data(), cfg->dtype, i);

  // Tolerance as in the case above, plus the output's rounding to the dtype (rtol) and, in 16 bits, the weights'
  // rounding before the product with V (the tensor-core path): u_T max|v|.
  const double vmax = max_abs(v);
  const double u = 0x1.0p-24, ut = cfg->dtype == MRA_DTYPE_F32 ? u : cfg->dtype == MRA_DTYPE_F16 ? 0x1.0p-11 : 0x1.0p-8;
  const double rtol = ut + 2 * u, atol = (ut + 4.0 * double(2 * D + nk) * u) * vmax;
  check_output(*cfg, got, want, atol, rtol, nq, D);
}
