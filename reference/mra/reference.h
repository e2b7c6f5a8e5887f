// reference/mra/reference.h: the reference implementation of exact and MRA attention.
//
// This library is the executable form of docs/semantics.md: every rule there is implemented here, in plain
// C++ with the standard library only, and every generated kernel is judged against it. Read it top to bottom
// beside the document. Link with the CMake target `mra::reference`.
//
// Tensors are float arrays, by default contiguous row-major:
//   Q [B, H, Nq, D], K [B, Hkv, Nk, D], V [B, Hkv, Nk, D], output [B, H, Nq, D];
//   Hkv = heads_kv divides H; query head h reads K/V head h / (H / Hkv) (grouped K/V heads, GQA/MQA, §8);
//   Problem::layout gives any of them element strides instead, e.g. [B, N, H, D] (§8);
//   masks [B, Nq] (queries) and [B, Nk] (keys), bytes: 0 = padding, any other value = real token (the rule of
//   runtime/mra.h); nullptr means "all real".
// Sums, dot products and exponentials are carried out in double, so that the reference is the more accurate
// side of any comparison with a float kernel; results are rounded to float once, at the end.
//
// Errors (bad shapes, bad configurations, an invalid selection) throw mra::ref::Error with a one-line message.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mra::ref {

class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Element strides of one [B, H, N, D] tensor, in that order (docs/semantics.md §8). All zero: contiguous.
// Otherwise the D stride must be 1 and the others non-negative; element (b, h, n, d) is at
// b * s[0] + h * s[1] + n * s[2] + d.
using Strides = std::array<int64_t, 4>;
struct Layout {
  Strides q{}, k{}, v{}, out{};  // k and v index the heads_kv K/V heads
};

// One attention problem: shapes, the input pointers, the masks and the softmax scale; the K/V heads, the
// strides (§8) and causal attention (§9) come last, so that a problem written without them is the contiguous,
// one-K/V-head-per-head, non-causal case.
struct Problem {
  int64_t batch = 1, heads = 1, nq = 0, nk = 0, dim = 0;
  const float* q = nullptr;  // [batch, heads, nq, dim]
  const float* k = nullptr;  // [batch, kv_heads(), nk, dim]
  const float* v = nullptr;  // [batch, kv_heads(), nk, dim]
  const uint8_t* query_mask = nullptr;  // [batch, nq], 0 = padding, non-zero = real; nullptr: all real
  const uint8_t* key_mask = nullptr;    // [batch, nk], 0 = padding, non-zero = real; nullptr: all real
  double scale = 0.0;                   // logit scale; 0 selects the default 1/sqrt(dim)
  int64_t heads_kv = 0;                 // K/V heads, dividing heads; 0 means heads (§8)
  Layout layout{};                      // element strides of q, k, v and the output; all zero: contiguous
  bool causal = false;                  // §9: query i sees key j only when j <= i + (nk - nq)

  // Every field in one expression: Problem::of(B, H, Nq, Nk, D, q, k, v) and, when needed, the masks, the scale
  // and causal attention.
  static Problem of(int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t dim, const float* q,
                    const float* k, const float* v, const uint8_t* query_mask = nullptr,
                    const uint8_t* key_mask = nullptr, double scale = 0.0, bool causal = false) {
    Problem p{batch, heads, nq, nk, dim, q, k, v, query_mask, key_mask, scale};
    p.causal = causal;
    return p;
  }

  double effective_scale() const;
  int64_t kv_heads() const { return heads_kv != 0 ? heads_kv : heads; }
  // The K/V head that query head h reads (§8).
  int64_t kv_head(int64_t h) const { return h / (heads / kv_heads()); }
  // The strides in force for each tensor: the layout's, or the contiguous ones where it gives none.
  Strides q_strides() const;
  Strides k_strides() const;
  Strides v_strides() const;
  Strides out_strides() const;
  // Throws Error naming the first problem found (zero or negative sizes, null pointers, bad scale, heads_kv not
  // dividing heads, a bad stride, an output whose elements overlap).
  void validate() const;
  // validate(), and throws Error when `out` is null or its elements can share memory with q, k or v.
  void validate_output(const float* out) const;
};

