// tests/emulator/kernels/warp.cu: test kernels for the warp operations (shuffles with masks and
// widths, votes, match, reduce, __syncwarp). Compiled as C++ into emulator_tests and checked with
// nvcc -arch=sm_90 -c (CTest label nvcc).
#include "kernels.h"

// Block sum whose final butterfly only warp 0 executes: the other warps have left the branch, so a
// shuffle that synchronised the whole block (instead of the warp) would deadlock or mix warps.
__global__ void block_sum_warp0_butterfly(const float* in, float* out, unsigned* nonzero) {
  __shared__ float partial[32];
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  const float v = in[blockIdx.x * blockDim.x + t];
  const unsigned votes = __ballot_sync(0xffffffffu, v != 0.0f);
  if (lane == 0) atomicAdd(nonzero, static_cast<unsigned>(__popc(votes)));
  float s = v;
  for (int offset = 16; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
  if (lane == 0) partial[warp] = s;
  __syncthreads();
  if (t < 32) {
    float p = t < blockDim.x / 32 ? partial[t] : 0.0f;
    for (int m = 16; m > 0; m /= 2) p += __shfl_xor_sync(0xffffffffu, p, m);
    if (t == 0) out[blockIdx.x] = p;
  }
}

cudaError_t run_block_sum_warp0_butterfly(unsigned blocks, unsigned threads, const float* in, float* out, unsigned* nonzero) {
  return simt::launch(block_sum_warp0_butterfly, dim3(blocks), dim3(threads), 0, nullptr, in, out, nonzero);
}

// Lanes 0-15 and 16-31 take different branches and shuffle within their half at the same time,
// with different operations; lanes 0-7 then shuffle again under an 8-lane mask.
__global__ void divergent_half_masks(int* out) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int base = static_cast<int>(threadIdx.x) - lane;
  int v = lane * 10;
  if (lane < 16) {
    v = __shfl_xor_sync(0x0000ffffu, v, 1);
    if (lane < 8) v += __shfl_sync(0x000000ffu, v, 7 - lane);
  } else {
    v = __shfl_down_sync(0xffff0000u, v, 2, 16);
  }
  out[base + lane] = v;
}

cudaError_t run_divergent_half_masks(unsigned threads, int* out) {
  return simt::launch(divergent_half_masks, dim3(1), dim3(threads), 0, nullptr, out);
}

// Every shuffle mode at every width with a few offsets; out[((mode*6+w)*NOFF+o)*32 + lane].
__global__ void shuffle_modes(int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  const int widths[6] = {1, 2, 4, 8, 16, 32};
  const int offsets[kShuffleOffsets] = {0, 1, 3, 5, 16, 31, 33};
  const int v = 100 + lane;
  for (int w = 0; w < 6; ++w)
    for (int o = 0; o < kShuffleOffsets; ++o) {
      const int at = (w * kShuffleOffsets + o) * 32 + lane;
      const int stride = 6 * kShuffleOffsets * 32;
      out[0 * stride + at] = __shfl_sync(0xffffffffu, v, offsets[o], widths[w]);
      out[1 * stride + at] = __shfl_up_sync(0xffffffffu, v, static_cast<unsigned>(offsets[o]), widths[w]);
      out[2 * stride + at] = __shfl_down_sync(0xffffffffu, v, static_cast<unsigned>(offsets[o]), widths[w]);
      out[3 * stride + at] = __shfl_xor_sync(0xffffffffu, v, offsets[o], widths[w]);
    }
}

cudaError_t run_shuffle_modes(int* out) { return simt::launch(shuffle_modes, dim3(1), dim3(32), 0, nullptr, out); }

// Shuffles of 8- and 16-bit-pair types, which travel as raw bytes.
__global__ void shuffle_wide_types(double* d_out, __half2* h_out, __nv_bfloat16* b_out) {
  const unsigned lane = threadIdx.x;
  const double d = 1.5 * lane + 1e-12 * lane;
  const __half2 h = __floats2half2_rn(static_cast<float>(lane), -static_cast<float>(lane));
  const __nv_bfloat16 b = __float2bfloat16(static_cast<float>(lane) * 0.25f);
  d_out[lane] = __shfl_xor_sync(0xffffffffu, d, 3);
  h_out[lane] = __shfl_sync(0xffffffffu, h, 31 - static_cast<int>(lane));
  b_out[lane] = __shfl_up_sync(0xffffffffu, b, 1);
}

