#!/usr/bin/env bash
# tools/bootstrap.sh: installs what the build and the tests need and this machine lacks.
#   tools/bootstrap.sh           (idempotent; called by tools/run-demo.sh)
#   tools/bootstrap.sh --tests   (also what the python tests need; called by tools/run-tests.sh)
# Needs: g++ or clang++, cmake >= 3.25, python3. Installs: doctest (Debian's doctest-dev), clang and its
# libFuzzer runtime (Debian, for the fuzz tests), numpy and safetensors (PyPI, for the interop tests), Jinja2
# (PyPI, for the kernel generator), cuobjdump and nvdisasm (PyPI, for the SASS checks) when they are missing;
# with --tests also scikit-build-core (the Python package's build backend), torch and transformers (PyPI,
# for the python tests; torch's wheel is the CUDA build, several GB).
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
[ -f /usr/include/doctest/doctest.h ] || apt_packages+=(doctest-dev)
# The fuzz tests (tests/fuzz) need clang and its libFuzzer runtime, which Debian packages separately.
if ! command -v clang++ >/dev/null; then
  apt_packages+=(clang libclang-rt-14-dev)
elif ! compgen -G "$(clang++ -print-runtime-dir)/libclang_rt.fuzzer*.a" >/dev/null; then
  apt_packages+=("libclang-rt-$(clang++ -dumpversion | cut -d. -f1)-dev")
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "bootstrap: installing ${apt_packages[*]} from Debian"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

pip_packages=()
python3 -c 'import numpy' 2>/dev/null || pip_packages+=(numpy)
python3 -c 'import jinja2' 2>/dev/null || pip_packages+=(Jinja2)
python3 -c 'import safetensors' 2>/dev/null || pip_packages+=(safetensors)
# cuobjdump and nvdisasm for the SASS checks (ctest -L sass; both needed), each when the CUDA toolkit here lacks it
# (where tests/sass/sass_mix.py looks: PATH, /usr/local/cuda/bin, the PyPI wheel's nvidia/cu13/bin).
for tool in cuobjdump nvdisasm; do
  if ! command -v "$tool" >/dev/null && [ ! -x "/usr/local/cuda/bin/$tool" ] &&
     ! python3 -c 'import sysconfig, pathlib, sys; sys.exit(not (pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia/cu13/bin" / sys.argv[1]).is_file())' "$tool"; then
    pip_packages+=("nvidia-cuda-$tool")
  fi
done
if [ "${1:-}" = "--tests" ]; then
  python3 -c 'import scikit_build_core' 2>/dev/null || pip_packages+=(scikit-build-core)
  python3 -c 'import torch' 2>/dev/null || pip_packages+=(torch)
  python3 -c 'import transformers' 2>/dev/null || pip_packages+=(transformers)
fi
if [ ${#pip_packages[@]} -gt 0 ]; then
  echo "bootstrap: installing ${pip_packages[*]} from PyPI"
  python3 -m pip install -q "${pip_packages[@]}"
fi
