// tests/common/storage.h: the kernels' storage types seen from the tests: unit roundoff and element size of a dtype,
// round-to-nearest into f16/bf16 (where the kernels round), and conversion of f32 test vectors to the stored bytes
// and back. Host code through <cuda_fp16.h> / <cuda_bf16.h> (the CUDA toolkit's, or runtime/simt's without nvcc).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mra.h"

namespace mra::test {

inline double unit_roundoff(mra_dtype t) {
  return t == MRA_DTYPE_F32 ? 0x1.0p-24 : t == MRA_DTYPE_F16 ? 0x1.0p-11 : 0x1.0p-8;
}
inline size_t elem_size(mra_dtype t) { return t == MRA_DTYPE_F32 ? 4 : 2; }

// Where the tensor-core kernels round (docs/kernels.md, "Precision"): the naive implementations round the same
// values the same way, so the calibrated tolerance measures that rounding too.
inline float round_f16(float x) { return __half2float(__float2half_rn(x)); }
inline float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
inline float round_none(float x) { return x; }
inline float (*rounding(mra_dtype t))(float) {
  return t == MRA_DTYPE_F16 ? round_f16 : t == MRA_DTYPE_BF16 ? round_bf16 : round_none;
}

// Rounds `x` to the storage type in place and returns its bytes in that type.
inline std::vector<unsigned char> to_storage(std::vector<float>& x, mra_dtype t) {
  std::vector<unsigned char> bytes(x.size() * elem_size(t));
  for (size_t i = 0; i < x.size(); ++i) {
    if (t == MRA_DTYPE_F16) {
      const __half h = __float2half_rn(x[i]);
      x[i] = __half2float(h);
      std::memcpy(&bytes[2 * i], &h, 2);
    } else if (t == MRA_DTYPE_BF16) {
      const __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
      x[i] = __bfloat162float(h);
      std::memcpy(&bytes[2 * i], &h, 2);
    } else {
      std::memcpy(&bytes[4 * i], &x[i], 4);
    }
  }
  return bytes;
}

// The first n elements of `bytes` (type t) as f32.
inline std::vector<float> from_storage(const unsigned char* bytes, mra_dtype t, size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) {
    if (t == MRA_DTYPE_F16) {
      __half h;
      std::memcpy(&h, bytes + 2 * i, 2);
      x[i] = __half2float(h);
    } else if (t == MRA_DTYPE_BF16) {
      __nv_bfloat16 h;
      std::memcpy(&h, bytes + 2 * i, 2);
      x[i] = __bfloat162float(h);
    } else {
      std::memcpy(&x[i], bytes + 4 * i, 4);
    }
  }
  return x;
}

// Fills n elements of type t with a large finite value (f32 and bf16 0x7f7f..: 3.4e38, f16 0x7bff: 65504), so
// that an element the kernels leave unwritten fails any comparison instead of passing as NaN or zero.
inline void poison(unsigned char* out, size_t n, mra_dtype t) {
  const uint16_t half = t == MRA_DTYPE_F16 ? 0x7bffu : 0x7f7fu;
  for (size_t i = 0; i < n; ++i) {
    if (t == MRA_DTYPE_F32) std::memset(out + 4 * i, 0x7f, 4);
    else std::memcpy(out + 2 * i, &half, 2);
  }
}

}  // namespace mra::test
