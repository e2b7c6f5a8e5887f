// tests/reference/test_layouts.cpp: grouped K/V heads and strided layouts in the reference (docs/semantics.md §8).
// A problem with heads_kv < heads must give exactly (bit for bit) the output of the same problem with each K/V
// head copied to every query head of its group, and a problem stored with other strides exactly the output of
// its contiguous copy: the reference does the same arithmetic on the same values in both. The expanded problems
// are also held against the dense oracle, and every bad combination must be refused with a message naming it.
#include "common/doctest.h"

#include <string>
#include <vector>

#include "common/check.h"
#include "common/inputs.h"
#include "common/strided.h"
#include "mra/reference.h"
#include "oracle.h"

using mra::ref::Config;
using mra::ref::Mode;
using mra::ref::Problem;
using namespace mra::test;

namespace {

constexpr float kPoison = 12345.0f;

// Structured inputs with `heads_kv` K/V heads, and their expansion to one K/V head per query head.
struct Grouped {
  int64_t batch, heads, heads_kv, nq, nk, dim;
  std::vector<float> q, k, v, k_full, v_full;
  std::vector<uint8_t> qmask, kmask;

  Grouped(uint64_t seed, int64_t batch_, int64_t heads_, int64_t heads_kv_, int64_t nq_, int64_t nk_, int64_t dim_)
      : batch(batch_), heads(heads_), heads_kv(heads_kv_), nq(nq_), nk(nk_), dim(dim_) {
    mra::synthetic::Inputs s = mra::synthetic::structured(batch, heads, nq, nk, dim, seed);
    q = std::move(s.q);
    // The K/V heads are the first heads_kv heads of a structured draw, so that every group sees structure.
    for (int64_t b = 0; b < batch; ++b) {
      const size_t first = size_t(b * heads * nk * dim), count = size_t(heads_kv * nk * dim);
      k.insert(k.end(), s.k.begin() + first, s.k.begin() + first + count);
      v.insert(v.end(), s.v.begin() + first, s.v.begin() + first + count);
    }
    k_full = repeat_heads(k, batch, heads_kv, nk, dim, heads / heads_kv);
    v_full = repeat_heads(v, batch, heads_kv, nk, dim, heads / heads_kv);
  }
  Problem grouped() const {
    Problem p = Problem::of(batch, heads, nq, nk, dim, q.data(), k.data(), v.data(), mask(qmask), mask(kmask));
    p.heads_kv = heads_kv;
    return p;
  }
  Problem expanded() const {
    return Problem::of(batch, heads, nq, nk, dim, q.data(), k_full.data(), v_full.data(), mask(qmask), mask(kmask));
  }
  static const uint8_t* mask(const std::vector<uint8_t>& m) { return m.empty() ? nullptr : m.data(); }
  size_t out_size() const { return size_t(batch * heads * nq * dim); }
};

std::vector<float> mra_out(const Problem& p, const Config& c) {
  std::vector<float> out(size_t(p.batch * p.heads * p.nq * p.dim), kPoison);
  mra::ref::mra_attention(p, c, out.data());
  return out;
}

std::vector<Config> configs() {
  std::vector<Config> cs;
  for (Mode mode : {Mode::full, Mode::sparse}) {
    cs.push_back(Config{{8, 1}, {6}, mode, 0, 0});
    cs.push_back(Config{{16, 4, 1}, {5, 30}, mode, 1, 2});
    cs.push_back(Config{{8, 1}, {int64_t(1) << 40}, mode, 0, 0});  // every block refined
  }
  return cs;
}

}  // namespace

