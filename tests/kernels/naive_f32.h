// tests/kernels/naive_f32.h: MRA attention (docs/semantics.md §2.2, §2.6) written the plain way in f32, to
// calibrate the kernels' output tolerance (docs/kernels.md, "Tolerances").
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

}  // namespace mra::test
