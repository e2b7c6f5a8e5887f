#!/usr/bin/env bash
# tools/run-demo.sh: installs what is missing, builds mra-ref and runs `mra-ref demo`.
#   tools/run-demo.sh [demo arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh
build=${MRA_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target mra-ref
"$build/tools/mra-ref/mra-ref" demo "$@"