TEST_CASE("grouped K/V heads equal the problem with every K/V head copied to its group, bit for bit") {
  int cases = 0;
  for (int64_t heads_kv : {1, 2, 4})
    for (int masking = 0; masking < 2; ++masking)
      for (const Config& c : configs()) {
        const uint64_t seed = 500 + uint64_t(cases);
        Grouped g(seed, 2, 4, heads_kv, 45, 61, 8);
        if (masking == 1) {
          Rng rng(seed);
          g.qmask = random_mask(rng, 2, 45, 0.8);
          g.kmask = random_mask(rng, 2, 61, 0.7);
        }
        INFO("heads_kv " << heads_kv << ", masking " << masking << ", scales " << c.scales.front() << ", budget "
                         << c.budgets.front() << ", seed " << seed);
        const Problem p = g.grouped(), e = g.expanded();
        CHECK(mra::ref::select(p, c).refined == mra::ref::select(e, c).refined);
        const std::vector<float> out = mra_out(p, c), expanded = mra_out(e, c);
        CHECK(out == expanded);
        // The expanded problem against the dense oracle, so the equality above is not between two wrong answers.
        const std::vector<float> dense = oracle_attention(e, c, oracle_select(e, c));
        const Comparison cmp = compare(out.data(), dense.data(), int64_t(dense.size()), 1e-7, 1e-6,
                                       {g.batch, g.heads, g.nq, g.dim});
        INFO(cmp.report);
        CHECK(cmp.ok);
        std::vector<float> exact(g.out_size(), kPoison), exact_expanded(g.out_size(), kPoison);
        mra::ref::exact_attention(p, exact.data());
        mra::ref::exact_attention(e, exact_expanded.data());
        CHECK(exact == exact_expanded);
        ++cases;
      }
  MESSAGE(cases << " grouped problems checked");
}

TEST_CASE("strided q, k, v and out ([B, N, H, D], padded rows, a shared batch) equal the contiguous problem") {
  Grouped g(77, 2, 4, 2, 40, 52, 8);
  Rng rng(78);
  g.kmask = random_mask(rng, 2, 52, 0.8);
  const Problem base = g.grouped();
  const Strides4 qx{2, 4, 40, 8}, kx{2, 2, 52, 8};
  struct Variant {
    const char* name;
    Strides4 q, k, v, out;
  };
  const Variant variants[] = {
      {"[B, N, H, D]", bnhd_strides(4, 40, 8), bnhd_strides(2, 52, 8), bnhd_strides(2, 52, 8), bnhd_strides(4, 40, 8)},
      {"padded", padded_strides(4, 40, 8, 3, 5), padded_strides(2, 52, 8, 1, 0), padded_strides(2, 52, 8, 7, 2),
       padded_strides(4, 40, 8, 2, 9)},
      {"out only", {}, {}, {}, bnhd_strides(4, 40, 8)},
  };
  for (const Config& c : configs())
    for (const Variant& var : variants) {
      INFO(var.name << ", scales " << c.scales.front() << ", budget " << c.budgets.front());
      Problem p = base;
      const auto store = [](const std::vector<float>& x, const Strides4& extent, const Strides4& s) {
        return s == Strides4{} ? x : scatter(x, extent, s, kPoison);
      };
      const std::vector<float> q = store(g.q, qx, var.q), k = store(g.k, kx, var.k), v = store(g.v, kx, var.v);
      p.q = q.data();
      p.k = k.data();
      p.v = v.data();
      p.layout = {var.q, var.k, var.v, var.out};
      std::vector<float> buf(size_t(span_of(var.out, qx)), kPoison);
      mra::ref::mra_attention(p, c, buf.data());
      CHECK(gather(buf, qx, var.out) == mra_out(base, c));
      CHECK(written_outside(buf, qx, var.out, kPoison) == 0);
      mra::ref::exact_attention(p, buf.data());
      std::vector<float> exact(g.out_size());
      mra::ref::exact_attention(base, exact.data());
      CHECK(gather(buf, qx, var.out) == exact);
    }
  // A batch stride of 0 reads one K/V for every batch element: the same as copying it.
  Grouped one(79, 1, 4, 2, 40, 52, 8);
  Grouped two = one;
  two.batch = 2;
  two.q = noise(rng, 2, 4, 40, 8);
  two.k.insert(two.k.end(), one.k.begin(), one.k.end());
  two.v.insert(two.v.end(), one.v.begin(), one.v.end());
  Problem shared = two.grouped();
  shared.k = one.k.data();
  shared.v = one.v.data();
  shared.layout.k = shared.layout.v = Strides4{0, 52 * 8, 8, 1};
  const Config c{{8, 1}, {6}, Mode::full, 0, 0};
  CHECK(mra_out(shared, c) == mra_out(two.grouped(), c));
}

