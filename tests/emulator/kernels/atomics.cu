// tests/emulator/kernels/atomics.cu: contended atomics on global and shared memory. Compiled as C++
// into emulator_tests and checked with nvcc -arch=sm_90 -c (CTest label nvcc).
#include "kernels.h"

// Every thread of every block hits the same few global words; with several worker threads the
// blocks really run at the same time. A shared-memory counter per block is hit by all its threads.
__global__ void contended_atomics(AtomicCounters* c, int* block_totals) {
  __shared__ int shared_total;
  if (threadIdx.x == 0) shared_total = 0;
  __syncthreads();
  const int id = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(&c->i_add, 1);
  atomicSub(&c->i_sub, 2);
  atomicAdd(&c->u_add, 3u);
  atomicAdd(&c->ull_add, 1ull << 33);
  atomicAdd(&c->f_add, 1.0f);
  atomicAdd(&c->d_add, 0.5);
  atomicMax(&c->i_max, id);
  atomicMin(&c->i_min, -id);
  atomicMax(&c->u_max, static_cast<unsigned>(id) * 2u);
  atomicMin(&c->u_min, static_cast<unsigned>(id) + 5u);
  atomicMax(&c->ll_max, static_cast<long long>(id) << 33);
  atomicMin(&c->ull_min, (static_cast<unsigned long long>(id) << 33) + 9);
  atomicOr(&c->u_or, 1u << (id % 32));
  atomicXor(&c->u_xor, static_cast<unsigned>(id));
  atomicAnd(&c->u_and, ~(1u << (id % 31)));
  atomicInc(&c->u_inc, 9u);
  atomicExch(&c->i_exch, id);
  atomicAdd(&c->h_add, __float2half(1.0f));
  // A compare-and-swap loop: the classic emulation of an atomic that does not exist.
  int old = c->i_cas, assumed;
  do {
    assumed = old;
    old = atomicCAS(&c->i_cas, assumed, assumed + 7);
  } while (old != assumed);
  atomicAdd(&shared_total, id);
  __syncthreads();
  if (threadIdx.x == 0) block_totals[blockIdx.x] = shared_total;
}

cudaError_t run_contended_atomics(unsigned blocks, unsigned threads, AtomicCounters* c, int* block_totals) {
  return simt::launch(contended_atomics, dim3(blocks), dim3(threads), 0, nullptr, c, block_totals);
}

// "Last block done": the block that finishes last (by an atomic ticket) sums what the others wrote.
__global__ void last_block_sums(const int* in, int* partials, unsigned* ticket, int* total) {
  __shared__ bool last;
  __shared__ int s[128];
  s[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) s[threadIdx.x] += s[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = s[0];
    __threadfence();
    last = atomicInc(ticket, gridDim.x) == gridDim.x - 1;
  }
  __syncthreads();
  if (last && threadIdx.x == 0) {
    int sum = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) sum += atomicAdd(&partials[b], 0);
    *total = sum;
  }
}

cudaError_t run_last_block_sums(unsigned blocks, const int* in, int* partials, unsigned* ticket, int* total) {
  return simt::launch(last_block_sums, dim3(blocks), dim3(128), 0, nullptr, in, partials, ticket, total);
}
