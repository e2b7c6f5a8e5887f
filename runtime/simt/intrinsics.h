// simt/intrinsics.h: architecture-specific instructions behind plain functions, so kernels never
// contain inline PTX. Under nvcc each function is the PTX instruction; under the CPU emulation it
// is a warp collective that reproduces the instruction's register-fragment layout exactly.
// Included by simt/simt.h (build lines there); the layouts are spelled out in docs/emulator.md.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define SIMT_DEVICE __device__ __forceinline__
#else
#define SIMT_DEVICE inline
#endif

namespace simt {

#if !defined(__CUDACC__)
namespace detail {

struct MmaIn {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
};

inline float half_bits_to_float(uint32_t bits) { return __half2float(__ushort_as_half(static_cast<unsigned short>(bits))); }
inline float bf16_bits_to_float(uint32_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bits)));
}

// D = A*B + C over the whole warp: A is 16x16 (row), B is 16x8 (col), C and D are 16x8 f32.
// Fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane / 4 and t = lane % 4; the element with the lower column/row sits in the low 16 bits:
//   a[0] = A[g][2t..2t+1]   a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..2t+9]   a[3] = A[g+8][2t+8..2t+9]
//   b[0] = B[2t..2t+1][g]   b[1] = B[2t+8..2t+9][g]
//   c[0] = C[g][2t]  c[1] = C[g][2t+1]  c[2] = C[g+8][2t]  c[3] = C[g+8][2t+1]
template <float (*ToFloat)(uint32_t)>
void mma_m16n8k16_fn(LaneCall* const calls[32], unsigned participants) {
  if (participants != 0xffffffffu) fail(cudaErrorIllegalInstruction, "mma.sync needs all 32 lanes of the warp");
  float A[16][16], B[16][8], C[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const auto& in = *static_cast<const MmaIn*>(calls[l]->in);
    const unsigned g = l / 4, t = l % 4;
    for (unsigned h = 0; h < 2; ++h) {
      A[g][2 * t + h] = ToFloat(in.a[0] >> (16 * h));
      A[g + 8][2 * t + h] = ToFloat(in.a[1] >> (16 * h));
      A[g][2 * t + 8 + h] = ToFloat(in.a[2] >> (16 * h));
      A[g + 8][2 * t + 8 + h] = ToFloat(in.a[3] >> (16 * h));
      B[2 * t + h][g] = ToFloat(in.b[0] >> (16 * h));
      B[2 * t + 8 + h][g] = ToFloat(in.b[1] >> (16 * h));
    }
    C[g][2 * t] = in.c[0];
    C[g][2 * t + 1] = in.c[1];
    C[g + 8][2 * t] = in.c[2];
    C[g + 8][2 * t + 1] = in.c[3];
  }
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, t = l % 4;
    float* d = static_cast<float*>(calls[l]->out);
    const unsigned rows[4] = {g, g, g + 8, g + 8};
    const unsigned cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int i = 0; i < 4; ++i) {
      // Products of 16-bit floats are exact in double; one rounding to f32 at the end.
      double acc = 0.0;
      for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[rows[i]][k]) * B[k][cols[i]];
      d[i] = static_cast<float>(acc + C[rows[i]][cols[i]]);
    }
  }
}

// ldmatrix.m8n8.b16: lanes 8m..8m+7 give the 16-byte rows of matrix m; lane l receives, for every
// matrix m, r[m] = M[l/4][2(l%4) .. 2(l%4)+1], or with .trans M[2(l%4) .. 2(l%4)+1][l/4].
template <int Num, bool Trans>
void ldmatrix_fn(LaneCall* const calls[32], unsigned participants) {
  if (participants != 0xffffffffu) fail(cudaErrorIllegalInstruction, "ldmatrix needs all 32 lanes of the warp");
  uint16_t M[Num][8][8];
  for (int m = 0; m < Num; ++m)
    for (int r = 0; r < 8; ++r) {
      const void* row = *static_cast<const void* const*>(calls[8 * m + r]->in);
      if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
        fail(cudaErrorMisalignedAddress, "ldmatrix row address is not 16-byte aligned");
      std::memcpy(M[m][r], row, 16);
    }
  for (unsigned l = 0; l < 32; ++l) {
    uint32_t* out = static_cast<uint32_t*>(calls[l]->out);
    const unsigned g = l / 4, t = l % 4;
    for (int m = 0; m < Num; ++m) {
      const uint16_t lo = Trans ? M[m][2 * t][g] : M[m][g][2 * t];
      const uint16_t hi = Trans ? M[m][2 * t + 1][g] : M[m][g][2 * t + 1];
      out[m] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
  }
}

template <int Num, bool Trans>
void ldmatrix(uint32_t* r, const void* smem_row) {
  warp_collective(0xffffffffu, &ldmatrix_fn<Num, Trans>, 0, &smem_row, r, 0);
}

inline void check_cp_async_alignment(const void* smem, const void* gmem, unsigned bytes) {
  if (reinterpret_cast<uintptr_t>(smem) % bytes != 0 || reinterpret_cast<uintptr_t>(gmem) % bytes != 0)
    fail(cudaErrorMisalignedAddress, "cp.async address not aligned to the copy size");
}

}  // namespace detail
#endif

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 ----------------------------

SIMT_DEVICE void mma_m16n8k16_f32_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  const detail::MmaIn in{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  float out[4];
  detail::warp_collective(0xffffffffu, &detail::mma_m16n8k16_fn<&detail::half_bits_to_float>, 0, &in, out, 0);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#endif
}

