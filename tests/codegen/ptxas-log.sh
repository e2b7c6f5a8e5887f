#!/bin/sh
# tests/codegen/ptxas-log.sh: compiler launcher that keeps nvcc's -Xptxas -v report of each generated kernel file.
#   set as CUDA_COMPILER_LAUNCHER of mra_kernels_cuda by tests/codegen/CMakeLists.txt:
#   ptxas-log.sh <log folder> <nvcc> <arguments...>
# Writes <log folder>/<source file name>.log (read by nvcc_resources.py, test nvcc.resources), so that every
# generated file is compiled once, by the build, and its resource usage is still checked. Other compiler
# output (warnings, errors) still goes to stderr; the exit status is the compiler's.
logdir=$1
shift
src=
prev=
for arg in "$@"; do
  [ "$prev" = "-c" ] && src=$arg
  prev=$arg
done
mkdir -p "$logdir"
log="$logdir/$(basename "$src").log"
"$@" 2>"$log.part"
status=$?
mv "$log.part" "$log"
grep -v -e '^ptxas info' -e 'bytes stack frame' "$log" >&2
exit $status
