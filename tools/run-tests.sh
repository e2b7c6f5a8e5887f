#!/usr/bin/env bash
# tools/run-tests.sh: installs what is missing, builds everything and runs the whole test suite.
#   tools/run-tests.sh [ctest arguments...]     e.g. tools/run-tests.sh -L reference
# Build tree: build/ (override with MRA_BUILD_DIR). Exit status is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/bootstrap.sh --tests
build=${MRA_BUILD_DIR:-build}
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$jobs"
# --no-tests=error: a label (-L) that matches no test fails instead of passing by running nothing.
ctest --test-dir "$build" --output-on-failure --no-tests=error -j "$jobs" "$@"
