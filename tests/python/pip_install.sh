#!/usr/bin/env bash
# tests/python/pip_install.sh: the test python.pip_install: `pip install tools/python` into a new virtual
# environment (with the system's site-packages, for numpy and the build backend scikit-build-core, which
# tools/bootstrap.sh installs, so that no download is needed), then the README's Python example, run from an
# empty folder with nothing from the build tree on the path.
#   tests/python/pip_install.sh SOURCE_DIR WORK_DIR
set -euo pipefail
source_dir=$1 work=$2
rm -rf "$work"
python3 -m venv --system-site-packages "$work/venv"
# One configuration (the example's) keeps the build short; the package's default builds all of them.
"$work/venv/bin/python" -m pip install -q --no-build-isolation --no-deps \
  -C cmake.define.MRA_CUDA=OFF -C cmake.define.MRA_KERNELS=mra_fwd_r32x1_d64_f32 \
  -C build-dir="$work/build" "$source_dir/tools/python"
# The example: the lines of README.md's first ```python block.
example=$(awk '/^```python$/ {on = 1; next} on && /^```$/ {exit} on {print}' "$source_dir/README.md")
[ -n "$example" ] || { echo "pip_install.sh: README.md has no \`\`\`python block"; exit 1; }
mkdir -p "$work/elsewhere"
cd "$work/elsewhere"
env -u MRA_LIBRARY_DIR -u PYTHONPATH "$work/venv/bin/python" - <<PY
$example
import numpy as np
import mra
assert mra.__file__.startswith("$work/venv/"), mra.__file__
assert out.shape == q.shape and out.dtype == np.float32 and np.isfinite(out).all()
# What the README says the example prints: an approximation within a few percent on its local inputs.
error = float(np.linalg.norm(out - mra.exact(q, k, v)) / np.linalg.norm(mra.exact(q, k, v)))
assert 0.001 < error < 0.05, error
emulated = mra.attend(q, k, v, scales=(32, 1), blocks_per_row=4, backend="emulated")
assert np.abs(emulated - out).max() <= 1e-4, np.abs(emulated - out).max()
print("pip install tools/python and the README example: ok")
PY
