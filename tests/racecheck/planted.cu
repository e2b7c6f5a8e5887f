// tests/racecheck/planted.cu: kernels with planted races (and their corrected twins) for the racecheck
// build: ThreadSanitizer must report each race between two CUDA threads, naming this file in both
// stacks, and stay silent on the corrected kernels. Run one case per process by racecheck_main.cpp.
// Also valid CUDA (it goes through the same simt/simt.h).
#include "simt/simt.h"

#include "planted.h"

// Each thread stores its element of a tile, then reads its neighbour's: without the barrier the read
// races with the neighbour's store (read after write).
__global__ void neighbour_without_barrier(int* out, int with_barrier) {
  __shared__ int tile[64];
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = t * 3;
  if (with_barrier) __syncthreads();
  out[t] = tile[(t + 1) % 64];
}

// A histogram counted with plain `+=`: every increment of a bin races with the others (a lost
// update, even though this schedule happens to give the exact count).
__global__ void histogram_plain_add(unsigned* out, int atomic) {
  __shared__ unsigned hist[4];
  const unsigned t = threadIdx.x;
  if (t < 4) hist[t] = 0;
  __syncthreads();
  if (atomic)
    atomicAdd(&hist[t % 4], 1u);
  else
    hist[t % 4] += 1;
  __syncthreads();
  if (t < 4) out[t] = hist[t];
}

// A tile loop that loads the next tile while slower threads may still read the previous one: the
// second barrier of each iteration is what separates them (write after read).
__global__ void tile_loop_one_barrier(const int* in, int* out, int tiles, int both_barriers) {
  __shared__ int tile[32];
  const int t = static_cast<int>(threadIdx.x);
  int acc = 0;
  for (int i = 0; i < tiles; ++i) {
    tile[t] = in[i * 32 + t];
    __syncthreads();
    acc += tile[31 - t];
    if (both_barriers) __syncthreads();
  }
  out[t] = acc;
}

// Blocks of a grid are unordered: two blocks adding to one global word without an atomic race.
__global__ void blocks_add_to_one_word(int* out, int atomic) {
  if (threadIdx.x != 0) return;
  if (atomic)
    atomicAdd(out, 1);
  else
    *out += 1;
}

// Lanes exchange through shared memory: without __syncwarp the read races with the other lane's write.
__global__ void warp_exchange(int* out, int with_syncwarp) {
  __shared__ int s[32];
  const unsigned lane = threadIdx.x % 32;
  s[lane] = static_cast<int>(lane);
  if (with_syncwarp) __syncwarp();
  out[lane] = s[31 - lane];
}

// A warp reduction through shuffles, then a block total through shared memory: clean.
__global__ void shuffle_reduction(const int* in, int* out) {
  __shared__ int partial[4];
  const unsigned t = threadIdx.x;
  int v = in[t];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (t % 32 == 0) partial[t / 32] = v;
  __syncthreads();
  if (t == 0) out[0] = partial[0] + partial[1] + partial[2] + partial[3];
}

cudaError_t run_planted(Planted which, bool fixed) {
  static int in[32 * 8];
  static int out[128];
  static unsigned counts[4];
  for (int i = 0; i < 32 * 8; ++i) in[i] = i;
  switch (which) {
    case Planted::missing_barrier:
      return simt::launch(neighbour_without_barrier, dim3(1), dim3(64), 0, nullptr, out, int{fixed});
    case Planted::lost_update:
      return simt::launch(histogram_plain_add, dim3(1), dim3(128), 0, nullptr, counts, int{fixed});
    case Planted::write_after_read:
      return simt::launch(tile_loop_one_barrier, dim3(1), dim3(32), 0, nullptr, static_cast<const int*>(in), out, 8, int{fixed});
    case Planted::blocks_same_word:
      out[0] = 0;
      return simt::launch(blocks_add_to_one_word, dim3(2), dim3(32), 0, nullptr, out, int{fixed});
    case Planted::missing_syncwarp:
      return simt::launch(warp_exchange, dim3(1), dim3(32), 0, nullptr, out, int{fixed});
    case Planted::shuffle_reduction:
      return simt::launch(shuffle_reduction, dim3(1), dim3(128), 0, nullptr, static_cast<const int*>(in), out);
  }
  return cudaErrorInvalidValue;
}