TEST_CASE("the backward with grouped K/V heads sums the group's gradients, dout is read with out's strides") {
  for (int64_t heads_kv : {1, 2}) {
    Grouped g(91, 2, 4, heads_kv, 33, 47, 8);
    const Config c{{8, 1}, {5}, Mode::full, 0, 0};
    Rng rng(92);
    const std::vector<float> dout = noise(rng, 2, 4, 33, 8);
    const mra::ref::Gradients gr = mra::ref::mra_attention_backward(g.grouped(), c, dout.data());
    const mra::ref::Gradients ex = mra::ref::mra_attention_backward(g.expanded(), c, dout.data());
    CHECK(gr.dq == ex.dq);
    REQUIRE(gr.dk.size() == size_t(2 * heads_kv * 47 * 8));
    const int64_t group = 4 / heads_kv, per_head = 47 * 8;
    std::vector<float> dk(gr.dk.size()), dk_sum(gr.dk.size()), dv(gr.dv.size()), dv_sum(gr.dv.size());
    for (size_t t = 0; t < gr.dk.size(); ++t) {
      const int64_t kvh = int64_t(t) / per_head, off = int64_t(t) % per_head;  // kvh over [B, Hkv]
      const int64_t b = kvh / heads_kv, hk = kvh % heads_kv;
      double sk = 0.0, sv = 0.0;
      for (int64_t j = 0; j < group; ++j) {
        const size_t at = size_t((b * 4 + hk * group + j) * per_head + off);
        sk += ex.dk[at];
        sv += ex.dv[at];
      }
      dk[t] = float(gr.dk[t]);
      dv[t] = float(gr.dv[t]);
      dk_sum[t] = float(sk);
      dv_sum[t] = float(sv);
    }
    // The group's terms are added in another order than the per-head sums: equal to double rounding.
    const Comparison k = compare(dk.data(), dk_sum.data(), int64_t(dk.size()), 1e-9, 1e-6, {2, heads_kv, 47, 8});
    const Comparison v = compare(dv.data(), dv_sum.data(), int64_t(dv.size()), 1e-9, 1e-6, {2, heads_kv, 47, 8});
    INFO("heads_kv " << heads_kv << ": dk " << k.report << "; dv " << v.report);
    CHECK(k.ok);
    CHECK(v.ok);
    CHECK(norm2(dk_sum) > 0.0);
    Problem strided = g.grouped();
    strided.layout.out = bnhd_strides(4, 33, 8);
    const std::vector<float> dout_bnhd = scatter(dout, {2, 4, 33, 8}, strided.layout.out, kPoison);
    CHECK(mra::ref::mra_attention_backward(strided, c, dout_bnhd.data()).dq == gr.dq);
  }
}

TEST_CASE("bad K/V heads and strides are refused with one line naming the tensor and dimension") {
  Grouped g(5, 1, 4, 2, 16, 16, 8);
  std::vector<float> out(g.out_size() * 2, 0.0f);
  const Config c{{8, 1}, {2}, Mode::full, 0, 0};
  auto fails = [&](const Problem& p, const char* text) {
    CHECK_THROWS_WITH_AS(mra::ref::mra_attention(p, c, out.data()), doctest::Contains(text), mra::ref::Error);
  };
  Problem p = g.grouped();
  p.heads_kv = 3;
  fails(p, "heads_kv must divide heads (4), got 3");
  p.heads_kv = 8;
  fails(p, "heads_kv must divide heads");
  p.heads_kv = -1;
  fails(p, "heads_kv must divide heads");
  p = g.grouped();
  p.layout.q = {512, 128, 8, 2};
  fails(p, "q strides: the dim stride must be 1, got 2");
  p.layout.q = {};
  p.layout.k = {256, -128, 8, 1};
  fails(p, "k strides: the head stride must not be negative");
  p.layout.k = {};
  p.layout.v = {128, int64_t(1) << 62, 8, 1};
  fails(p, "v strides: offsets beyond 2^62");
  p.layout.v = {};
  p.layout.out = {512, 0, 8, 1};  // every head writes the same rows
  fails(p, "out strides: the output's elements overlap");
  p.layout.out = {512, 128, 4, 1};  // rows of 8 elements 4 apart
  fails(p, "out strides: the output's elements overlap");
  p.layout.out = {};
  // An output sharing memory with an input, and a null output.
  std::vector<float> shared(g.q);
  p.q = shared.data();
  CHECK_THROWS_WITH_AS(mra::ref::mra_attention(p, c, shared.data() + 8), doctest::Contains("output overlaps q"),
                       mra::ref::Error);
  CHECK_THROWS_WITH_AS(mra::ref::exact_attention(p, nullptr), doctest::Contains("must not be null"), mra::ref::Error);
  // Inputs may overlap each other (K and V from one buffer): that is allowed.
  p = g.grouped();
  p.v = p.k;
  CHECK_NOTHROW(mra::ref::mra_attention(p, c, out.data()));
}
