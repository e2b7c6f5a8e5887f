"""tests/python/check.py: the test suite's one comparison rule for numpy arrays (as tests/common/check.h):
every element |x - ref| <= atol + rtol * |ref|, NaN only where ref is NaN; the message names the worst element,
the max error and the fraction of the tolerance used. And skip_unless_built, which reports a test file skipped
when the build left out a configuration it runs (as tests/common/skip.h)."""

import os
import sys

import numpy as np


def skip_unless_built(names) -> None:
    """Exits 77 (CTest's SKIP_RETURN_CODE of the python tests), naming the missing ones, unless every generated
    configuration in `names` is among MRA_BUILT_CONFIGS, the comma-separated list CTest passes (those MRA_KERNELS
    selected). Run by hand without that variable, every configuration is taken as built."""
    listed = os.environ.get("MRA_BUILT_CONFIGS")
    if listed is None:
        return
    missing = [n for n in names if n not in listed.split(",")]
    if missing:
        print(f"skipped: needs {', '.join(missing)}, which this build leaves out (MRA_KERNELS)")
        sys.exit(77)


def assert_close(x, ref, atol: float, rtol: float, what: str) -> None:
    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    if x.shape != ref.shape:
        raise AssertionError(f"{what}: shape {x.shape} != {ref.shape}")
    err = np.abs(x - ref)
    with np.errstate(divide="ignore", invalid="ignore"):  # NaN and infinite elements are ruled on just below
        used = err / (atol + rtol * np.abs(ref))
    nan_x, nan_ref = np.isnan(x), np.isnan(ref)
    used = np.where(nan_x | nan_ref, np.where(nan_x & nan_ref, 0.0, np.inf), used)
    worst = np.unravel_index(int(np.argmax(used)), used.shape) if used.size else ()
    top = float(used[worst]) if used.size else 0.0
    if top > 1.0:
        raise AssertionError(f"{what}: {int((used > 1).sum())} of {used.size} elements out of tolerance "
                             f"(atol {atol}, rtol {rtol}); worst at {tuple(int(i) for i in worst)}: "
                             f"{x[worst]} vs {ref[worst]}, max abs error {np.nanmax(err):.3g}, "
                             f"{top:.3g} of the tolerance")
