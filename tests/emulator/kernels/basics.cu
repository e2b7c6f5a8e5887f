// tests/emulator/kernels/basics.cu: test kernels for indices, shared memory, __syncthreads and
// schedules. Compiled as C++ into emulator_tests (tests/emulator/CMakeLists.txt) and checked with
// nvcc -arch=sm_90 -c (CTest label nvcc).
#include "kernels.h"

// ---- indices -------------------------------------------------------------------------------------

__global__ void write_indices(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
  unsigned* o = out + 8 * (block * per_block + thread);
  o[0] = threadIdx.x;
  o[1] = threadIdx.y;
  o[2] = threadIdx.z;
  o[3] = blockIdx.x;
  o[4] = blockIdx.y;
  o[5] = blockIdx.z;
  o[6] = blockDim.x * 10000 + blockDim.y * 100 + blockDim.z;
  o[7] = gridDim.x * 10000 + gridDim.y * 100 + gridDim.z;
}

cudaError_t run_write_indices(dim3 grid, dim3 block, unsigned* out) {
  return simt::launch(write_indices, grid, block, 0, nullptr, out);
}

// ---- static shared memory: one instance per block --------------------------------------------------

// Each block counts its threads into a __shared__ counter that thread 0 resets; a shared instance
// leaking between blocks (or one per thread) would give the wrong count.
__global__ void count_threads_in_block(const int* values, int* block_sums, unsigned* block_counts) {
  __shared__ unsigned count;
  __shared__ int sum;
  if (threadIdx.x == 0) {
    count = 0;
    sum = 0;
  }
  __syncthreads();
  atomicAdd(&count, 1u);
  atomicAdd(&sum, values[blockIdx.x * blockDim.x + threadIdx.x]);
  __syncthreads();
  if (threadIdx.x == 0) {
    block_sums[blockIdx.x] = sum;
    block_counts[blockIdx.x] = count;
  }
}

cudaError_t run_count_threads_in_block(unsigned blocks, unsigned threads, const int* values, int* sums, unsigned* counts) {
  return simt::launch(count_threads_in_block, dim3(blocks), dim3(threads), 0, nullptr, values, sums, counts);
}

// ---- dynamic shared memory -----------------------------------------------------------------------

__global__ void reverse_in_block(const float* in, float* out, int n) {
  SIMT_DYNAMIC_SHARED(float, s);
  const int t = static_cast<int>(threadIdx.x);
  const int base = static_cast<int>(blockIdx.x * blockDim.x);
  if (base + t < n) s[t] = in[base + t];
  __syncthreads();
  const int src = static_cast<int>(blockDim.x) - 1 - t;
  if (base + t < n && base + src < n) out[base + t] = s[src];
}

cudaError_t run_reverse_in_block(unsigned blocks, unsigned threads, const float* in, float* out, int n) {
  return simt::launch(reverse_in_block, dim3(blocks), dim3(threads), threads * sizeof(float), nullptr, in, out, n);
}

// Touches every byte of `bytes` of dynamic shared memory: each thread fills a strided share with a
// pattern, then after the barrier another thread checks a different share.
__global__ void fill_dynamic_shared(unsigned bytes, unsigned* errors) {
  SIMT_DYNAMIC_SHARED(unsigned char, s);
  for (unsigned i = threadIdx.x; i < bytes; i += blockDim.x) s[i] = static_cast<unsigned char>(i * 7u + blockIdx.x);
  __syncthreads();
  unsigned bad = 0;
  for (unsigned i = (threadIdx.x + 1) % blockDim.x; i < bytes; i += blockDim.x)
    bad += s[i] != static_cast<unsigned char>(i * 7u + blockIdx.x);
  atomicAdd(errors, bad);
}

cudaError_t set_fill_dynamic_shared_limit(int bytes) { return simt::set_max_dynamic_shared(fill_dynamic_shared, bytes); }

cudaError_t run_fill_dynamic_shared(unsigned blocks, unsigned threads, unsigned bytes, unsigned* errors) {
  return simt::launch(fill_dynamic_shared, dim3(blocks), dim3(threads), bytes, nullptr, bytes, errors);
}

