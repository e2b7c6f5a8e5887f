// tests/emulator/kernels/mma.cu: test kernels for the intrinsics layer: mma.sync m16n8k16 (f16 and
// bf16), ldmatrix in every variant, cp.async with commit/wait groups. Compiled as C++ into
// emulator_tests and checked with nvcc -arch=sm_90 -c (CTest label nvcc).
#include "kernels.h"

namespace {

__device__ uint32_t pack(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }

}  // namespace

// One warp: fragments assembled from global memory by the PTX layout, D stored by the C layout.
// A is 16x16 row-major, B is 16x8 (K x N) row-major, C and D are 16x8 row-major. `flags` bit 0 swaps
// a[1] and a[2], the mistake a kernel makes when it mixes up the fragment order.
__global__ void mma_direct(bool bf16, const uint16_t* A, const uint16_t* B, const float* C, float* D, int flags) {
  const unsigned lane = threadIdx.x, g = lane / 4, t = lane % 4;
  uint32_t a[4] = {pack(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]), pack(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]),
                   pack(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]),
                   pack(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9])};
  if (flags & 1) {
    const uint32_t x = a[1];
    a[1] = a[2];
    a[2] = x;
  }
  const uint32_t b[2] = {pack(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]), pack(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g])};
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  if (bf16)
    simt::mma_m16n8k16_f32_bf16(d, a, b, c);
  else
    simt::mma_m16n8k16_f32_f16(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

cudaError_t run_mma_direct(bool bf16, const uint16_t* A, const uint16_t* B, const float* C, float* D, int flags) {
  return simt::launch(mma_direct, dim3(1), dim3(32), 0, nullptr, bf16, A, B, C, D, flags);
}

// The same product with the fragments loaded by ldmatrix from shared memory. A_stored is A (16x16)
// row-major, or column-major (A transposed) when a_col_major; B_stored is B (16x8, K x N) row-major,
// or column-major (N x K) when b_col_major. Row-major A and column-major B load plainly, the other
// two need .trans.
__global__ void mma_ldmatrix(bool bf16, bool a_col_major, bool b_col_major, const uint16_t* A_stored, const uint16_t* B_stored,
                             const float* C, float* D) {
  __shared__ __align__(16) uint16_t sa[16 * 16];
  __shared__ __align__(16) uint16_t sb[16 * 8];
  const unsigned lane = threadIdx.x, g = lane / 4, t = lane % 4;
  for (unsigned i = lane; i < 256; i += 32) sa[i] = A_stored[i];
  for (unsigned i = lane; i < 128; i += 32) sb[i] = B_stored[i];
  __syncwarp();

  // Matrix m = lane / 8 of the x4 load is the a[m] fragment: rows 8*(m%2).., k 8*(m/2)..
  const unsigned m = lane / 8, r = lane % 8;
  uint32_t a[4];
  if (!a_col_major) {
    simt::ldmatrix_x4(a, &sa[(r + 8 * (m % 2)) * 16 + 8 * (m / 2)]);
  } else {
    // Stored rows are k; matrix m covers k 8*(m/2).. and A rows 8*(m%2)..
    simt::ldmatrix_x4_trans(a, &sa[(r + 8 * (m / 2)) * 16 + 8 * (m % 2)]);
  }
  uint32_t b[2];
  const unsigned mb = (lane / 8) % 2;
  if (!b_col_major) {
    simt::ldmatrix_x2_trans(b, &sb[(r + 8 * mb) * 8]);  // stored rows are k
  } else {
    simt::ldmatrix_x2(b, &sb[r * 16 + 8 * mb]);  // stored rows are n, 16 k each
  }
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  if (bf16)
    simt::mma_m16n8k16_f32_bf16(d, a, b, c);
  else
    simt::mma_m16n8k16_f32_f16(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

cudaError_t run_mma_ldmatrix(bool bf16, bool a_col_major, bool b_col_major, const uint16_t* A, const uint16_t* B, const float* C,
                             float* D) {
  return simt::launch(mma_ldmatrix, dim3(1), dim3(32), 0, nullptr, bf16, a_col_major, b_col_major, A, B, C, D);
}

// Loads `num` 8x8 matrices (matrix m is rows 8m..8m+7 of the 32x8 input) and dumps every lane's
// registers: out[lane * 4 + m].
__global__ void ldmatrix_dump(int num, bool trans, const uint16_t* in, uint32_t* out) {
  __shared__ __align__(16) uint16_t s[32 * 8];
  for (unsigned i = threadIdx.x; i < 256; i += 32) s[i] = in[i];
  __syncwarp();
  uint32_t r[4] = {0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu, 0xdeadbeefu};
  const void* row = &s[(threadIdx.x % (8 * num)) * 8];
  if (num == 1) {
    if (trans) simt::ldmatrix_x1_trans(r, row); else simt::ldmatrix_x1(r, row);
  } else if (num == 2) {
    if (trans) simt::ldmatrix_x2_trans(r, row); else simt::ldmatrix_x2(r, row);
  } else {
    if (trans) simt::ldmatrix_x4_trans(r, row); else simt::ldmatrix_x4(r, row);
  }
  for (int m = 0; m < 4; ++m) out[threadIdx.x * 4 + m] = r[m];
}

cudaError_t run_ldmatrix_dump(int num, bool trans, const uint16_t* in, uint32_t* out) {
  return simt::launch(ldmatrix_dump, dim3(1), dim3(32), 0, nullptr, num, trans, in, out);
}

// Stages two 16-byte chunks per thread with cp.async in two groups and samples shared memory
// before any wait, after wait<1> (first group only) and after wait<0>. out[t*6 + k]: first word of
// chunk 0 and chunk 1 at each of the three points.
__global__ void cp_async_groups(const int4* in, int* out) {
  SIMT_DYNAMIC_SHARED(int4, s);
  const unsigned t = threadIdx.x;
  simt::cp_async_16(&s[2 * t], &in[2 * t]);
  simt::cp_async_commit();
  simt::cp_async_16(&s[2 * t + 1], &in[2 * t + 1]);
  simt::cp_async_commit();
  out[t * 6 + 0] = s[2 * t].x;
  out[t * 6 + 1] = s[2 * t + 1].x;
  simt::cp_async_wait<1>();
  out[t * 6 + 2] = s[2 * t].x;
  out[t * 6 + 3] = s[2 * t + 1].x;
  simt::cp_async_wait<0>();
  out[t * 6 + 4] = s[2 * t].x;
  out[t * 6 + 5] = s[2 * t + 1].x;
}

cudaError_t run_cp_async_groups(unsigned threads, const int4* in, int* out) {
  return simt::launch(cp_async_groups, dim3(1), dim3(threads), 2 * threads * sizeof(int4), nullptr, in, out);
}

// A tile load where each thread copies 4, 8 and 16 bytes, the last one with a partial source
// (zero-filled tail), then the block reads what its neighbours copied.
__global__ void cp_async_sizes(const int* in, unsigned src_bytes, int* out) {
  __shared__ __align__(16) int s[64 * 8];
  const unsigned t = threadIdx.x;
  simt::cp_async_4(&s[t * 8 + 0], &in[t * 8 + 0]);
  simt::cp_async_8(&s[t * 8 + 2], &in[t * 8 + 2]);
  simt::cp_async_16_zfill(&s[t * 8 + 4], &in[t * 8 + 4], src_bytes);
  simt::cp_async_wait_all();
  __syncthreads();
  const unsigned n = (t + 1) % blockDim.x;
  for (int k = 0; k < 8; ++k) out[t * 8 + k] = k == 1 ? 0 : s[n * 8 + k];
}

cudaError_t run_cp_async_sizes(unsigned threads, const int* in, unsigned src_bytes, int* out) {
  return simt::launch(cp_async_sizes, dim3(1), dim3(threads), 0, nullptr, in, src_bytes, out);
}
