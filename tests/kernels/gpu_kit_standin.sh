#!/usr/bin/env bash
# tests/kernels/gpu_kit_standin.sh: stands in for mra-gpu-kit in the test nvcc.gpu_kit (gpu_kit_test.cmake), so that
# the winners' merge of `gpu-check.sh --autotune` from a kit runs without a GPU: `list` answers like the kit, and
# `autotune ... --out FILE` writes one winner as the kit writes it (autotune_report.cpp), with no timing at all.
case ${1:-} in
  list) printf 'architectures: 80,90\ncuda runtime: 13000 (static), driver: 13000\ndevices: 1\n' ;;
  autotune)
    out=
    while (($#)); do [[ $1 == --out ]] && out=$2; shift; done
    printf '%s\n' '# mra-gpu-kit autotune: measured tuning winners (stand-in)' '' \
      '[name."mra_fwd_r32x1_d64_bf16"]' '# autotune (Stand-in GPU, N = 8192, heads = 16): 0.900 ms with key_tile = 64' \
      'key_tile = 64' >"$out"
    echo "| mra_fwd_r32x1_d64_bf16 | key_tile = 64 | 0.900 | -10.0 % winner |" ;;
  *) exit 2 ;;
esac
