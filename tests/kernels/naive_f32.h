// tests/kernels/naive_f32.h: MRA attention (docs/semantics.md §2.2, §2.6) and its backward (§7) written the plain
// way in f32, to calibrate the kernels' tolerances (docs/kernels.md, "Tolerances" and "Backward").
//
// It does in f32 what the kernels do in f32, on the same stored (dtype-rounded) inputs: pooled sums and means,
// dot products, exponentials and the weighted sums, each a plain sequential loop, and a two-pass softmax per
// row (exact maximum first). Its distance to the double reference on the same selection measures the error that
// f32 arithmetic alone causes on a case; the kernels must stay within a small multiple of it. It never runs the
// kernels' code and shares nothing with the reference but the inputs.
#pragma once

#include <cstdint>
#include <vector>

#include "mra/reference.h"

namespace mra::test {

// The output of `p` (inputs already rounded to the kernels' dtype) attending selection `s`, before any
// rounding to the output dtype: [batch, heads, nq, dim]. A slice whose real inputs are not all finite gives
// NaN rows for its real queries (§2.7).
// `round_p` rounds each exact weight before it multiplies V, where the kernel rounds P (identity for f32; the
// storage type's round-to-nearest on the tensor-core path, docs/kernels.md "Precision"); the row sum takes
// the unrounded weight, as in the kernel.
std::vector<float> naive_attention_f32(const mra::ref::Problem& p, const mra::ref::Config& c,
                                       const mra::ref::Selection& s, float (*round_p)(float));

// The backward of docs/semantics.md §7.3 written the same plain way in f32, to calibrate the backward kernels'
// tolerance (docs/kernels.md, "Backward"): per row the forward again (two-pass softmax, out_i, δ_i = dout_i·out_i),
// then every term's weight P and its gradient, exact entries straight to dq, dk, dv, coarse pairs summed over their
// rows and spread over the real tokens of their blocks at the end. Contiguous inputs with one K/V head per query
// head (a grouped problem is given expanded, and the caller sums dk, dv over each group). A slice whose real q, k,
// v or dout is not finite gives NaN on its real tokens (§7.5). `round_stored` rounds where a 16-bit configuration
// rounds (identity for f32): the forward's exact weights before P V (as naive_attention_f32's round_p), the stored
// output out_i that δ_i is taken from, and the backward's exact P and dS before they multiply dout, k and q (the A
// operands of its tensor-core products); the coarse terms stay unrounded, and the gradients are returned unrounded
// (the caller rounds them to the storage type, as the kernels' final store does).
struct GradientsF32 {
  std::vector<float> dq, dk, dv;
};
GradientsF32 naive_backward_f32(const mra::ref::Problem& p, const mra::ref::Config& c, const mra::ref::Selection& s,
                                const float* dout, float (*round_stored)(float));

}  // namespace mra::test
