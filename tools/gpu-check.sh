#!/usr/bin/env bash
# tools/gpu-check.sh: the GPU check of the generated kernels, for a machine with an NVIDIA GPU.
#   tools/gpu-check.sh            (build folder build-gpu/, override with MRA_BUILD_DIR; logs in it)
# Builds the CUDA backend for the GPU at hand (CMake's "native" architecture), runs every kernel cross-check of
# tests/kernels on it against the reference (CTest tests kernels.cuda and backward.cuda: the same cases the CPU
# emulation runs in CI),
# then times each configuration against dense exact attention, the forward and, where the configuration has backward
# kernels, the backward on the state its forward saved (bench_kernels_cuda: CUDA events, 3 warm-ups, median of 21,
# q/k/v larger than L2), and prints that table last. Sized for about 5 minutes on one H200 (estimated; the backward
# timings are new and have never run). Without a GPU the cross-checks report themselves skipped and the script fails.
# Exit status: non-zero when the build, a cross-check or a timing run fails.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MRA_BUILD_DIR:-build-gpu}
jobs=$(nproc 2>/dev/null || echo 4)
mkdir -p "$build"
tools/bootstrap.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "gpu-check: configuring and building ($build)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DMRA_CUDA_ARCHITECTURES=native >"$build/gpu-check.configure.log"
cmake --build "$build" -j "$jobs" --target test_kernels_cuda test_backward_kernels_cuda bench_kernels_cuda \
  >"$build/gpu-check.build.log" 2>&1 ||
  { tail -n 40 "$build/gpu-check.build.log"; exit 1; }

echo "gpu-check: kernel cross-checks on the GPU (ctest kernels.cuda, backward.cuda)"
status=0
ctest --test-dir "$build" -R '^(kernels|backward)[.]cuda$' --no-tests=error --output-on-failure >"$build/gpu-check.tests.log" 2>&1 ||
  status=$?
tail -n 4 "$build/gpu-check.tests.log"
# Skipped means the test found no device: on the machine this script is for, that is a failure.
if grep -q 'Skipped' "$build/gpu-check.tests.log"; then echo "gpu-check: no CUDA device found"; status=1; fi

echo "gpu-check: timing"
"$build/tests/kernels/bench_kernels_cuda" 8192 16 | tee "$build/gpu-check.bench.log" | tail -n 55 || status=1
exit "$status"
