#!/usr/bin/env bash
# tools/gpu-check.sh: the GPU check of the generated kernels, for a machine with an NVIDIA GPU.
#   tools/gpu-check.sh                       from source: builds mra-gpu-kit for the GPU at hand (needs cmake and
#                                            nvcc; build folder build-gpu/, override with MRA_BUILD_DIR; logs in it)
#   tools/gpu-check.sh --bundle KIT          from the GPU kit built elsewhere, KIT being mra-gpu-kit.tar.xz or its
#                                            unpacked folder: no network, no CUDA toolkit, only the driver
#   mra-gpu-kit/gpu-check.sh                 the same, run from an unpacked kit (this script is packed in it)
# In the bundle modes the logs go to MRA_LOG_DIR (default ./gpu-check-logs), where an archive is also unpacked.
# The kit is built by the CUDA build (`cmake --build build --target mra_gpu_kit`, then build/mra-gpu-kit.tar.xz):
# one executable, mra-gpu-kit (tests/kernels/gpu_kit.cpp), linked to the static CUDA runtime, with the kernels of
# every configuration as sm_80 and sm_90 code and PTX (MRA_CUDA_ARCHITECTURES).
# Runs every kernel cross-check of tests/kernels on the GPU against the reference (`mra-gpu-kit check`: the cases
# the CPU emulation runs in CI, forward and backward; in the build CTest kernels.cuda and backward.cuda),
# then times each configuration against dense exact attention, the forward and, where the configuration has backward
# kernels, the backward on the state its forward saved (`mra-gpu-kit bench`: CUDA events, 3 warm-ups, median of 21,
# q/k/v larger than L2), then the forward of mra_fwd_r32x1_d64_bf16 per stage at H = 16 and N = 1K ... 64K, MRA and
# exact attention (every block refined), beside tools/perf-model's estimates (`mra-gpu-kit stages`), and prints
# those two tables last.
# Duration on one H200, ESTIMATED (no GPU run of the kit has been made yet), under the 8 minutes of issue 9:
#   check   ASSUMED at most 3 min: 124 cases, their CPU references (single-threaded) dominating;
#   bench   24 calls (3 warm-ups + 21) per timing, 4 timings per configuration at N = 8192, H = 16; per f32
#           configuration about 24 x (18 ms dense forward at an ASSUMED 15 TFLOP/s on CUDA cores + 58 ms dense backward,
#           tools/perf-model --backward's 0.25 of the FP32 peak) = 1.8 s, 17 of them; f16/bf16 below 0.3 s each, 34 of
#           them: about 45 s;
#   stages  48 calls (plain and observed, 24 each) per N and mode at the model's totals, sum over N of MRA and exact
#           = 112 ms (exact at 64K: 81 ms): 48 x 112 ms = 5.4 s;
#   in all about 4 min, plus the process starts and the allocations.
# Without a GPU the cross-checks report themselves skipped and the script fails.
# Exit status: 2 for a bad argument; otherwise non-zero when the build, a cross-check or a timing run fails.
set -euo pipefail
usage="usage: tools/gpu-check.sh [--bundle mra-gpu-kit.tar.xz|DIR]"
here=$(cd "$(dirname "$0")" && pwd)
bundle=
case $# in
  0) ;;
  2) [[ $1 == --bundle ]] || { echo "gpu-check: unknown argument '$1'; $usage" >&2; exit 2; }
     bundle=$2 ;;
  *) [[ ${1:-} == -h || ${1:-} == --help ]] && { echo "$usage"; exit 0; }
     echo "gpu-check: expected no argument or --bundle KIT; $usage" >&2; exit 2 ;;
esac
# Run from an unpacked kit: the executable lies next to this script.
[[ -z $bundle && -x $here/mra-gpu-kit ]] && bundle=$here

if [[ -n $bundle ]]; then
  logs=${MRA_LOG_DIR:-$PWD/gpu-check-logs}
  mkdir -p "$logs"
  if [[ -f $bundle ]]; then
    echo "gpu-check: unpacking $bundle into $logs"
    tar -xf "$bundle" -C "$logs" || { echo "gpu-check: cannot unpack '$bundle'" >&2; exit 2; }
    bundle=$logs/mra-gpu-kit
  fi
  kit=$bundle/mra-gpu-kit
  [[ -x $kit ]] || { echo "gpu-check: '$bundle' holds no mra-gpu-kit executable" >&2; exit 2; }
  echo "gpu-check: from the bundle $bundle"
else
  cd "$here/.."
  logs=${MRA_BUILD_DIR:-build-gpu}
  jobs=$(nproc 2>/dev/null || echo 4)
  mkdir -p "$logs"
  tools/bootstrap.sh
  echo "gpu-check: configuring and building ($logs)"
  cmake -S . -B "$logs" -DCMAKE_BUILD_TYPE=Release -DMRA_CUDA_ARCHITECTURES=native >"$logs/gpu-check.configure.log"
  cmake --build "$logs" -j "$jobs" --target gpu_kit >"$logs/gpu-check.build.log" 2>&1 ||
    { tail -n 40 "$logs/gpu-check.build.log"; exit 1; }
  kit=$logs/tests/kernels/mra-gpu-kit
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
  echo "gpu-check: nvidia-smi not found (no NVIDIA driver tools on PATH)"
fi
"$kit" list | sed -n '/^architectures/p;/^cuda runtime/,$p'

echo "gpu-check: kernel cross-checks on the GPU (mra-gpu-kit check: forward and backward)"
status=0
"$kit" check >"$logs/gpu-check.tests.log" 2>&1 || status=$?
tail -n 4 "$logs/gpu-check.tests.log"
# 77: no device found; on the machine this script is for, that is a failure.
if [[ $status == 77 ]]; then echo "gpu-check: no CUDA device found"; status=1; fi

echo "gpu-check: timing"
"$kit" bench 8192 16 | tee "$logs/gpu-check.bench.log" | tail -n 55 || status=1
echo "gpu-check: timing per stage (mra-gpu-kit stages; the estimates are tools/perf-model's)"
"$kit" stages | tee "$logs/gpu-check.stages.log" || status=1
exit "$status"
