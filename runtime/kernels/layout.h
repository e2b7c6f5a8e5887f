// runtime/kernels/layout.h: the problem checks and the workspace layout shared by the kernels, both backends
// and the tests. Part of the mra::runtime targets (runtime/CMakeLists.txt); host code and kernels include it.
//
// The workspace holds, per coarse level l = 1 .. L-1 (index `li` = l - 1), the pooled means, V sums and token
// counts, and the refined pairs T_l as CSR: row offsets and, per row, the sorted key-block columns
// (docs/kernels.md, "Pipeline"). Level 1 never stores its (N/s_1)^2 pairs: it keeps the row maxima of its
// logits, a radix histogram, the selection state and per-row counts, and recomputes the logits in every pass.
// In mode full every level keeps its coarse components per block row (max, denominator, numerator[D]; coarse.cuh).
// Levels l >= 2 store one 64-bit key per candidate (rho^2 per refined pair above) and, under the global policy, the
// radix histograms, selection state and per-chunk counts of their GPU-wide select. The attention kernels also
// keep, per query row, the stabilizer and denominator of its softmax (`rowstats`): after a forward the
// workspace is the saved state the backward reads (docs/kernels.md, "Backward"). Offsets are in bytes from the
// workspace start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "mra.h"

namespace mra::kern {

inline constexpr int kMaxSteps = MRA_MAX_LEVELS - 1;
// Keys of the levels l >= 2 keep the candidate's slot in their low kSlotBits bits (docs/kernels.md,
// "Selection"); refined lists and row offsets are int32. Level 1 needs fewer than 2^26 block rows and columns
// (one CTA counts a 64-row band in 32 bits).
inline constexpr int kSlotBits = 31;
inline constexpr int64_t kSlotLimit = int64_t(1) << kSlotBits;
inline constexpr int64_t kLevel1BlockLimit = int64_t(1) << 26;
// The level-1 radix select: kPasses passes, a histogram of kHistBins bins per slice and pass (12, 11, 11 bits
// of the 34-bit rank value), stored with one more word (pass 0: the count of non-finite blocks).
inline constexpr int kPasses = 3, kHistBins = 4096, kHistWords = kHistBins + 1;
// Grid y carries the slice (batch * heads) and CUDA caps it at kMaxGridY: more slices are launched in parts.
// kMaxSlices and kMaxDim (larger than any head dim a kernel is generated for) keep every workspace size product
// below 2^63: slices * nq * dim <= 2^20 * 2^30 * 2^10.
inline constexpr unsigned kMaxGridY = 65535;
// The level-1 kernels (select.cuh, coarse.cuh) give each CTA a band of kLevel1Tile block rows and a range of key-block
// columns, kLevel1Tile at a time. At short N the bands alone are too few CTAs for the GPU (2 bands x 16 heads at
// N = 4K, s_1 = 32), so the columns of a band are split into `Level::split` ranges of whole tiles, enough for about
// kFillCtas CTAs per launch (2 per SM on 132 SMs). A constant, not a property of the device: the split, and with
// it the rounding of the level-1 coarse components, depends on the problem only.
inline constexpr int64_t kLevel1Tile = 64;
inline constexpr int64_t kFillCtas = 264;
// The selection of a level l >= 2 (global policy) spreads each slice's key slots over CTAs of kSelectThreads
// threads, `Level::chunk` consecutive slots each: kSelectChunk by default; a test may lower it to any multiple of
// kSelectThreads (the per-chunk counts are sized for the smallest).
inline constexpr int kSelectThreads = 256;
inline constexpr int64_t kSelectChunk = 4096;

// Level 1 at short N (global policy): when a slice has at most kSmallPairs level-1 pairs and at most kSmallRows block
// rows, its logits are computed once and stored (4 bytes per pair), and the selection runs from them in a few CTAs
// per slice, each a share of whole block rows (select.cuh, "short N"): `Level::shares` of them, as many as keep
// shares x slices within kSmallFill (one CTA per SM of a 132-SM GPU: a single wave), at least one, at most one
// per row. The bounds keep the last CTA's bit masks of the slice's pairs and its row array in shared memory;
// N = 4096 at s_1 = 32 (128 x 128 pairs) is the largest square problem. Like the split, a function of the problem
// only.
inline constexpr int64_t kSmallPairs = 16384, kSmallRows = 1024, kSmallFill = 132;
inline constexpr int64_t kMaxSlices = int64_t(1) << 20;
inline constexpr int64_t kMaxDim = 1 << 10;

// Where the level-1 selection of one slice stands after the pick of a radix pass (docs/kernels.md,
// "Selection"). While the radix passes run, `threshold` holds the rank-value bits found so far and `ties` how
// many pairs are still wanted at or below them; once `done`, the refined pairs are those with rank value >
// threshold, plus, among those equal to it, the first `ties` in flat order.
struct SelectState {
  uint64_t threshold, ties, done, candidates;
};

// Policy row (§10), level 1: a block row's own threshold and quota of ties, in SelectState's terms.
struct RowPick {
  uint64_t threshold, ties;
};

struct Level {
  int32_t side = 0, nq = 0, nk = 0;  // block side s_l, ceil(Nq / s_l), ceil(Nk / s_l)
  int64_t slots = 0;                 // candidate pairs per slice (capacity)
  int32_t cap = 0;                   // refined pairs per slice (capacity): min(budget_l, pairs)
  int64_t budget = 0;
  size_t qmean = 0, kmean = 0, vsum = 0;  // f32 [slices, n, D]
  size_t qcount = 0, kcount = 0;          // f32 [batch, n]
  size_t rowptr = 0;                      // i32 [slices, nq + 1]
  size_t col = 0;                         // i32 [slices, cap]: key-block column of each refined pair
  size_t keys = 0;                        // u64 [slices, slots]                 levels l >= 2
  size_t rowmax = 0;                      // f32 [slices, nq]: max logit per row  level 1
  // Level 1: column ranges per band (grid x = bands * split) and key-block columns per range (whole tiles).
  // 1 under policy row. With split > 1, the row maxima, per-row counts and coarse components are kept per range.
  int32_t split = 1, split_cols = 0;
  // * level 1 not small only (the multi-CTA kernels' own).
  size_t rowmax_part = 0;                 // f32 [slices, nq, split]: max logit per row and range, split > 1*
  size_t hist = 0;                        // u64 [slices, kPasses, kHistWords]    level 1*; l >= 2 global policy
  size_t state = 0;                       // SelectState [slices, kPasses]: after each pick   level 1; l >= 2 global
  // Levels l >= 2, global policy: slots per CTA of the selection launches, chunks per slice (grid x), and per
  // chunk the keys above the threshold and the ties.
  int32_t chunk = 0, chunks = 0;
  size_t chunkcount = 0;                  // u32 [slices, chunks, 2]
  size_t rowcount = 0;                    // u32 [slices, nq, split, 2]: (above, ties) per row and range  level 1*
  size_t rowpick = 0;                     // RowPick [slices, nq], policy row only        level 1
  size_t cmax = 0, cden = 0;              // f32 [slices, nq]: coarse max and denominator  mode full
  size_t cnum = 0;                        // f32 [slices, nq, D]: coarse numerator         mode full
  size_t pmax = 0, pden = 0, pnum = 0;    // the same per row and range ([slices, nq, split(, D)]), split > 1
  // Level 1 at short N (kSmallPairs): 1 when the selection runs from stored logits, `shares` CTAs per slice of
  // `share_rows` block rows each (the last may hold fewer).
  int32_t small = 0, shares = 0, share_rows = 0;
  size_t logits = 0;                      // f32 [slices, nq, nk]: the pooled logits (-inf: no candidate)  small
  // small: per share, its candidates' entries (rank value, flat index) in descending order of their radix pass-0
  // digit, in `keys` (u64 [slices, nq * nk], the share's from its first pair on), and where each digit's run ends
  // (with several shares per slice: a lone share keeps them in shared memory; shares x slices <= kSmallFill then).
  size_t bucket_end = 0;                  // u32 [slices, shares, kHistBins]: entries with a digit >= d   small
  // small: radix pass 0's histogram of the slice and the count of its non-finite blocks (last word), in 32 bits (at
  // most kSmallPairs per slice), and the shares of a slice that have ranked their rows (the one that draws
  // shares - 1 selects for the slice). Cleared by pool_kernel.
  size_t small_hist = 0;                  // u32 [slices, kHistWords]   small
  size_t ticket = 0;                      // u32 [slices]   small
};

struct Layout {
  int32_t steps = 0;           // L - 1
  int32_t by_row = 0;          // policy row (§10): every block row spends its own budget
  int32_t causal = 0;          // §9: query i sees key j only when j <= i + nk - nq
  Level level[kMaxSteps];
  // i32 [slices, nq_1 + nk_1]: level-1 block holds a non-finite real value: 0 when not; for a key block 1 + the
  // offset in the block of its first real key with a non-finite k or v (causal attention needs the key, §9.5).
  size_t block_bad = 0;
  size_t slice_bad = 0;        // i32 [slices]: the slice is poisoned (§2.7); always 0 under causal attention
  size_t first_bad = 0;        // i32 [slices]: causal only: the first real key with a non-finite k or v, nk if none
  size_t rowstats = 0;         // f32 [slices, nq, 2]: per query row (m_i, Z_i) of §7.2; (-inf, 0): no term
  // §8.4, a selection shared by each group of query heads (MRA_SELECTION_GROUP with heads_kv < heads): the group
  // region at byte `group` holds the layout of group_layout(), where the selection of every (batch, K/V head) is
  // made before group.cuh copies it to the slices of the group's query heads.
  int32_t shared = 0;
  size_t group = 0;
  size_t bytes = 0;
  // Slices per launch of the kernels with one slice per grid row: CUDA's grid-y cap. Tests lower it to run the
  // split into several launches (slice0 != 0, forward.cuh) with a few slices.
  uint32_t slices_per_launch = kMaxGridY;
};

// §8: the element strides of B, H and N in force for one tensor (the D stride is 1): the given ones, or the
// contiguous ones when all four are zero.
struct RowStrides {
  int64_t batch, head, row;
};
inline bool all_zero(const int64_t (&s)[4]) { return s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0; }
inline RowStrides row_strides(const int64_t (&s)[4], int64_t heads, int64_t n, int64_t dim) {
  return all_zero(s) ? RowStrides{heads * n * dim, n * dim, dim} : RowStrides{s[0], s[1], s[2]};
}
inline int64_t kv_heads(const mra_problem& p) { return p.heads_kv != 0 ? p.heads_kv : p.heads; }

// The largest element offset of a tensor with extents (batch, heads, n, dim) and strides `s` (checked).
inline int64_t max_offset(const RowStrides& s, int64_t batch, int64_t heads, int64_t n, int64_t dim) {
  return s.batch * (batch - 1) + s.head * (heads - 1) + s.row * (n - 1) + (dim - 1);
}

// §8's rules for one tensor's strides (sizes already bounded by make_layout): D stride 1, the others
// non-negative multiples of 16 bytes (the kernels' vector loads) with every offset below 2^62 elements.
inline bool strides_ok(const int64_t (&s)[4], int64_t elem_bytes, int64_t batch, int64_t heads, int64_t n) {
  if (all_zero(s)) return true;
  if (s[3] != 1) return false;
  const int64_t extent[3] = {batch, heads, n};
  int64_t span = 0;
  for (int d = 0; d < 3; ++d) {
    if (s[d] < 0 || (s[d] * elem_bytes) % 16 != 0 || s[d] > (int64_t(1) << 60) / elem_bytes) return false;
    span += s[d] * (extent[d] - 1);  // each term below 2^60 * 2^30 / 16: no overflow in three terms
    if (span >= (int64_t(1) << 62) / elem_bytes) return false;
  }
  return true;
}

// §8 rule 3: out's elements are distinct when, over its dimensions of extent > 1 sorted by stride, each stride
// exceeds the largest offset the smaller ones reach.
inline bool output_distinct(const RowStrides& s, int64_t batch, int64_t heads, int64_t n, int64_t dim) {
  int64_t stride[4] = {1, s.row, s.head, s.batch}, extent[4] = {dim, n, heads, batch};
  for (int i = 1; i < 4; ++i)  // insertion sort by stride, extents alongside
    for (int j = i; j > 0 && stride[j] < stride[j - 1]; --j) {
      const int64_t ts = stride[j], te = extent[j];
      stride[j] = stride[j - 1], extent[j] = extent[j - 1];
      stride[j - 1] = ts, extent[j - 1] = te;
    }
  int64_t reach = 0;
  for (int i = 0; i < 4; ++i) {
    if (extent[i] == 1) continue;
    if (stride[i] <= reach) return false;
    reach += stride[i] * (extent[i] - 1);
  }
  return true;
}
// Hands out consecutive 256-byte aligned regions of a workspace: take() returns a region's offset, `bytes` is
// the size so far.
struct Carver {
  size_t bytes = 0;
  size_t take(int64_t count, size_t elem) {
    const size_t start = bytes;
    bytes += (static_cast<size_t>(count) * elem + 255) / 256 * 256;
    return start;
  }
};

// Splits the key-block columns of level 1 (`v`, nk set) into at most `split` ranges of whole kLevel1Tile-column
// tiles, as even as the tiles allow and none empty. make_layout sizes the per-range workspace for its own split;
// a test may lower it (fewer ranges need less).
inline void set_level1_split(Level& v, int64_t split) {
  const int64_t tiles = (v.nk + kLevel1Tile - 1) / kLevel1Tile, most = split < tiles ? split : tiles;
  const int64_t per = (tiles + most - 1) / most;
  v.split = static_cast<int32_t>((tiles + per - 1) / per);
  v.split_cols = static_cast<int32_t>(per * kLevel1Tile);
}

// Cuts the key slots of a level l >= 2 (`v`, slots set) into chunks of `chunk` slots (a multiple of
// kSelectThreads, at most kSelectChunk), at least one. make_layout sizes the per-chunk counts for the smallest chunk;
// a test may lower it.
inline void set_select_chunk(Level& v, int64_t chunk) {
  v.chunk = static_cast<int32_t>(chunk);
  v.chunks = static_cast<int32_t>(v.slots > 0 ? (v.slots + chunk - 1) / chunk : 1);
}

inline mra_problem group_problem(const mra_problem& p);

// Which level-1 selection a layout is carved for: the one the problem takes (the short-N kernel when it qualifies,
// Level::small, below), or the multi-CTA kernels whatever the size, for tests that run both paths on one problem
// (each path's workspace holds only what its own kernels use).
enum class Level1Path { automatic, sweeps };

// Checks `p` (null pointers aside) and fills `out`. Statuses as documented in runtime/mra.h.
inline mra_status make_layout(const mra_problem& p, Layout* out, Level1Path path = Level1Path::automatic) {
  if (p.batch <= 0 || p.heads <= 0 || p.nq <= 0 || p.nk <= 0 || p.dim <= 0) return MRA_ERROR_BAD_SHAPE;
  // Each factor is bounded before any product is formed, so no size computation below can overflow.
  if (p.batch > kMaxSlices || p.heads > kMaxSlices || p.batch * p.heads > kMaxSlices) return MRA_ERROR_BAD_SHAPE;
  if (p.nq >= (int64_t(1) << 30) || p.nk >= (int64_t(1) << 30) || p.dim > kMaxDim) return MRA_ERROR_BAD_SHAPE;
  if (p.levels < 2 || p.levels > MRA_MAX_LEVELS) return MRA_ERROR_BAD_ARGUMENT;
  // A C caller can store any int in an enum field; reading it as the enum type would be undefined, so the
  // fields are read as the ints they are.
  static_assert(sizeof(mra_dtype) == sizeof(int) && sizeof(mra_mode) == sizeof(int) && sizeof(mra_policy) == sizeof(int));
  static_assert(sizeof(mra_selection) == sizeof(int));
  int dtype = 0, mode = 0, policy = 0, selection = 0;
  std::memcpy(&dtype, &p.dtype, sizeof dtype);
  std::memcpy(&mode, &p.mode, sizeof mode);
  std::memcpy(&policy, &p.policy, sizeof policy);
  std::memcpy(&selection, &p.selection, sizeof selection);
  if (dtype != MRA_DTYPE_F32 && dtype != MRA_DTYPE_F16 && dtype != MRA_DTYPE_BF16) return MRA_ERROR_BAD_ARGUMENT;
  if (mode != MRA_MODE_FULL && mode != MRA_MODE_SPARSE) return MRA_ERROR_BAD_ARGUMENT;
  if (policy != MRA_POLICY_GLOBAL && policy != MRA_POLICY_ROW) return MRA_ERROR_BAD_ARGUMENT;
  if (selection != MRA_SELECTION_HEAD && selection != MRA_SELECTION_GROUP) return MRA_ERROR_BAD_ARGUMENT;
  // Causal attention (§9) needs policy row (§9.4).
  if (p.causal != 0 && (p.causal != 1 || policy != MRA_POLICY_ROW)) return MRA_ERROR_BAD_ARGUMENT;
  if (p.prior_first < 0 || p.prior_diagonal < 0 || !(p.scale >= 0.0) || p.scale > 3.0e38)
    return MRA_ERROR_BAD_ARGUMENT;
  if (p.resolutions[p.levels - 1] != 1) return MRA_ERROR_BAD_ARGUMENT;
  // §8: grouped K/V heads and strides.
  if (p.heads_kv < 0 || p.heads % kv_heads(p) != 0) return MRA_ERROR_BAD_SHAPE;
  const int64_t elem = dtype == MRA_DTYPE_F32 ? 4 : 2, hkv = kv_heads(p);
  if (!strides_ok(p.strides.q, elem, p.batch, p.heads, p.nq) || !strides_ok(p.strides.k, elem, p.batch, hkv, p.nk) ||
      !strides_ok(p.strides.v, elem, p.batch, hkv, p.nk) || !strides_ok(p.strides.out, elem, p.batch, p.heads, p.nq))
    return MRA_ERROR_BAD_ARGUMENT;
  if (!output_distinct(row_strides(p.strides.out, p.heads, p.nq, p.dim), p.batch, p.heads, p.nq, p.dim))
    return MRA_ERROR_BAD_ARGUMENT;
  for (int l = 0; l + 1 < p.levels; ++l) {
    const int64_t s = p.resolutions[l], t = p.resolutions[l + 1];
    if (t <= 0 || s <= t || s % t != 0 || s > (int64_t(1) << 20)) return MRA_ERROR_BAD_ARGUMENT;
    if (p.budgets[l] < 0) return MRA_ERROR_BAD_ARGUMENT;
  }

  Layout L;
  L.steps = p.levels - 1;
  L.by_row = policy == MRA_POLICY_ROW;
  L.causal = p.causal;
  const int64_t slices = p.batch * p.heads;
  Carver carve;
  auto take = [&carve](int64_t count, size_t elem) { return carve.take(count, elem); };
  int64_t prev_cap = 0;
  for (int li = 0; li < L.steps; ++li) {
    Level& v = L.level[li];
    const int64_t s = p.resolutions[li];
    const int64_t nq = (p.nq + s - 1) / s, nk = (p.nk + s - 1) / s;
    if (li == 0 && (nq >= kLevel1BlockLimit || nk >= kLevel1BlockLimit)) return MRA_ERROR_BAD_SHAPE;
    const int64_t rho = li == 0 ? 0 : p.resolutions[li - 1] / s;
    const int64_t slots = li == 0 ? nq * nk : rho * rho * prev_cap;
    if (li > 0 && slots >= kSlotLimit) return MRA_ERROR_BAD_SHAPE;
    // Policy row: at most budget_l per block row, and no row has more than nk candidates (< 2^26 each); causal
    // attention refines besides them the at most two crossing pairs of each row (§9.3).
    const int64_t budgeted = p.causal ? p.budgets[li] + 2 : p.budgets[li];
    const int64_t per_row = budgeted < nk ? budgeted : nk;
    const int64_t most = L.by_row ? per_row * nq : p.budgets[li];
    const int64_t cap = most < slots ? most : slots;
    if (cap >= kSlotLimit) return MRA_ERROR_BAD_SHAPE;
    v.side = static_cast<int32_t>(s);
    v.nq = static_cast<int32_t>(nq);
    v.nk = static_cast<int32_t>(nk);
    v.slots = slots;
    v.cap = static_cast<int32_t>(cap);
    v.budget = p.budgets[li];
    v.qmean = take(slices * nq * p.dim, sizeof(float));
    v.kmean = take(slices * nk * p.dim, sizeof(float));
    v.vsum = take(slices * nk * p.dim, sizeof(float));
    v.qcount = take(p.batch * nq, sizeof(float));
    v.kcount = take(p.batch * nk, sizeof(float));
    v.rowptr = take(slices * (nq + 1), sizeof(int32_t));
    v.col = take(slices * (cap > 0 ? cap : 1), sizeof(int32_t));
    if (li > 0) {
      v.keys = take(slices * (slots > 0 ? slots : 1), sizeof(uint64_t));
      if (!L.by_row) {  // the GPU-wide radix select (policy row selects per row, select_row_kernel)
        set_select_chunk(v, kSelectThreads);
        v.chunkcount = take(slices * v.chunks * 2, sizeof(uint32_t));
        set_select_chunk(v, kSelectChunk);
        v.hist = take(slices * kPasses * kHistWords, sizeof(uint64_t));
        v.state = take(slices * kPasses, sizeof(SelectState));
      }
    } else {
      // Column ranges: as many as bring bands x slices x split to kFillCtas (policy row: 1).
      const int64_t bands = (nq + kLevel1Tile - 1) / kLevel1Tile;
      set_level1_split(v, L.by_row ? 1 : (kFillCtas + bands * slices - 1) / (bands * slices));
      v.small = path == Level1Path::automatic && !L.by_row && nq * nk <= kSmallPairs && nq <= kSmallRows;
      v.logits = take(v.small ? slices * nq * nk : 0, sizeof(float));
      if (v.small) {
        const int64_t fill = kSmallFill / slices > 1 ? kSmallFill / slices : 1, most = fill < nq ? fill : nq;
        v.share_rows = static_cast<int32_t>((nq + most - 1) / most);
        v.shares = static_cast<int32_t>((nq + v.share_rows - 1) / v.share_rows);
        v.keys = take(slices * nq * nk, sizeof(uint64_t));
        v.bucket_end = take(v.shares > 1 ? slices * v.shares * kHistBins : 0, sizeof(uint32_t));
        v.small_hist = take(slices * kHistWords, sizeof(uint32_t));
        v.ticket = take(slices, sizeof(uint32_t));
      }
      v.rowmax = take(slices * nq, sizeof(float));
      // The multi-CTA kernels' row maxima per range, radix histograms and per-row counts: none at short N.
      const int64_t sweeping = v.small ? 0 : slices;
      v.rowmax_part = take(v.split > 1 ? sweeping * nq * v.split : 0, sizeof(float));
      v.hist = take(sweeping * kPasses * kHistWords, sizeof(uint64_t));
      v.state = take(slices * kPasses, sizeof(SelectState));
      v.rowcount = take(sweeping * nq * v.split * 2, sizeof(uint32_t));
      v.rowpick = take(L.by_row ? slices * nq : 0, sizeof(RowPick));
      if (mode == MRA_MODE_FULL) {
        const int64_t parts = v.split > 1 ? slices * nq * v.split : 0;
        v.pmax = take(parts, sizeof(float));
        v.pden = take(parts, sizeof(float));
        v.pnum = take(parts * p.dim, sizeof(float));
      }
    }
    if (mode == MRA_MODE_FULL) {  // the coarse components per block row (coarse.cuh)
      v.cmax = take(slices * nq, sizeof(float));
      v.cden = take(slices * nq, sizeof(float));
      v.cnum = take(slices * nq * p.dim, sizeof(float));
    }
    prev_cap = cap;
  }
  L.block_bad = take(slices * (L.level[0].nq + L.level[0].nk), sizeof(int32_t));
  L.slice_bad = take(slices, sizeof(int32_t));
  L.first_bad = take(slices, sizeof(int32_t));
  L.rowstats = take(slices * p.nq * 2, sizeof(float));
  L.bytes = carve.bytes;
  // §8.4: a group of one head selects as the head does, so only real groups get a region of their own.
  if (selection == MRA_SELECTION_GROUP && hkv < p.heads) {
    Layout g;
    if (const mra_status s = make_layout(group_problem(p), &g, path)) return s;
    L.shared = 1;
    L.group = L.bytes;
    L.bytes += g.bytes;
  }
  *out = L;
  return MRA_SUCCESS;
}

// §8.4: the problem whose selection is that of the groups of `p`: one head per (batch, K/V head), contiguous, in
// mode sparse (the group region holds the selection only; the coarse components stay per head).
inline mra_problem group_problem(const mra_problem& p) {
  mra_problem g = p;
  g.heads = kv_heads(p);
  g.heads_kv = 0;
  g.strides = mra_strides{};
  g.mode = MRA_MODE_SPARSE;
  g.selection = MRA_SELECTION_HEAD;
  return g;
}

// The layout of the group region of a shared selection (L.shared): group_problem's layout, placed at L.group and
// sharing L's token counts (the group's masks are its heads' masks). Its slices are the (batch, K/V head) pairs.
inline Layout group_layout(const mra_problem& p, const Layout& L) {
  Layout g;
  // Accepted by the make_layout that set L.shared, whose level-1 path it takes (the group problem has the same
  // sizes and policy, so the automatic path chooses for it as for L).
  make_layout(group_problem(p), &g, L.level[0].small ? Level1Path::automatic : Level1Path::sweeps);
  auto shift = [&L](size_t& offset) { offset += L.group; };
  for (Level& v : g.level) {
    for (size_t* f : {&v.qmean, &v.kmean, &v.vsum, &v.rowptr, &v.col, &v.keys, &v.rowmax, &v.rowmax_part, &v.hist,
                      &v.state, &v.chunkcount, &v.rowcount, &v.rowpick, &v.cmax, &v.cden, &v.cnum, &v.pmax, &v.pden,
                      &v.pnum, &v.logits, &v.bucket_end, &v.small_hist, &v.ticket})
      shift(*f);
  }
  for (int li = 0; li < g.steps; ++li) {
    g.level[li].qcount = L.level[li].qcount;
    g.level[li].kcount = L.level[li].kcount;
  }
  for (size_t* f : {&g.block_bad, &g.slice_bad, &g.first_bad, &g.rowstats}) shift(*f);
  g.slices_per_launch = L.slices_per_launch;
  return g;
}

// The backward's own workspace (runtime/kernels/backward.cuh), besides the forward's: per query row
// δ_i = dout_i · out_i, a per-slice flag for a non-finite dout, and per coarse level the block-row sums of the
// coarse gradients (§7.3) and what each query and key block receives through its pooled mean and V sum.
struct BackLevel {
  size_t mmin = 0;          // f32 [slices, nq_l]: the smallest stabilizer m_i of the block's rows with terms
  size_t ubar = 0;          // f32 [slices, nq_l, D]: Σ_i exp(mmin - m_i) / Z_i · dout_i
  size_t dbar = 0;          // f32 [slices, nq_l]:    Σ_i exp(mmin - m_i) / Z_i · δ_i
  size_t gq = 0;            // f32 [slices, nq_l, D]: dq of every real query of the block through q̄
  size_t gk = 0, gv = 0;    // f32 [slices, nk_l, D]: dk through k̄ and dv through V of every real key of the block
};

struct BackLayout {
  size_t delta = 0;     // f32 [slices, nq]
  size_t dout_bad = 0;  // i32 [slices]
  BackLevel level[kMaxSteps];
  size_t bytes = 0;
};

// The backward workspace of a problem whose forward layout is `fwd` (make_layout checked the problem).
inline BackLayout make_back_layout(const mra_problem& p, const Layout& fwd) {
  BackLayout B;
  const int64_t slices = p.batch * p.heads;
  Carver carve;
  auto take = [&carve](int64_t count, size_t elem) { return carve.take(count, elem); };
  B.delta = take(slices * p.nq, sizeof(float));
  B.dout_bad = take(slices, sizeof(int32_t));
  for (int li = 0; li < fwd.steps; ++li) {
    const Level& v = fwd.level[li];
    BackLevel& g = B.level[li];
    g.mmin = take(slices * v.nq, sizeof(float));
    g.ubar = take(slices * v.nq * p.dim, sizeof(float));
    g.dbar = take(slices * v.nq, sizeof(float));
    g.gq = take(slices * v.nq * p.dim, sizeof(float));
    g.gk = take(slices * v.nk * p.dim, sizeof(float));
    g.gv = take(slices * v.nk * p.dim, sizeof(float));
  }
  B.bytes = carve.bytes;
  return B;
}

}  // namespace mra::kern
