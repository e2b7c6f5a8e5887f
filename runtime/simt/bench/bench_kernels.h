// simt/bench/bench_kernels.h: host entry points of the simt-bench kernels (bench_kernels.cu).
#pragma once

#include "simt/simt.h"

cudaError_t run_barrier_storm(unsigned blocks, unsigned threads, int iterations, unsigned* out);
cudaError_t run_shuffle_storm(unsigned blocks, unsigned threads, int iterations, unsigned* out);
cudaError_t run_no_sync(unsigned blocks, unsigned threads, unsigned* out);
