// runtime/kernels/attend.cuh: stage 3 of the MRA forward pipeline (forward.cuh), the fused attention kernels:
// attend_mma_kernel (f16/bf16, the exact part on tensor cores) and attend_kernel (f32, CUDA cores). Both start
// with the same two pieces: the skip of a tile with nothing to compute, and the coarse components (every level's
// from coarse.cuh, merged here).
#pragma once

#include "kernels/common.cuh"

namespace mra::kern {
inline namespace MRA_KERNEL_NAMESPACE {

// Stage 3 (§2.6). Grid (ceil(Nq / rows), slices); a CTA owns `rows` query rows inside one finest block R (side
// s_{L-1}). It first folds the coarse components of R's block row at every level into one running (max,
// denominator, numerator[D]), shared by its rows (read from the workspace); then it streams the keys
// of the refined blocks of R in tiles of `tile` keys through shared memory, with a per-row online softmax. Every sum has a fixed order (no
// atomics, no order that depends on timing): the output is bitwise reproducible and written once.

// The shared memory of the coarse components: the merged state of the tile's block row. `words` 4-byte words.
template <class Cfg>
struct CoarseSmem {
  static constexpr int num = 0;                 // numerator [D]
  static constexpr int state = num + Cfg::dim;  // [0] coarse max, [1] coarse denominator
  static constexpr int words = state + 2;
};

// The saved state of query row i (§7.2, layout.h `rowstats`): its stabilizer and denominator, or (-inf, 0) when
// the row has no term (masked, empty, or in a skipped tile).
__device__ inline void save_row_stats(const Params& p, int64_t slice, int32_t i, float m, float z) {
  float* rs = at<float>(p, p.layout.rowstats) + (slice * p.nq + i) * 2;
  rs[0] = m;
  rs[1] = z;
}

// Causal attention (§9.1, §9.5): the exact keys a tile of query rows [row0, row0 + rows) loads are those before
// the returned index: none after its last row's horizon (future for every row), and none from the slice's first
// non-finite key on (every row that sees it is NaN, and a row that does not must not meet it, not even with
// weight 0). nk without causal attention.
__device__ inline int32_t tile_key_end(const Params& p, int64_t slice, int32_t row0, int32_t rows) {
  if (!p.layout.causal) return p.nk;
  const int32_t last = (row0 + rows < p.nq ? row0 + rows : p.nq) - 1, end = last + p.nk - p.nq + 1;
  const int32_t first_bad = first_bad_key(p, slice);
  return end < first_bad ? end : first_bad;
}

// §1, §2.7: a tile without real query rows, or of a poisoned slice, writes its rows (0, or NaN in the real
// rows of a poisoned slice) and computes nothing. Returns whether it did; uniform over the CTA.
template <class Cfg>
__device__ bool tile_skipped(const Params& p, int64_t slice, int32_t b, int32_t row0) {
  using T = typename Cfg::T;
  constexpr int D = Cfg::dim, BM = Cfg::rows, NT = Cfg::threads;
  const int tid = threadIdx.x;
  // One barrier that ORs every thread's finding: no shared flag that several threads would store to.
  int any_real = 0;
  for (int i = tid; i < BM; i += NT) any_real |= row0 + i < p.nq && is_real(p.qmask, b, p.nq, row0 + i);
  const bool tile_real = __syncthreads_or(any_real) != 0;
  const bool bad = at<int32_t>(p, p.layout.slice_bad)[slice] != 0;
  if (tile_real && !bad) return false;
  const Rows<T> out = out_rows<T>(p, slice);
  for (int e = tid; e < BM * D; e += NT) {
    const int32_t i = row0 + e / D;
    if (i < p.nq) out.row(i)[e % D] = from_float<T>(bad && is_real(p.qmask, b, p.nq, i) ? quiet_nan() : 0.f);
  }
  for (int i = tid; i < BM; i += NT)
    if (row0 + i < p.nq) save_row_stats(p, slice, row0 + i, -INFINITY, 0.f);
  return true;
}

// Coarse components (§2.5-2.6, mode full): the states of the tile's block row at every coarse level
// (coarse_level1_kernel and coarse_level_kernel, coarse.cuh: (max, denominator, numerator[D]) in the workspace),
// merged level by level from level 1's: M = max(m, m_l), den = den·exp(m − M) + den_l·exp(m_l − M), num likewise
// (a factor 0 for a state with max −inf). `cs` is the CoarseSmem area; on return (after a barrier) cs[state] and
// cs[num] hold the result, (-inf, 0, 0) in mode "exact" or when every candidate was refined.
template <class Cfg>
__device__ void coarse_components(const Params& p, int64_t slice, int32_t row0, float* cs) {
  using C = CoarseSmem<Cfg>;
  constexpr int D = Cfg::dim, NT = Cfg::threads;
  float* num = cs + C::num;
  float* state = cs + C::state;
  for (int d = threadIdx.x; d < D; d += NT) {
    float m = -INFINITY, den = 0.f, x = 0.f;
    for (int li = 0; p.full && li < Cfg::steps; ++li) {
      const Level& lv = p.layout.level[li];
      const int64_t r = slice * lv.nq + row0 / lv.side;
      const float ml = at<float>(p, lv.cmax)[r], dl = at<float>(p, lv.cden)[r], xl = at<float>(p, lv.cnum)[r * D + d];
      if (li == 0) {
        m = ml;
        den = dl;
        x = xl;
        continue;
      }
      const float top = ml > m ? ml : m;
      const float a = m == -INFINITY ? 0.f : expf(m - top), al = ml == -INFINITY ? 0.f : expf(ml - top);
      m = top;
      den = den * a + dl * al;
      x = x * a + xl * al;
    }
    num[d] = x;
    if (d == 0) {
      state[0] = m;
      state[1] = den;
    }
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------------------
// f16/bf16: the exact part on tensor cores, in the FlashAttention-2 structure. Warp w owns query rows
// [16w, 16w + 16) of the tile (the m16 slab of mma.m16n8k16; rows past `rows` are zero padding whose results
// are dropped). Per key tile of BN keys, gathered from the refined blocks with cp.async into a `stages`-deep
// ring: S = Q K^T (A = Q fragments kept in registers, B = K by ldmatrix), the online softmax on the S
// accumulators with quad shuffles for the row max, P rounded to the storage type and reused in registers as
// the A operand of O += P V (B = V by ldmatrix.trans). Precision contract (docs/kernels.md, "Precision"):
// products exact, f32 accumulation, the row sum l over the unrounded P, P rounded once to the storage type.
template <class Cfg>
struct MmaSmem {
  using T = typename Cfg::T;
  static constexpr int D = Cfg::dim, BN = Cfg::tile, ST = Cfg::stages;
  static constexpr int pitch = D + 8;  // elements: rows 16 bytes apart mod 128, so ldmatrix phases hit 8 bank groups
  static constexpr int q = 0;          // [16 * slabs][pitch] T
  static constexpr int k = q + 16 * Cfg::slabs * pitch;  // [ST][BN][pitch] T
  static constexpr int v = k + ST * BN * pitch;          // [ST][BN][pitch] T
  static constexpr int t_elems = v + ST * BN * pitch;
  static constexpr int mask_words = (BN + 31) / 32;  // per tile: bit n set when key slot n holds a real key
  static constexpr size_t key_mask = (size_t(t_elems) * sizeof(T) + 15) / 16 * 16;  // bytes: uint32 [ST][words]
  static constexpr size_t coarse = key_mask + size_t(ST) * mask_words * 4;        // bytes: CoarseSmem
  static constexpr size_t bytes = coarse + size_t(CoarseSmem<Cfg>::words) * 4;
  // Causal attention only, past `bytes` (a launch without it keeps its occupancy): per tile the key index of
  // every slot (-1: none) and whether a key lies past the first row's horizon (the tile crosses the diagonal and
  // takes the entry mask).
  static constexpr size_t key_index = bytes;                          // bytes: int32 [ST][BN]
  static constexpr size_t crosses = key_index + size_t(ST) * BN * 4;  // bytes: uint32 [ST]
  static constexpr size_t causal_bytes = bytes + size_t(ST) * (BN + 1) * 4;
  static_assert(pitch * sizeof(T) % 16 == 0, "ldmatrix and cp.async rows are 16-byte aligned");
};

__device__ inline uint32_t pack2(float lo, float hi, __half) {
  return uint32_t(__half_as_ushort(__float2half_rn(lo))) | uint32_t(__half_as_ushort(__float2half_rn(hi))) << 16;
}
__device__ inline uint32_t pack2(float lo, float hi, __nv_bfloat16) {
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16;
}
__device__ inline void mma16816(float d[4], const uint32_t a[4], const uint32_t b[2], __half) {
  simt::mma_m16n8k16_f32_f16(d, a, b, d);
}
__device__ inline void mma16816(float d[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
  simt::mma_m16n8k16_f32_bf16(d, a, b, d);
}

// Sum (or maximum) over the 4 lanes of a quad, which hold the columns of one accumulator row; xor 1 then 2,
// the same order in every run.
__device__ inline float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ inline float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

template <class Cfg>
__global__ void __launch_bounds__(Cfg::threads, Cfg::min_ctas) attend_mma_kernel(Params p) {
  using T = typename Cfg::T;
  using S = MmaSmem<Cfg>;
  constexpr int D = Cfg::dim, BM = Cfg::rows, BN = Cfg::tile, NT = Cfg::threads, ST = Cfg::stages;
  constexpr int P = S::pitch, CHUNKS = D / 8;  // 16-byte chunks per row
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  T* qs = reinterpret_cast<T*>(smem) + S::q;
  T* ks = reinterpret_cast<T*>(smem) + S::k;
  T* vs = reinterpret_cast<T*>(smem) + S::v;
  uint32_t* key_mask = reinterpret_cast<uint32_t*>(smem + S::key_mask);
  int32_t* key_index = reinterpret_cast<int32_t*>(smem + S::key_index);
  uint32_t* crosses = reinterpret_cast<uint32_t*>(smem + S::crosses);
  float* cs = reinterpret_cast<float*>(smem + S::coarse);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const int32_t row0 = int32_t(blockIdx.x) * BM;
  if (tile_skipped<Cfg>(p, slice, b, row0)) return;

  // Load stage: the query tile (its own cp.async group), then the first stages - 1 key tiles, so the copies
  // run under the coarse components.
  // K and V are those of the slice's K/V head; every tensor is read through its strides (§8).
  const Rows<const T> q = q_rows<T>(p, slice), k = k_rows<T>(p, slice), v = v_rows<T>(p, slice);
  for (int e = tid; e < 16 * Cfg::slabs * CHUNKS; e += NT) {
    const int i = e / CHUNKS, c = e % CHUNKS * 8;
    const bool real = i < BM && row0 + i < p.nq;
    simt::cp_async_16_zfill(qs + i * P + c, real ? q.row(row0 + i) + c : q.row0, real ? 16u : 0u);
  }
  simt::cp_async_commit();

  const Level& fin = p.layout.level[Cfg::steps - 1];
  const int32_t R = row0 / Cfg::finest;
  const int32_t* fin_row = at<int32_t>(p, fin.rowptr) + slice * (fin.nq + 1);
  const int32_t* fin_col = at<int32_t>(p, fin.col) + slice * fin.cap;
  const int32_t first = fin_row[R], keys_total = (fin_row[R + 1] - first) * Cfg::finest;
  const int32_t tiles = (keys_total + BN - 1) / BN;
  const int32_t key_end = tile_key_end(p, slice, row0, BM);
  // Gathers key tile `it` into ring slot it % ST: K and V rows of the refined keys, zeros for slots past the
  // list, past Nk or masked (their bit in key_mask is 0); then commits one group, even when empty, so that
  // group counts stay uniform for cp_async_wait. A thread copies CPT consecutive 16-byte chunks of K and of V
  // of RPT rows (one key lookup per row); warp 0 writes the tile's mask of real keys by ballot, and under causal
  // attention the slots' key indices and whether the tile crosses the diagonal.
  static_assert(NT % BN == 0 || BN % NT == 0, "threads and key slots split evenly");
  constexpr int W = S::mask_words, TPR = NT > BN ? NT / BN : 1, RPT = BN > NT ? BN / NT : 1, CPT = CHUNKS / TPR;
  static_assert(CHUNKS % TPR == 0, "a row's chunks split evenly over its threads");
  auto key_of = [&](int32_t u) {  // the key index of slot u of R's refined keys, or -1
    if (u >= keys_total) return int32_t(-1);
    const int32_t j = fin_col[first + u / Cfg::finest] * Cfg::finest + u % Cfg::finest;
    return j < key_end && is_real(p.kmask, b, p.nk, j) ? j : int32_t(-1);
  };
  auto issue_tile = [&](int32_t it) {
    if (it < tiles) {
      const int slot = it % ST;
      if (warp == 0) {
        uint32_t cross = 0;
        MRA_UNROLL
        for (int w = 0; w < W; ++w) {
          const int32_t j = 32 * w + lane < BN ? key_of(it * BN + 32 * w + lane) : -1;
          const uint32_t real = __ballot_sync(0xffffffffu, j >= 0);
          if (lane == 0) key_mask[slot * W + w] = real;
          if (p.layout.causal) {
            if (32 * w + lane < BN) key_index[slot * BN + 32 * w + lane] = j;
            cross |= __ballot_sync(0xffffffffu, j > row0 + p.nk - p.nq);
          }
        }
        if (p.layout.causal && lane == 0) crosses[slot] = cross;
      }
      MRA_UNROLL
      for (int rr = 0; rr < RPT; ++rr) {
        const int n = tid / TPR + rr * (NT / TPR), c0 = tid % TPR * CPT * 8;
        const int32_t j = key_of(it * BN + n);
        // A slot without a key copies nothing (zero fill) from the tensor's first row.
        const T* krow = j >= 0 ? k.row(j) + c0 : k.row0;
        const T* vrow = j >= 0 ? v.row(j) + c0 : v.row0;
        const unsigned bytes = j >= 0 ? 16u : 0u;
        T* kd = ks + (slot * BN + n) * P + c0;
        T* vd = vs + (slot * BN + n) * P + c0;
        MRA_UNROLL
        for (int cc = 0; cc < CPT; ++cc) {
          simt::cp_async_16_zfill(kd + 8 * cc, krow + (j >= 0 ? 8 * cc : 0), bytes);
          simt::cp_async_16_zfill(vd + 8 * cc, vrow + (j >= 0 ? 8 * cc : 0), bytes);
        }
      }
    }
    simt::cp_async_commit();
  };
  for (int32_t it = 0; it < ST - 1; ++it) issue_tile(it);

  coarse_components<Cfg>(p, slice, row0, cs);

  // Per thread: rows g and g + 8 of the warp's slab (h = 0, 1), columns 2t, 2t + 1 of every 8-wide n-tile.
  // The accumulators start from the coarse state, shared by every row; the coarse denominator is counted once
  // per row (lane t = 0 of the quad), since l is summed over the quad at the end.
  const float* num = cs + CoarseSmem<Cfg>::num;
  const float* state = cs + CoarseSmem<Cfg>::state;
  float o[D / 8][4];
  MRA_UNROLL
  for (int nt = 0; nt < D / 8; ++nt)
    MRA_UNROLL
    for (int r = 0; r < 4; ++r) o[nt][r] = num[nt * 8 + 2 * t + r % 2];
  // The running max is kept in base-2 units (logit * log2 e), so each weight is one multiply and one exp2.
  constexpr float log2e = 1.4426950408889634f;
  const float scale2 = p.scale * log2e;
  float m[2] = {state[0] * log2e, state[0] * log2e};
  float l[2] = {t == 0 ? state[1] : 0.f, t == 0 ? state[1] : 0.f};

  // Q fragments (A operand, 16 x 16 per k-step): the query group is complete when at most the ST - 1 key-tile
  // groups are pending. Up to D = 64 they stay in registers; at D = 128 they are reloaded per key tile, since
  // with them resident ptxas spilled at 128 (and 168) registers.
  simt::cp_async_wait<ST - 1>();
  __syncthreads();
  constexpr bool q_resident = D <= 64;
  const T* qw = qs + warp * 16 * P;
  auto load_q = [&](int kk, uint32_t a[4]) { simt::ldmatrix_x4(a, qw + (lane % 16) * P + kk * 16 + 8 * (lane / 16)); };
  uint32_t qa[q_resident ? D / 16 : 1][4];
  if constexpr (q_resident) {
    MRA_UNROLL
    for (int kk = 0; kk < D / 16; ++kk) load_q(kk, qa[kk]);
  }

  for (int32_t it = 0; it < tiles; ++it) {
    // Tile `it` has landed (at most ST - 2 newer groups pending); after the barrier every warp is done with
    // tile it - 1, whose slot the tile it + ST - 1 now refills.
    simt::cp_async_wait<ST - 2>();
    __syncthreads();
    issue_tile(it + ST - 1);
    const int slot = it % ST;
    const T* kt = ks + slot * BN * P;
    const T* vt = vs + slot * BN * P;
    uint32_t real[W];
    MRA_UNROLL
    for (int w = 0; w < W; ++w) real[w] = key_mask[slot * W + w];

    // S = Q K^T: n-tiles of 8 keys, two per ldmatrix.x4 (keys +0..7 and +8..15, features +0..7 and +8..15).
    float s[BN / 8][4];
    MRA_UNROLL
    for (int nt = 0; nt < BN / 8; ++nt)
      MRA_UNROLL
      for (int r = 0; r < 4; ++r) s[nt][r] = 0.f;
    MRA_UNROLL
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t qf[4];
      const uint32_t* a = qa[0];
      if constexpr (q_resident) a = qa[kk];
      else {
        load_q(kk, qf);
        a = qf;
      }
      MRA_UNROLL
      for (int np = 0; np < BN / 16; ++np) {
        uint32_t kb[4];
        simt::ldmatrix_x4(kb, kt + (np * 16 + lane % 8 + 8 * (lane / 16)) * P + kk * 16 + 8 * (lane / 8 % 2));
        mma16816(s[2 * np], a, kb, T{});
        mma16816(s[2 * np + 1], a, kb + 2, T{});
      }
    }

    // Causal attention, a tile that crosses the diagonal: the entry mask j <= i + nk - nq (§9.1) on the S
    // fragments (rows g and g + 8 of the warp's slab); the other tiles are visible to every row of the tile.
    if (p.layout.causal && crosses[slot] != 0) {
      const int32_t* kj = key_index + slot * BN;
      const int32_t horizon = row0 + warp * 16 + g + p.nk - p.nq;
      MRA_UNROLL
      for (int nt = 0; nt < BN / 8; ++nt)
        MRA_UNROLL
        for (int r = 0; r < 4; ++r)
          if (kj[nt * 8 + 2 * t + r % 2] > horizon + 8 * (r / 2)) s[nt][r] = -INFINITY;
    }

    // Online softmax per row, in base 2: logits times log2(e) (-inf for empty key slots), the new row max over
    // the quad, the rescale of what was accumulated so far, the weights 2^(x - m) (f32, summed unrounded into l).
    // While a row has seen no logit its max is -inf: exponents are then taken against 0, so that empty slots
    // and the empty past weigh 2^-inf = 0 instead of NaN.
    float mx[2] = {m[0], m[1]};
    MRA_UNROLL
    for (int nt = 0; nt < BN / 8; ++nt)
      MRA_UNROLL
      for (int r = 0; r < 4; ++r) {
        const int n = nt * 8 + 2 * t + r % 2;
        const float x = real[nt / 4] >> (n % 32) & 1u ? scale2 * s[nt][r] : -INFINITY;
        s[nt][r] = x;
        mx[r / 2] = fmaxf(mx[r / 2], x);
      }
    float alpha[2];
    MRA_UNROLL
    for (int h = 0; h < 2; ++h) {
      mx[h] = quad_max(mx[h]);
      const float base = mx[h] == -INFINITY ? 0.f : mx[h];
      alpha[h] = exp2f(m[h] - base);
      m[h] = mx[h];
      mx[h] = base;
      l[h] *= alpha[h];
    }
    MRA_UNROLL
    for (int nt = 0; nt < BN / 8; ++nt)
      MRA_UNROLL
      for (int r = 0; r < 4; ++r) {
        const float w = exp2f(s[nt][r] - mx[r / 2]);
        s[nt][r] = w;
        l[r / 2] += w;
      }
    MRA_UNROLL
    for (int nt = 0; nt < D / 8; ++nt)
      MRA_UNROLL
      for (int r = 0; r < 4; ++r) o[nt][r] *= alpha[r / 2];

    // O += P V: the S accumulators of n-tiles 2j, 2j + 1 are the A fragment of key step j (rows g, g + 8;
    // keys 16j + 2t.., 16j + 8 + 2t..); V by ldmatrix.trans, two 8-feature n-tiles per x4.
    MRA_UNROLL
    for (int j = 0; j < BN / 16; ++j) {
      const uint32_t pa[4] = {pack2(s[2 * j][0], s[2 * j][1], T{}), pack2(s[2 * j][2], s[2 * j][3], T{}),
                              pack2(s[2 * j + 1][0], s[2 * j + 1][1], T{}),
                              pack2(s[2 * j + 1][2], s[2 * j + 1][3], T{})};
      MRA_UNROLL
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        simt::ldmatrix_x4_trans(vb, vt + (j * 16 + lane % 16) * P + dp * 16 + 8 * (lane / 16));
        mma16816(o[2 * dp], pa, vb, T{});
        mma16816(o[2 * dp + 1], pa, vb + 2, T{});
      }
    }
  }
  simt::cp_async_wait<0>();

  // Output: l summed over the quad, rows past the tile or masked written as 0 (§1); under causal attention the
  // poisoned rows NaN (§9.5).
  const Rows<T> out = out_rows<T>(p, slice);
  const int32_t nan_from = poisoned_from(p, slice, row0, first_bad_key(p, slice));
  MRA_UNROLL
  for (int h = 0; h < 2; ++h) {
    const int i = warp * 16 + g + 8 * h;
    const int32_t row = row0 + i;
    const float lsum = quad_sum(l[h]);
    if (i >= BM || row >= p.nq) continue;
    const bool real = is_real(p.qmask, b, p.nq, row) && lsum > 0.f;
    const bool poisoned = row >= nan_from && is_real(p.qmask, b, p.nq, row);
    if (t == 0) save_row_stats(p, slice, row, real ? m[h] / log2e : -INFINITY, real ? lsum : 0.f);
    MRA_UNROLL
    for (int nt = 0; nt < D / 8; ++nt)
      MRA_UNROLL
      for (int e = 0; e < 2; ++e)
        out.row(row)[nt * 8 + 2 * t + e] =
            from_float<T>(poisoned ? quiet_nan() : real ? o[nt][2 * h + e] / lsum : 0.f);
  }
}

// ---------------------------------------------------------------------------------------------------------
// f32: the exact part on CUDA cores, register-tiled. The NT threads form RG row groups of KG consecutive lanes
// (KG <= 32, so a group lies in one warp). A thread owns TM rows (i = rg + RG a) and, of every key tile, TN
// keys (n = kg + KG c) for the scores and TD features (d = kg + KG e) for the output: each shared element
// loaded feeds TN (Q), TM (K), TD (P) or TM (V) FMAs. Row maxima and sums are reduced over the group's lanes
// by xor shuffles, which give every lane the same bits; the weights go through shared memory once, as the
// A side of P V.
template <class Cfg>
struct AttendSmem {
  static constexpr int D = Cfg::dim, BM = Cfg::rows, BN = Cfg::tile, NT = Cfg::threads;
  static constexpr int RG = BM < NT / 8 ? BM : NT / 8, KG = NT / RG;
  static constexpr int TM = BM / RG, TN = BN / KG, TD = D / KG;
  static_assert(KG <= 32 && BM % RG == 0 && BN % KG == 0 && D % KG == 0, "the register tiles split evenly");
  static constexpr int pitch = D + 1;  // Q and K rows read by different row groups fall on distinct banks
  static constexpr int q = 0;                      // [BM][pitch]
  static constexpr int k = q + BM * pitch;         // [BN][pitch]
  static constexpr int v = k + BN * pitch;         // [BN][D]
  static constexpr int w = v + BN * D;             // [BM][BN] weights of the tile
  static constexpr int key = w + BM * BN;          // int32 [BN]: key index of a tile slot, -1 if none
  static constexpr int coarse = key + BN;          // CoarseSmem
  static constexpr int words = coarse + CoarseSmem<Cfg>::words;
  static constexpr size_t bytes = size_t(words) * 4;
};

template <class Cfg>
__global__ void __launch_bounds__(Cfg::threads, Cfg::min_ctas) attend_kernel(Params p) {
  using T = typename Cfg::T;
  using S = AttendSmem<Cfg>;
  constexpr int D = S::D, BM = S::BM, BN = S::BN, NT = S::NT, P = S::pitch;
  constexpr int RG = S::RG, KG = S::KG, TM = S::TM, TN = S::TN, TD = S::TD;
  SIMT_DYNAMIC_SHARED(float, smem);
  float* qs = smem + S::q;
  float* ks = smem + S::k;
  float* vs = smem + S::v;
  float* ws = smem + S::w;
  int32_t* key = reinterpret_cast<int32_t*>(smem + S::key);
  float* cs = smem + S::coarse;

  const int tid = threadIdx.x, rg = tid / KG, kg = tid % KG;
  const int64_t slice = p.slice0 + int64_t(blockIdx.y);
  const int32_t b = int32_t(slice / p.heads);
  const int32_t row0 = int32_t(blockIdx.x) * BM;
  const int32_t R = row0 / Cfg::finest;
  const Level& fin = p.layout.level[Cfg::steps - 1];
  if (tile_skipped<Cfg>(p, slice, b, row0)) return;

  // Query tile -> shared memory.
  const Rows<const T> q = q_rows<T>(p, slice);
  for (int e = tid; e < BM * (D / Cfg::vec); e += NT) {
    const int i = e / (D / Cfg::vec), d = e % (D / Cfg::vec) * Cfg::vec;
    float x[Cfg::vec] = {};
    if (row0 + i < p.nq) load_widen<T, Cfg::vec>(q.row(row0 + i) + d, x);
    for (int t = 0; t < Cfg::vec; ++t) qs[i * P + d + t] = x[t];
  }
  coarse_components<Cfg>(p, slice, row0, cs);

  // The coarse state starts every row; its denominator is counted once per row (lane kg = 0 of the group),
  // since the partial sums l are summed over the group at the end.
  const float* num = cs + CoarseSmem<Cfg>::num;
  const float* state = cs + CoarseSmem<Cfg>::state;
  float o[TM][TD], m[TM], l[TM];
  MRA_UNROLL
  for (int a = 0; a < TM; ++a) {
    m[a] = state[0];
    l[a] = kg == 0 ? state[1] : 0.f;
    MRA_UNROLL
    for (int e = 0; e < TD; ++e) o[a][e] = num[kg + KG * e];
  }

  // Exact entries (§2.5): the keys of the refined blocks of R, tile by tile.
  const int32_t* fin_row = at<int32_t>(p, fin.rowptr) + slice * (fin.nq + 1);
  const int32_t* fin_col = at<int32_t>(p, fin.col) + slice * fin.cap;
  const int32_t first = fin_row[R], keys_total = (fin_row[R + 1] - first) * Cfg::finest;
  // K and V of the slice's K/V head, through their strides (§8).
  const Rows<const T> k = k_rows<T>(p, slice), v = v_rows<T>(p, slice);
  // Causal attention: the keys the tile may load, and the entry mask j <= i + horizon (§9.1; without causal
  // attention every key passes it).
  const int32_t key_end = tile_key_end(p, slice, row0, BM), horizon = p.layout.causal ? p.nk - p.nq : p.nk;
  for (int32_t u0 = 0; u0 < keys_total; u0 += BN) {
    for (int e = tid; e < BN; e += NT) {
      const int32_t u = u0 + e;
      int32_t j = -1;
      if (u < keys_total) {
        const int32_t cb = fin_col[first + u / Cfg::finest];
        const int32_t jj = cb * Cfg::finest + u % Cfg::finest;
        if (jj < key_end && is_real(p.kmask, b, p.nk, jj)) j = jj;
      }
      key[e] = j;
    }
    __syncthreads();
    for (int e = tid; e < BN * (D / Cfg::vec); e += NT) {
      const int n = e / (D / Cfg::vec), d = e % (D / Cfg::vec) * Cfg::vec;
      float x[Cfg::vec] = {}, y[Cfg::vec] = {};
      if (key[n] >= 0) {
        load_widen<T, Cfg::vec>(k.row(key[n]) + d, x);
        load_widen<T, Cfg::vec>(v.row(key[n]) + d, y);
      }
      for (int t = 0; t < Cfg::vec; ++t) {
        ks[n * P + d + t] = x[t];
        vs[n * D + d + t] = y[t];
      }
    }
    __syncthreads();

    // Scores: TM x TN per thread, one Q and one K element per TN and TM FMAs.
    float s[TM][TN] = {};
    for (int d = 0; d < D; ++d) {
      float qv[TM], kv[TN];
      MRA_UNROLL
      for (int a = 0; a < TM; ++a) qv[a] = qs[(rg + RG * a) * P + d];
      MRA_UNROLL
      for (int c = 0; c < TN; ++c) kv[c] = ks[(kg + KG * c) * P + d];
      MRA_UNROLL
      for (int a = 0; a < TM; ++a)
        MRA_UNROLL
        for (int c = 0; c < TN; ++c) s[a][c] += qv[a] * kv[c];
    }

    // Online softmax per row over the group's lanes; while a row has seen no logit its max is -inf and the
    // exponents are taken against 0, so empty slots and the empty past weigh exp(-inf) = 0.
    MRA_UNROLL
    for (int a = 0; a < TM; ++a) {
      float mx = m[a];
      const int32_t limit = row0 + rg + RG * a + horizon;
      MRA_UNROLL
      for (int c = 0; c < TN; ++c) {
        const int32_t j = key[kg + KG * c];
        s[a][c] = j >= 0 && j <= limit ? p.scale * s[a][c] : -INFINITY;
        mx = fmaxf(mx, s[a][c]);
      }
      for (int off = KG / 2; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float base = mx == -INFINITY ? 0.f : mx;
      const float alpha = expf(m[a] - base);
      m[a] = mx;
      float sum = 0.f;
      MRA_UNROLL
      for (int c = 0; c < TN; ++c) {
        const float w = expf(s[a][c] - base);
        ws[(rg + RG * a) * BN + kg + KG * c] = w;
        sum += w;
      }
      l[a] = l[a] * alpha + sum;
      MRA_UNROLL
      for (int e = 0; e < TD; ++e) o[a][e] *= alpha;
    }
    __syncthreads();

    // O += P V: TM x TD per thread, one weight and one V element per TD and TM FMAs.
    for (int n = 0; n < BN; ++n) {
      float pv[TM], vv[TD];
      MRA_UNROLL
      for (int a = 0; a < TM; ++a) pv[a] = ws[(rg + RG * a) * BN + n];
      MRA_UNROLL
      for (int e = 0; e < TD; ++e) vv[e] = vs[n * D + kg + KG * e];
      MRA_UNROLL
      for (int a = 0; a < TM; ++a)
        MRA_UNROLL
        for (int e = 0; e < TD; ++e) o[a][e] += pv[a] * vv[e];
    }
    __syncthreads();
  }

  // Output: l summed over the group (xor order: the same bits in every lane), rows past Nq skipped, masked or
  // empty rows 0 (§1), under causal attention the poisoned rows NaN (§9.5).
  const Rows<T> out = out_rows<T>(p, slice);
  const int32_t nan_from = poisoned_from(p, slice, row0, first_bad_key(p, slice));
  MRA_UNROLL
  for (int a = 0; a < TM; ++a) {
    float lsum = l[a];
    for (int off = KG / 2; off > 0; off /= 2) lsum += __shfl_xor_sync(0xffffffffu, lsum, off);
    const int32_t row = row0 + rg + RG * a;
    if (row >= p.nq) continue;
    const bool real = is_real(p.qmask, b, p.nq, row) && lsum > 0.f;
    const bool poisoned = row >= nan_from && is_real(p.qmask, b, p.nq, row);
    if (kg == 0) save_row_stats(p, slice, row, real ? m[a] : -INFINITY, real ? lsum : 0.f);
    MRA_UNROLL
    for (int e = 0; e < TD; ++e)
      out.row(row)[kg + KG * e] = from_float<T>(poisoned ? quiet_nan() : real ? o[a][e] / lsum : 0.f);
  }
}

}  // namespace MRA_KERNEL_NAMESPACE
}  // namespace mra::kern