enum class Mode { full, sparse };

// §10: how a level's budget is spent. global: the top budget_l pairs of the whole slice (§2.4); row: the top
// budget_l pairs of every block row of the level, each row on its own.
enum class Policy { global, row };

// §8.4: whose queries choose the blocks of a slice. head: every query head its own (the default); group: one
// selection per (batch, K/V head), ranked by the mean of the group's queries and shared by its query heads.
enum class Scope { head, group };

// An MRA configuration: resolutions, budgets, mode and priors.
struct Config {
  // Block sides s_1 > s_2 > ... > s_L = 1, each dividing the one before.
  std::vector<int64_t> scales{32, 1};
  // budgets[l]: how many blocks of side scales[l] are refined to side scales[l+1], per batch and head.
  // One entry per refinement step (scales.size() - 1 entries). A budget larger than the number of
  // candidate blocks refines all of them.
  std::vector<int64_t> budgets{};
  Mode mode = Mode::full;
  int64_t prior_first = 0;     // the first n block rows and block columns (global tokens) are preferred
  int64_t prior_diagonal = 0;  // blocks with |r - c| <= n / 2 are preferred (a band of 2*(n/2)+1 blocks)
  // global: budgets[l] blocks per slice; row: budgets[l] blocks per block row of side scales[l] (§10).
  Policy policy = Policy::global;
  // head: a selection per (batch, query head); group: one per (batch, K/V head), budgets per group (§8.4).
  Scope selection = Scope::head;

  // The largest block side: the generated kernels' limit, so that every backend accepts the same scales and no
  // product of a side with a block index or count can overflow 64 bits.
  static constexpr int64_t kMaxSide = int64_t(1) << 20;

  // Throws Error naming the first problem found (scales not decreasing, not dividing, not ending at 1, above
  // kMaxSide, wrong number of budgets, negative budgets or priors).
  void validate() const;
  // validate(), then the rules that tie the configuration to a problem: causal attention needs policy row (§9.4).
  void validate(const Problem& p) const;
};

// The budget of the HF/official `block_per_row` setting at the coarsest level: blocks_per_row * ceil(nq / s_1),
// capped at the number of level-1 blocks. Deeper levels get the same number of blocks per row of their own
// side: blocks_per_row * ceil(nq / s_l), capped by what the previous level can offer.
std::vector<int64_t> budgets_from_blocks_per_row(const std::vector<int64_t>& scales, int64_t nq, int64_t nk,
                                                 int64_t blocks_per_row);

// ---------------------------------------------------------------------------------------------------------
// Exact softmax attention (docs/semantics.md §1). Every function taking `out` writes it with the layout's out
// strides and refuses an `out` that overlaps the inputs (Problem::validate_output).
void exact_attention(const Problem& p, float* out);

// ---------------------------------------------------------------------------------------------------------
// Stage 1: masked pooling at one block side (docs/semantics.md §2.2).
struct Pooled {
  int64_t side = 0;                  // block side s
  int64_t nq_blocks = 0, nk_blocks = 0;  // ceil(nq / s), ceil(nk / s)
  std::vector<int64_t> q_count;      // [B, nq_blocks]: real queries per block
  std::vector<int64_t> k_count;      // [B, nk_blocks]: real keys per block
  // Per query head, also with grouped K/V heads: head h holds the pooling of K/V head kv_head(h).
  std::vector<double> q_mean;        // [B, H, nq_blocks, D]: mean of the real queries (0 if none)
  std::vector<double> k_mean;        // [B, H, nk_blocks, D]: mean of the real keys (0 if none)
  std::vector<double> v_sum;         // [B, H, nk_blocks, D]: sum of the real values
};
Pooled pool(const Problem& p, int64_t side);

