#!/usr/bin/env python3
"""tests/python/test_observer.py: mra.set_launch_observer, the C API's launch observer from Python (label python).

    MRA_LIBRARY_DIR=build/runtime:build/reference/c_api PYTHONPATH=tools/python/src \
        python3 tests/python/test_observer.py

The stages one emulated forward announces, as runs of (stage, launches) in launch order, against those
`kernels.launch stages` (tests/kernels/test_launch_stages.cpp) expects of the same problem (R = (16, 4, 1), N = 200,
2 heads, 4 blocks per row, mode full and sparse); no stream on the host path; clearing, replacing, an exception
raised by the observer (raised by the call once it returns, the next call unaffected) and a bad argument. Exits 77
(reported as skipped by CTest) when mra_fwd_r16x4x1_d32_f32 is not built (-DMRA_KERNELS).
"""

import pathlib
import sys
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mra  # noqa: E402
from check import skip_unless_built  # noqa: E402

if __name__ == "__main__":
    skip_unless_built(["mra_fwd_r16x4x1_d32_f32"])

# test_launch_stages.cpp, "three levels, short-N and multi-CTA level 1, ...": the short-N case, full and sparse.
FULL = [("pool", 2), ("select L1", 1), ("select L2", 6), ("coarse L1", 1), ("coarse L2", 1), ("attend", 1)]
SPARSE = [("pool", 2), ("select L1", 1), ("select L2", 6), ("attend", 1)]


def runs(stages):
    r = []
    for s in stages:
        if r and r[-1][0] == s:
            r[-1] = (s, r[-1][1] + 1)
        else:
            r.append((s, 1))
    return r


def forward(mode="full"):
    rng = np.random.default_rng(20261201)
    q, k, v = (rng.standard_normal((2, 200, 32), dtype=np.float32) for _ in range(3))
    return mra.attend(q, k, v, scales=(16, 4, 1), blocks_per_row=4, mode=mode, backend="emulated")


class Seen:
    def __init__(self):
        self.stages, self.streams = [], set()

    def __call__(self, stage, stream):
        self.stages.append(stage)
        self.streams.add(stream)


class LaunchObserver(unittest.TestCase):
    def tearDown(self):
        mra.set_launch_observer(None)

    def test_stages_of_one_forward(self):
        for mode, expected in (("full", FULL), ("sparse", SPARSE)):
            seen = Seen()
            mra.set_launch_observer(seen)
            forward(mode)
            self.assertEqual(runs(seen.stages), expected, mode)
            self.assertEqual(seen.streams, {None}, "the host path has no stream")

    def test_the_observer_changes_nothing_computed(self):
        plain = forward()
        mra.set_launch_observer(Seen())
        np.testing.assert_array_equal(forward(), plain)

    def test_cleared_and_replaced(self):
        first, second = Seen(), Seen()
        self.assertIsNone(mra.set_launch_observer(first))
        self.assertIs(mra.set_launch_observer(second), first)
        forward()
        self.assertEqual(first.stages, [])
        self.assertEqual(runs(second.stages), FULL)
        self.assertIs(mra.set_launch_observer(None), second)
        forward()
        self.assertEqual(runs(second.stages), FULL, "a cleared observer is told nothing")
        # The reference backend launches no kernels.
        mra.set_launch_observer(first)
        rng = np.random.default_rng(1)
        q = rng.standard_normal((64, 32), dtype=np.float32)
        mra.attend(q, q, q, scales=(16, 4, 1))
        self.assertEqual(first.stages, [])

    def test_an_exception_is_raised_by_the_call(self):
        told = []

        def failing(stage, stream):
            told.append(stage)
            raise RuntimeError(f"observer failed at {stage}")

        mra.set_launch_observer(failing)
        with self.assertRaisesRegex(RuntimeError, "observer failed at pool"):
            forward()
        self.assertEqual(told, ["pool"], "after its first exception the observer is not called again in that call")
        seen = Seen()
        mra.set_launch_observer(seen)
        forward()  # nothing left over from the failed call
        self.assertEqual(runs(seen.stages), FULL)

    def test_bad_argument(self):
        with self.assertRaisesRegex(mra.MraError, "set_launch_observer: expected a callable or None, got 3"):
            mra.set_launch_observer(3)


if __name__ == "__main__":
    unittest.main()
