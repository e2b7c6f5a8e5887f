#!/usr/bin/env bash
# tools/gpu-check.sh: the GPU check of the generated kernels, for a machine with an NVIDIA GPU.
#   tools/gpu-check.sh                       from source: builds mra-gpu-kit for the GPU at hand (needs cmake and
#                                            nvcc; build folder build-gpu/, override with MRA_BUILD_DIR; logs in it)
#   tools/gpu-check.sh --bundle KIT          from the GPU kit built elsewhere, KIT being mra-gpu-kit.tar.xz or its
#                                            unpacked folder: no network, no CUDA toolkit, only the driver
#   mra-gpu-kit/gpu-check.sh                 the same, run from an unpacked kit (this script is packed in it)
#   tools/gpu-check.sh --autotune [--bundle KIT]
#                                            instead of the check: times the tuning candidates of
#                                            codegen/autotune.toml against the current tuning and merges the
#                                            winners into the tuning table (below)
# In the bundle modes the logs go to MRA_LOG_DIR (default ./gpu-check-logs), where an archive is also unpacked.
# The kit is built by the CUDA build (target mra_gpu_kit, part of the default build: build/mra-gpu-kit.tar.xz):
# one executable, mra-gpu-kit (tests/kernels/gpu_kit.cpp), linked to the static CUDA runtime, with the kernels of
# every configuration as sm_80 and sm_90 code and PTX (MRA_CUDA_ARCHITECTURES), and the tuning candidates.
# Runs every kernel cross-check of tests/kernels on the GPU against the reference (`mra-gpu-kit check`: the cases
# the CPU emulation runs in CI, forward and backward; in the build CTest kernels.cuda and backward.cuda),
# then times each configuration against dense exact attention, the forward and, where the configuration has backward
# kernels, the backward on the state its forward saved (`mra-gpu-kit bench`: CUDA events, 3 warm-ups, median of 21,
# q/k/v larger than L2), then the forward of mra_fwd_r32x1_d64_bf16 per stage at H = 16 and N = 1K ... 64K, MRA and
# exact attention (every block refined), beside tools/perf-model's estimates (`mra-gpu-kit stages`), and prints
# those two tables last.
# Duration on one H200, ESTIMATED (no GPU run of the kit has been made yet), under the 8 minutes of issue 9:
#   check   ASSUMED at most 3 min: 124 cases with every configuration, their CPU references (single-threaded)
#           dominating;
#   bench   24 calls (3 warm-ups + 21) per timing, 4 timings per configuration at N = 8192, H = 16; per f32
#           configuration about 24 x (18 ms dense forward at an ASSUMED 15 TFLOP/s on CUDA cores + 58 ms dense backward,
#           tools/perf-model --backward's 0.25 of the FP32 peak) = 1.8 s, 17 of them; f16/bf16 below 0.3 s each, 34 of
#           them: about 45 s;
#   stages  48 calls (plain and observed, 24 each) per N and mode at the model's totals, sum over N of MRA and exact
#           = 112 ms (exact at 64K: 81 ms): 48 x 112 ms = 5.4 s;
#   in all about 4 min, plus the process starts and the allocations.
# Without a GPU the cross-checks report themselves skipped and the script fails.
# --autotune: `mra-gpu-kit autotune 8192 16` (forward, same timing; estimated under a minute on one H200: about 600
# timed forward calls of 0.1 to 1 ms plus the random inputs, never measured) writes the winners, the candidates
# faster than the current tuning by more than 3 %, to mra-autotune.toml in the log folder, and
# codegen/apply_tuning.py merges them: from source into codegen/tuning.toml itself (then run
# `python3 codegen/generate.py` and rebuild); from the bundle, which holds the tuning table it was built with, into
# <logs>/tuning.toml (copy that over codegen/tuning.toml, or apply <logs>/mra-autotune.toml in the repository).
# The merge needs python3 >= 3.11; without it the winners file is left for the repository.
# Exit status: 2 for a bad argument; otherwise non-zero when the build, a cross-check, a timing run or the merge
# fails.
set -euo pipefail
usage="usage: tools/gpu-check.sh [--autotune] [--bundle mra-gpu-kit.tar.xz|DIR]"
here=$(cd "$(dirname "$0")" && pwd)
bundle=
autotune=
while (($#)); do
  case $1 in
    -h|--help) echo "$usage"; exit 0 ;;
    --autotune) autotune=1; shift ;;
    --bundle) [[ $# -ge 2 ]] || { echo "gpu-check: --bundle needs KIT; $usage" >&2; exit 2; }
              bundle=$2; shift 2 ;;
    *) echo "gpu-check: unknown argument '$1'; $usage" >&2; exit 2 ;;
  esac
done
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

if [[ -n $autotune ]]; then
  winners=$logs/mra-autotune.toml
  echo "gpu-check: autotune (mra-gpu-kit autotune: the tuning candidates against the current tuning)"
  status=0
  "$kit" autotune 8192 16 --out "$winners" 2>&1 | tee "$logs/gpu-check.autotune.log" | tail -n 40 || status=$?
  if grep -q "no CUDA device" "$logs/gpu-check.autotune.log"; then echo "gpu-check: no CUDA device found"; exit 1; fi
  [[ -f $winners ]] || { echo "gpu-check: mra-gpu-kit autotune wrote no winners file"; exit 1; }
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "gpu-check: python3 >= 3.11 not found: the winners are in $winners; in the repository run"
    echo "  python3 codegen/apply_tuning.py mra-autotune.toml && python3 codegen/generate.py"
    exit "$status"
  fi
  if [[ -n $bundle ]]; then
    python3 "$bundle/codegen/apply_tuning.py" "$winners" --tuning "$bundle/codegen/tuning.toml" \
      --manifest "$bundle/codegen/manifest.toml" --out "$logs/tuning.toml" || exit 1
    echo "gpu-check: the merged tuning table is $logs/tuning.toml (the kit's codegen/tuning.toml with the winners)."
    echo "  Copy it over codegen/tuning.toml of the repository the kit was built from, or, where that table has"
    echo "  changed since, apply the winners there: python3 codegen/apply_tuning.py $winners"
    echo "  then: python3 codegen/generate.py, rebuild, and rerun tools/gpu-check.sh to check the new tuning"
  else
    python3 codegen/apply_tuning.py "$winners" || exit 1
    echo "gpu-check: codegen/tuning.toml updated; now run: python3 codegen/generate.py, then rerun tools/gpu-check.sh"
  fi
  exit "$status"
fi

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