SIMT_DEVICE void mma_m16n8k16_f32_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#if defined(__CUDACC__)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#else
  const detail::MmaIn in{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}};
  float out[4];
  detail::warp_collective(0xffffffffu, &detail::mma_m16n8k16_fn<&detail::bf16_bits_to_float>, 0, &in, out, 0);
  for (int i = 0; i < 4; ++i) d[i] = out[i];
#endif
}

// ---- ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16 -----------------------------------
// smem_row: this lane's row address in shared memory (lanes 0-7 for x1, 0-15 for x2, all for x4).

#if defined(__CUDACC__)
#define SIMT_LDMATRIX_PTX(suffix, ...)                                                           \
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));               \
  asm volatile("ldmatrix.sync.aligned.m8n8" suffix ".shared.b16 " __VA_ARGS__ : "memory")
#endif

SIMT_DEVICE void ldmatrix_x1(uint32_t r[1], const void* smem_row) {
#if defined(__CUDACC__)
  SIMT_LDMATRIX_PTX(".x1", "{%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
#else
  detail::ldmatrix<1, false>(r, smem_row);
#endif
}
SIMT_DEVICE void ldmatrix_x2(uint32_t r[2], const void* smem_row) {
#if defined(__CUDACC__)
  SIMT_LDMATRIX_PTX(".x2", "{%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
#else
  detail::ldmatrix<2, false>(r, smem_row);
#endif
}
SIMT_DEVICE void ldmatrix_x4(uint32_t r[4], const void* smem_row) {
#if defined(__CUDACC__)
  SIMT_LDMATRIX_PTX(".x4", "{%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
#else
  detail::ldmatrix<4, false>(r, smem_row);
#endif
}
SIMT_DEVICE void ldmatrix_x1_trans(uint32_t r[1], const void* smem_row) {
#if defined(__CUDACC__)
  SIMT_LDMATRIX_PTX(".x1.trans", "{%0}, [%1];\n" : "=r"(r[0]) : "r"(addr));
#else
  detail::ldmatrix<1, true>(r, smem_row);
#endif
}
SIMT_DEVICE void ldmatrix_x2_trans(uint32_t r[2], const void* smem_row) {
#if defined(__CUDACC__)
  SIMT_LDMATRIX_PTX(".x2.trans", "{%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
#else
  detail::ldmatrix<2, true>(r, smem_row);
#endif
}
SIMT_DEVICE void ldmatrix_x4_trans(uint32_t r[4], const void* smem_row) {
#if defined(__CUDACC__)
  SIMT_LDMATRIX_PTX(".x4.trans", "{%0,%1,%2,%3}, [%4];\n"
                    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                    : "r"(addr));
#else
  detail::ldmatrix<4, true>(r, smem_row);
#endif
}

// ---- cp.async ----------------------------------------------------------------------------------
// The emulation keeps each thread's copies pending until a cp_async_wait that covers their group,
// so a kernel that reads shared memory before waiting sees stale data, as it may on the GPU.

SIMT_DEVICE void cp_async_4(void* smem, const void* gmem) {
#if defined(__CUDACC__)
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem)
               : "memory");
#else
  detail::check_cp_async_alignment(smem, gmem, 4);
  detail::cp_async(smem, gmem, 4, 4);
#endif
}
SIMT_DEVICE void cp_async_8(void* smem, const void* gmem) {
#if defined(__CUDACC__)
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem)
               : "memory");
#else
  detail::check_cp_async_alignment(smem, gmem, 8);
  detail::cp_async(smem, gmem, 8, 8);
#endif
}
SIMT_DEVICE void cp_async_16(void* smem, const void* gmem) {
#if defined(__CUDACC__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem)
               : "memory");
#else
  detail::check_cp_async_alignment(smem, gmem, 16);
  detail::cp_async(smem, gmem, 16, 16);
#endif
}
// Copies src_bytes (0..16) from gmem and zero-fills the rest of the 16 bytes: the bounds-guarded
// load of a tile edge. gmem is not read when src_bytes is 0.
SIMT_DEVICE void cp_async_16_zfill(void* smem, const void* gmem, unsigned src_bytes) {
#if defined(__CUDACC__)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                   static_cast<unsigned>(__cvta_generic_to_shared(smem))),
               "l"(gmem), "r"(src_bytes)
               : "memory");
#else
  detail::check_cp_async_alignment(smem, src_bytes ? gmem : smem, 16);
  detail::cp_async(smem, gmem, 16, src_bytes > 16 ? 16 : src_bytes);
#endif
}
SIMT_DEVICE void cp_async_commit() {
#if defined(__CUDACC__)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  detail::cp_async_commit();
#endif
}
// Waits until at most N of this thread's most recently committed groups are still in flight.
template <int N>
SIMT_DEVICE void cp_async_wait() {
  static_assert(N >= 0 && N <= 7, "cp.async.wait_group takes 0..7");
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  detail::cp_async_wait(N);
#endif
}
// Commits the pending copies and waits for all of them.
SIMT_DEVICE void cp_async_wait_all() {
#if defined(__CUDACC__)
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#else
  detail::cp_async_commit();
  detail::cp_async_wait(0);
#endif
}

}  // namespace simt

#undef SIMT_DEVICE
#if defined(__CUDACC__)
#undef SIMT_LDMATRIX_PTX
#endif
