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
# q/k/v larger than L2), and prints that table last. Sized for about 5 minutes on one H200 (estimated, never
# measured: no GPU run of the kit has been made yet). Without a GPU the cross-checks report themselves skipped and
# the script fails.
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
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$kit" list | sed -n '/^architectures/p;/^cuda runtime/,$p'

echo "gpu-check: kernel cross-checks on the GPU (mra-gpu-kit check: forward and backward)"
status=0
"$kit" check >"$logs/gpu-check.tests.log" 2>&1 || status=$?
tail -n 4 "$logs/gpu-check.tests.log"
# 77: no device found; on the machine this script is for, that is a failure.
if [[ $status == 77 ]]; then echo "gpu-check: no CUDA device found"; status=1; fi

echo "gpu-check: timing"
"$kit" bench 8192 16 | tee "$logs/gpu-check.bench.log" | tail -n 55 || status=1
exit "$status"