// ---- __syncthreads ---------------------------------------------------------------------------------

// Tree reduction in shared memory: correct only because of its barriers.
__global__ void tree_sum(const int* in, int* out) {
  __shared__ int s[256];
  const unsigned t = threadIdx.x;
  s[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

cudaError_t run_tree_sum(unsigned blocks, const int* in, int* out) {
  return simt::launch(tree_sum, dim3(blocks), dim3(256), 0, nullptr, in, out);
}

// The same exchange without the barrier: a data race that only the schedule decides.
__global__ void rotate_without_barrier(const int* in, int* out) {
  SIMT_DYNAMIC_SHARED(int, s);
  const unsigned t = threadIdx.x;
  s[t] = in[t];
  out[t] = s[(t + 1) % blockDim.x];
}

__global__ void rotate_with_barrier(const int* in, int* out) {
  SIMT_DYNAMIC_SHARED(int, s);
  const unsigned t = threadIdx.x;
  s[t] = in[t];
  __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

cudaError_t run_rotate(bool with_barrier, unsigned threads, const int* in, int* out) {
  return with_barrier ? simt::launch(rotate_with_barrier, dim3(1), dim3(threads), threads * sizeof(int), nullptr, in, out)
                      : simt::launch(rotate_without_barrier, dim3(1), dim3(threads), threads * sizeof(int), nullptr, in, out);
}

// Threads past n return before the barriers: unless n covers the block, a barrier that not every
// thread reaches, which the emulator reports.
__global__ void early_exit_then_barrier(int n, int* out) {
  __shared__ int s[128];
  const int t = static_cast<int>(threadIdx.x);
  if (t >= n) return;
  s[t] = t * 2;
  __syncthreads();
  out[t] = s[n - 1 - t];
  __syncthreads();
  out[t] += 1;
}

cudaError_t run_early_exit_then_barrier(int n, int* out) {
  return simt::launch(early_exit_then_barrier, dim3(1), dim3(128), 0, nullptr, n, out);
}

__global__ void barrier_predicates(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int count = __syncthreads_count(t % 3 == 0);
  const int all = __syncthreads_and(t < 1000);
  const int none = __syncthreads_and(t != 5);
  const int any = __syncthreads_or(t == 17);
  const int nothing = __syncthreads_or(0);
  out[t * 5 + 0] = count;
  out[t * 5 + 1] = all;
  out[t * 5 + 2] = none;
  out[t * 5 + 3] = any;
  out[t * 5 + 4] = nothing;
}

cudaError_t run_barrier_predicates(unsigned threads, int* out) {
  return simt::launch(barrier_predicates, dim3(1), dim3(threads), 0, nullptr, out);
}

// Thread 0 publishes a value late; the others spin on it, yielding with __nanosleep.
__global__ void spin_until_published(int* out) {
  __shared__ volatile int flag;
  __shared__ int value;
  if (threadIdx.x == 0) {
    flag = 0;
    value = 0;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 0; i < 3; ++i) __nanosleep(100);
    value = 42;
    __threadfence_block();
    flag = 1;
  } else {
    while (flag == 0) __nanosleep(100);
  }
  out[threadIdx.x] = value;
}

cudaError_t run_spin_until_published(unsigned threads, int* out) {
  return simt::launch(spin_until_published, dim3(1), dim3(threads), 0, nullptr, out);
}

// A per-thread array far larger than a register file, to exercise the fiber stacks.
__global__ void large_local_array(int* out) {
  int local[4096];
  for (int i = 0; i < 4096; ++i) local[i] = i ^ static_cast<int>(threadIdx.x);
  __syncthreads();
  int acc = 0;
  for (int i = 0; i < 4096; i += 7) acc += local[i];
  out[threadIdx.x] = acc;
}

cudaError_t run_large_local_array(unsigned threads, int* out) {
  return simt::launch(large_local_array, dim3(2), dim3(threads), 0, nullptr, out);
}