cudaError_t run_shuffle_wide_types(double* d, __half2* h, __nv_bfloat16* b) {
  return simt::launch(shuffle_wide_types, dim3(1), dim3(32), 0, nullptr, d, h, b);
}

// Votes under the full mask and under a partial mask in a divergent branch; out[lane*6 + k].
__global__ void votes(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  unsigned* o = out + threadIdx.x * 6;
  o[0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
  o[1] = static_cast<unsigned>(__any_sync(0xffffffffu, lane == 30));
  o[2] = static_cast<unsigned>(__all_sync(0xffffffffu, lane < 31));
  if (lane % 2 == 1) {
    o[3] = __ballot_sync(0xaaaaaaaau, lane > 20);
    o[4] = static_cast<unsigned>(__all_sync(0xaaaaaaaau, lane % 2 == 1));
  } else {
    o[3] = __ballot_sync(0x55555555u, lane < 4);
    o[4] = static_cast<unsigned>(__any_sync(0x55555555u, lane == 31));
  }
  o[5] = __match_any_sync(0xffffffffu, lane / 4);
}

cudaError_t run_votes(unsigned threads, unsigned* out) {
  return simt::launch(votes, dim3(1), dim3(threads), 0, nullptr, out);
}

// A warp whose last lanes do not exist (blockDim 40) still completes full-mask operations, and a
// full-mask ballot after lanes 4-7 of warp 1 exited counts only the lanes that are left.
__global__ void partial_warp(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned sum = __reduce_add_sync(0xffffffffu, lane + 1);
  const unsigned max = __reduce_max_sync(0xffffffffu, lane * 3);
  out[threadIdx.x * 3 + 0] = sum;
  out[threadIdx.x * 3 + 1] = max;
  if (threadIdx.x >= 36) return;
  out[threadIdx.x * 3 + 2] = __ballot_sync(0xffffffffu, 1);
}

cudaError_t run_partial_warp(unsigned* out) { return simt::launch(partial_warp, dim3(1), dim3(40), 0, nullptr, out); }

// Lane 31 of each warp exits while other lanes of its warp already wait in a warp operation (each
// __nanosleep lets every other runnable thread run first, so they are waiting when it leaves). Warp 0:
// lanes 0-30 wait in a full-mask shuffle, which must complete when lane 31 exits (an exited lane counts
// as arrived), then a full-mask __syncwarp and ballot after the exit. Warp 1: lanes 0-29 wait in a
// ballot whose mask leaves lane 31 out and includes lane 30, which arrives after lane 31 exited: the
// exit must neither complete that ballot early nor hold it up.
__global__ void lane_exits_while_warp_waits(int* out) {
  const unsigned t = threadIdx.x, lane = t % 32;
  int* o = out + t * 3;
  if (lane == 31) {
    for (int i = 0; i < 8; ++i) __nanosleep(100);
    return;
  }
  if (t < 32) {
    o[0] = __shfl_sync(0xffffffffu, static_cast<int>(t * 10), (lane + 1) % 32);
    __syncwarp(0xffffffffu);
    o[1] = static_cast<int>(__ballot_sync(0xffffffffu, 1));
  } else {
    if (lane == 30)
      for (int i = 0; i < 16; ++i) __nanosleep(100);
    o[0] = static_cast<int>(__ballot_sync(0x7fffffffu, lane % 3 == 0));
  }
  o[2] = 1;
}

cudaError_t run_lane_exits_while_warp_waits(int* out) {
  return simt::launch(lane_exits_while_warp_waits, dim3(1), dim3(64), 0, nullptr, out);
}

// Lanes exchange through shared memory with __syncwarp in between: correct on sm_70+ only because of
// the __syncwarp calls.
__global__ void syncwarp_exchange(int* out) {
  __shared__ int s[64];
  const unsigned t = threadIdx.x;
  const unsigned lane = t % 32;
  s[t] = static_cast<int>(t * t);
  __syncwarp();
  int v = s[(t & ~31u) + (lane + 5) % 32];
  __syncwarp();
  s[t] = v + 1;
  __syncwarp();
  out[t] = s[(t & ~31u) + (31 - lane)];
}

cudaError_t run_syncwarp_exchange(int* out) { return simt::launch(syncwarp_exchange, dim3(1), dim3(64), 0, nullptr, out); }
