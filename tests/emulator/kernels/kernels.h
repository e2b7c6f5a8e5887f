// tests/emulator/kernels/kernels.h: host entry points of the emulator test kernels (kernels/*.cu),
// shared by the kernel files and the doctest files of tests/emulator.
#pragma once

#include "simt/simt.h"

#include <cstdint>

// basics.cu
cudaError_t run_write_indices(dim3 grid, dim3 block, unsigned* out);
cudaError_t run_count_threads_in_block(unsigned blocks, unsigned threads, const int* values, int* sums, unsigned* counts);
cudaError_t run_reverse_in_block(unsigned blocks, unsigned threads, const float* in, float* out, int n);
cudaError_t set_fill_dynamic_shared_limit(int bytes);
cudaError_t run_fill_dynamic_shared(unsigned blocks, unsigned threads, unsigned bytes, unsigned* errors);
cudaError_t run_tree_sum(unsigned blocks, const int* in, int* out);
cudaError_t run_rotate(bool with_barrier, unsigned threads, const int* in, int* out);
cudaError_t run_early_exit_then_barrier(int n, int* out);
cudaError_t run_barrier_predicates(unsigned threads, int* out);
cudaError_t run_spin_until_published(unsigned threads, int* out);
cudaError_t run_large_local_array(unsigned threads, int* out);

// warp.cu
inline constexpr int kShuffleOffsets = 7;
cudaError_t run_block_sum_warp0_butterfly(unsigned blocks, unsigned threads, const float* in, float* out, unsigned* nonzero);
cudaError_t run_divergent_half_masks(unsigned threads, int* out);
cudaError_t run_shuffle_modes(int* out);
cudaError_t run_shuffle_wide_types(double* d, __half2* h, __nv_bfloat16* b);
cudaError_t run_votes(unsigned threads, unsigned* out);
cudaError_t run_partial_warp(unsigned* out);
cudaError_t run_lane_exits_while_warp_waits(int* out);
cudaError_t run_syncwarp_exchange(int* out);

// atomics.cu
struct AtomicCounters {
  int i_add, i_sub;
  unsigned u_add;
  unsigned long long ull_add;
  float f_add;
  double d_add;
  int i_max, i_min;
  unsigned u_max, u_min;
  long long ll_max;
  unsigned long long ull_min;
  unsigned u_or, u_xor, u_and, u_inc;
  int i_exch, i_cas;
  __half h_add;
};
cudaError_t run_contended_atomics(unsigned blocks, unsigned threads, AtomicCounters* c, int* block_totals);
cudaError_t run_last_block_sums(unsigned blocks, const int* in, int* partials, unsigned* ticket, int* total);

// errors.cu
enum class ErrorKernel { shuffle_half_warp, barrier_vs_syncwarp, uneven_barriers, mask_without_caller, mixed_operations, trap };
cudaError_t run_error_kernel(ErrorKernel k, int* out);
cudaError_t run_no_op(dim3 grid, dim3 block, size_t dynamic_smem, int* out);
cudaError_t set_no_op_dynamic_shared_limit(int bytes);

// contract.cu
cudaError_t run_read_static_shared_first(unsigned blocks, unsigned* out);
cudaError_t run_static_shared_address(uintptr_t* out);
// kernel 0 or 1: two kernels that call one device function with a static shared variable.
cudaError_t run_device_function_shared(int kernel, unsigned blocks, unsigned* out);
cudaError_t run_write_own_shared(uintptr_t* out);
enum class ContractKernel {
  barrier_at_two_sites,
  reduce_add_against_max,
  shuffle_xor_against_down,
  any_against_all,
  active_mask,
  spin_on_unset_flag
};
cudaError_t run_contract_kernel(ContractKernel k, void* out);
cudaError_t run_forty_kib_static(size_t dynamic_bytes, int* out);
cudaError_t set_forty_kib_static_limit(int bytes);
cudaError_t run_write_dynamic_shared_at(unsigned ints, int offset, int* out);
cudaError_t run_call_noinline(unsigned threads, int* out);

// mma.cu
cudaError_t run_mma_direct(bool bf16, const uint16_t* A, const uint16_t* B, const float* C, float* D, int flags);
cudaError_t run_mma_ldmatrix(bool bf16, bool a_col_major, bool b_col_major, const uint16_t* A, const uint16_t* B, const float* C,
                             float* D);
cudaError_t run_ldmatrix_dump(int num, bool trans, const uint16_t* in, uint32_t* out);
cudaError_t run_cp_async_groups(unsigned threads, const int4* in, int* out);
cudaError_t run_cp_async_sizes(unsigned threads, const int* in, unsigned src_bytes, int* out);

// math.cu
inline constexpr int kMathFunctions = 12;
cudaError_t run_half_fma(const __half* a, const __half* b, const __half* c, __half* out, __half2* out2, int n);
cudaError_t run_bf16_fma(const __nv_bfloat16* a, const __nv_bfloat16* b, const __nv_bfloat16* c, __nv_bfloat16* out, int n);
cudaError_t run_math_functions(const float* x, float* out, int n);
