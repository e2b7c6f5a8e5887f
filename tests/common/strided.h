// tests/common/strided.h: building the inputs of docs/semantics.md §8 from contiguous tensors, for the tests of
// grouped K/V heads and strided layouts: K/V heads repeated for every query head of their group, and copies of a
// [B, H, N, D] tensor into a buffer with other element strides (FlashAttention's [B, N, H, D], padded rows).
// The tests then check that these problems give exactly the output of the contiguous, one-K/V-head-per-head one.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace mra::test {

using Strides4 = std::array<int64_t, 4>;  // element strides of dimensions [B, H, N, D]

// [B, Hkv, N, D] -> [B, Hkv * group, N, D]: query head h gets a copy of K/V head h / group.
template <class T>
std::vector<T> repeat_heads(const std::vector<T>& x, int64_t batch, int64_t heads_kv, int64_t n, int64_t dim,
                            int64_t group) {
  std::vector<T> out;
  out.reserve(x.size() * size_t(group));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads_kv * group; ++h) {
      const auto first = x.begin() + ((b * heads_kv + h / group) * n) * dim;
      out.insert(out.end(), first, first + n * dim);
    }
  return out;
}

// Strides of [B, N, H, D] storage (FlashAttention's layout) for a tensor of `heads` heads.
inline Strides4 bnhd_strides(int64_t heads, int64_t n, int64_t dim) { return {n * heads * dim, dim, heads * dim, 1}; }

// Strides with every row `pad` elements longer than D and `gap` elements between heads and batches: rows stay
// distinct but nothing is contiguous. `align` rounds the row length up (the kernels' vector loads, §8).
inline Strides4 padded_strides(int64_t heads, int64_t n, int64_t dim, int64_t pad, int64_t gap, int64_t align = 1) {
  const int64_t row = (dim + pad + align - 1) / align * align;
  const int64_t head = (n * row + gap + align - 1) / align * align;
  return {heads * head + head, head, row, 1};
}

// The number of elements a buffer needs for extents [B, H, N, D] with strides s (non-negative).
inline int64_t span_of(const Strides4& s, const Strides4& extent) {
  int64_t last = 0;
  for (size_t d = 0; d < 4; ++d) last += s[d] * (extent[d] - 1);
  return last + 1;
}

// A copy of the contiguous [B, H, N, D] tensor x stored with strides s; elements no index reaches hold `fill`.
template <class T>
std::vector<T> scatter(const std::vector<T>& x, const Strides4& extent, const Strides4& s, T fill) {
  std::vector<T> out(size_t(span_of(s, extent)), fill);
  size_t t = 0;
  for (int64_t b = 0; b < extent[0]; ++b)
    for (int64_t h = 0; h < extent[1]; ++h)
      for (int64_t i = 0; i < extent[2]; ++i)
        for (int64_t d = 0; d < extent[3]; ++d) out[size_t(b * s[0] + h * s[1] + i * s[2] + d * s[3])] = x[t++];
  return out;
}

// The contiguous [B, H, N, D] tensor stored in `buf` with strides s.
template <class T>
std::vector<T> gather(const std::vector<T>& buf, const Strides4& extent, const Strides4& s) {
  std::vector<T> out;
  out.reserve(size_t(extent[0] * extent[1] * extent[2] * extent[3]));
  for (int64_t b = 0; b < extent[0]; ++b)
    for (int64_t h = 0; h < extent[1]; ++h)
      for (int64_t i = 0; i < extent[2]; ++i)
        for (int64_t d = 0; d < extent[3]; ++d) out.push_back(buf[size_t(b * s[0] + h * s[1] + i * s[2] + d * s[3])]);
  return out;
}

// How many elements of `buf` differ from `fill` outside the positions strides s reach: 0 when a writer with
// these strides touched nothing else.
template <class T>
int64_t written_outside(const std::vector<T>& buf, const Strides4& extent, const Strides4& s, T fill) {
  std::vector<char> reached(buf.size(), 0);
  for (int64_t b = 0; b < extent[0]; ++b)
    for (int64_t h = 0; h < extent[1]; ++h)
      for (int64_t i = 0; i < extent[2]; ++i)
        for (int64_t d = 0; d < extent[3]; ++d) reached[size_t(b * s[0] + h * s[1] + i * s[2] + d * s[3])] = 1;
  int64_t n = 0;
  for (size_t t = 0; t < buf.size(); ++t) n += !reached[t] && !(buf[t] == fill);
  return n;
}

}  // namespace mra::test