// The coarse logit of one block pair, scale * q_mean[r] . k_mean[c]; -infinity for an inactive pair (a block
// without real queries or without real keys).
double coarse_logit(const Problem& p, const Pooled& pooled, int64_t b, int64_t h, int64_t r, int64_t c);

// All coarse logits at one level, [B, H, nq_blocks, nk_blocks]. O((N/s)^2): for the coarsest level only.
std::vector<double> coarse_logits(const Problem& p, const Pooled& pooled);

// ---------------------------------------------------------------------------------------------------------
// Stage 2: the selection (docs/semantics.md §2.4-2.5, §9.3, §10).
// refined[(b * H + h) * (L - 1) + l] holds the flat indices r * nk_blocks(l) + c of the blocks of side
// scales[l] refined to side scales[l + 1], sorted ascending. Every refined block of level l > 0 lies inside
// a refined block of level l - 1. With causal attention the pairs that cross the diagonal are among them.
struct Selection {
  int64_t batch = 0, heads = 0, steps = 0;  // steps = L - 1
  std::vector<std::vector<int64_t>> refined;

  const std::vector<int64_t>& at(int64_t b, int64_t h, int64_t step) const {
    return refined[static_cast<size_t>((b * heads + h) * steps + step)];
  }
  std::vector<int64_t>& at(int64_t b, int64_t h, int64_t step) {
    return refined[static_cast<size_t>((b * heads + h) * steps + step)];
  }
};
Selection select(const Problem& p, const Config& c);

// Throws Error unless `s` is a valid selection for (p, c): right dimensions, indices in range and sorted
// without duplicates, every block active, every block of a finer level inside a refined block of the level
// above, and with causal attention no future pair and every crossing candidate pair refined (§9.3). Budgets are
// not checked: a user may pass any selection.
void validate_selection(const Problem& p, const Config& c, const Selection& s);

// ---------------------------------------------------------------------------------------------------------
// Stage 3: attention given a selection (docs/semantics.md §2.6). Never forms an N x N matrix.
void attend(const Problem& p, const Config& c, const Selection& s, float* out);

// MRA forward: select, then attend.
void mra_attention(const Problem& p, const Config& c, float* out);

// ---------------------------------------------------------------------------------------------------------
// Stage 4: the backward pass given a selection (docs/semantics.md §7): the gradients of L = sum dout . out with
// respect to q, k and v, the selection held fixed. `dout` has the output's shape [B, H, Nq, D] and is read with the
// layout's out strides; its rows of masked queries are never read. The gradients are contiguous; dk and dv have
// the K/V heads' shape and sum the contributions of every query head of the group (§8). Gradients are kept in double (the reference side of any comparison with a float
// kernel); masked tokens get 0, the real tokens of a non-finite slice NaN (§7.5).
struct Gradients {
  std::vector<double> dq;  // [B, H, Nq, D]
  std::vector<double> dk;  // [B, Hkv, Nk, D]
  std::vector<double> dv;  // [B, Hkv, Nk, D]
};
// Causal attention (§9.7): only the entries a query sees carry gradient; a non-finite slice is NaN as in §7.5.
Gradients attend_backward(const Problem& p, const Config& c, const Selection& s, const float* dout);

// MRA backward with the selection of the forward: select, then attend_backward.
Gradients mra_attention_backward(const Problem& p, const Config& c, const float* dout);

// Statistics of a selection, for reports: how many entries of the attention matrix are computed exactly.
struct Coverage {
  int64_t exact_entries = 0;  // entries evaluated at resolution 1 (real query x real key, visible under §9)
  int64_t total_entries = 0;  // real query x real key entries (visible ones under §9)
  double exact_fraction() const { return total_entries ? double(exact_entries) / double(total_entries) : 0.0; }
};
Coverage coverage(const Problem& p, const Config& c, const Selection& s);

}  // namespace mra::ref
