// tests/emulator/kernels/math.cu: fp16/bf16 arithmetic the toolkit leaves device-only and the
// fast-math intrinsics, applied element-wise. Compiled as C++ into emulator_tests and checked with
// nvcc -arch=sm_90 -c (CTest label nvcc).
#include "kernels.h"

__global__ void half_fma(const __half* a, const __half* b, const __half* c, __half* out, __half2* out2, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  out[i] = __hfma(a[i], b[i], c[i]);
  out2[i] = __hfma2(__halves2half2(a[i], c[i]), __halves2half2(b[i], b[i]), __halves2half2(c[i], a[i]));
}

cudaError_t run_half_fma(const __half* a, const __half* b, const __half* c, __half* out, __half2* out2, int n) {
  return simt::launch(half_fma, dim3((n + 127) / 128), dim3(128), 0, nullptr, a, b, c, out, out2, n);
}

__global__ void bf16_fma(const __nv_bfloat16* a, const __nv_bfloat16* b, const __nv_bfloat16* c, __nv_bfloat16* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = __hfma(a[i], b[i], c[i]);
}

cudaError_t run_bf16_fma(const __nv_bfloat16* a, const __nv_bfloat16* b, const __nv_bfloat16* c, __nv_bfloat16* out, int n) {
  return simt::launch(bf16_fma, dim3((n + 127) / 128), dim3(128), 0, nullptr, a, b, c, out, n);
}

// out[i * kMathFunctions + k]: function k of x[i].
__global__ void math_functions(const float* x, float* out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const float v = x[i];
  float* o = out + i * kMathFunctions;
  o[0] = __expf(v);
  o[1] = __logf(v + 10.0f);
  o[2] = rsqrtf(v + 10.0f);
  o[3] = __fdividef(v, 3.0f);
  o[4] = __sinf(v);
  o[5] = __powf(2.0f, v);
  o[6] = __half2float(hexp(__float2half(v)));
  o[7] = __bfloat162float(hexp(__float2bfloat16(v)));
  o[8] = __half2float(hsqrt(__float2half(v + 10.0f)));
  o[9] = __saturatef(v);
  o[10] = __fmaf_rn(v, 3.0f, 1.0f);
  o[11] = static_cast<float>(__float2int_rn(v * 2.5f));
}

cudaError_t run_math_functions(const float* x, float* out, int n) {
  return simt::launch(math_functions, dim3((n + 63) / 64), dim3(64), 0, nullptr, x, out, n);
}
