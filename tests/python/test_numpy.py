#!/usr/bin/env python3
"""tests/python/test_numpy.py: the numpy API of the Python package (label python).

    MRA_LIBRARY_DIR=build/runtime:build/reference/c_api PYTHONPATH=tools/python/src \
        MRA_REF=build/tools/mra-ref/mra-ref python3 tests/python/test_numpy.py

mra.exact against softmax attention computed here in float64; mra.attend with every block refined (which the
semantics define as exact attention); masks; the emulated backend against the reference on configurations where
MRA approximates; every option against `mra-ref attend` with the same flags on the same .npy files (the option
mapping); errors as MraError carrying the status text. Random inputs come from numpy's seeded generator; each
failure names its seed. Exits 77 (reported as skipped by CTest) when a configuration the emulated backend runs
here is not built (-DMRA_KERNELS).
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mra  # noqa: E402
from check import assert_close, skip_unless_built  # noqa: E402

if __name__ == "__main__":  # the configurations the emulated backend runs below (test_torch imports this file)
    skip_unless_built(["mra_fwd_r32x1_d32_f32", "mra_fwd_r32x1_d64_f32", "mra_fwd_r32x1_d64_f16",
                       "mra_fwd_r16x1_d32_f32", "mra_fwd_r16x4x1_d32_f32", "mra_fwd_r16x4x1_d32_f16", "mra_fwd_r64x1_d128_f32",
                       "mra_fwd_r64x1_d128_f16"])


def softmax_attention(q, k, v, key_mask=None, query_mask=None, scale=None):
    """Exact attention in float64, written here from the definition (docs/semantics.md §1)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * q @ np.swapaxes(k, -1, -2)
    if key_mask is not None:
        s = np.where(key_mask[..., None, :] > 0, s, -np.inf)
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    out = (p / p.sum(axis=-1, keepdims=True)) @ v
    if query_mask is not None:
        out = np.where(query_mask[..., :, None] > 0, out, 0.0)
    return out


def inputs(seed, shape_q, nk=None, dtype=np.float32):
    rng = np.random.default_rng(seed)
    shape_k = shape_q[:-2] + ((nk or shape_q[-2]), shape_q[-1])
    return (rng.standard_normal(shape_q).astype(dtype), rng.standard_normal(shape_k).astype(dtype),
            rng.standard_normal(shape_k).astype(dtype))


def local_inputs(seed, b, h, n, d):
    """Attention concentrated near the diagonal (a smooth sequence): the structure MRA is made for."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.standard_normal((b, h, n, d)), axis=2) / np.sqrt(np.arange(1, n + 1))[:, None]
    q = (t + 0.3 * rng.standard_normal((b, h, n, d))).astype(np.float32)
    k = (t + 0.3 * rng.standard_normal((b, h, n, d))).astype(np.float32)
    return q, k, rng.standard_normal((b, h, n, d)).astype(np.float32)


class NumpyApiTest(unittest.TestCase):
    def test_exact_against_float64_softmax_for_every_rank(self):
        for seed, shape, nk in ((1, (70, 32), None), (2, (3, 50, 16), 90), (3, (2, 2, 33, 8), None)):
            q, k, v = inputs(seed, shape, nk)
            out = mra.exact(q, k, v)
            self.assertEqual((out.shape, out.dtype), (q.shape, np.float32), f"seed {seed}")
            assert_close(out, softmax_attention(q, k, v), 1e-5, 1e-4, f"exact, seed {seed}")
            assert_close(mra.exact(q, k, v, scale=0.3), softmax_attention(q, k, v, scale=0.3), 1e-5, 1e-4,
                         f"exact scale 0.3, seed {seed}")

    def test_attend_with_every_block_refined_is_exact(self):
        q, k, v = inputs(4, (2, 2, 100, 32))
        # N = 100 and side 32: 4 x 4 blocks; a budget of 16 refines all of them.
        for backend in ("reference", "emulated"):
            out = mra.attend(q, k, v, scales=(32, 1), budget=16, backend=backend)
            assert_close(out, softmax_attention(q, k, v), 1e-5, 1e-4, f"attend budget 16, {backend}, seed 4")

    def test_masks_remove_keys_and_zero_padded_queries(self):
        q, k, v = inputs(5, (2, 1, 80, 32))
        mask = np.ones((2, 80), bool)
        mask[1, 50:] = False
        ref = softmax_attention(q, k, v, key_mask=mask[:, None], query_mask=mask[:, None])
        assert_close(mra.exact(q, k, v, mask=mask), ref, 1e-5, 1e-4, "exact with mask, seed 5")
        for backend in ("reference", "emulated"):
            out = mra.attend(q, k, v, budget=9, mask=mask.astype(np.float64), backend=backend)
            assert_close(out, ref, 1e-5, 1e-4, f"attend with mask, {backend}, seed 5")
            self.assertTrue((out[1, :, 50:] == 0).all())
        # Cross-attention (Nq != Nk): the mask masks keys only; query_mask masks queries.
        q2 = q[:, :, :40]
        out = mra.exact(q2, k, v, mask=mask)
        assert_close(out, softmax_attention(q2, k, v, key_mask=mask[:, None]), 1e-5, 1e-4, "cross mask")
        qm = np.ones(40, np.uint8)
        qm[:3] = 0
        out = mra.exact(q2, k, v, mask=mask, query_mask=qm)
        assert_close(out, softmax_attention(q2, k, v, key_mask=mask[:, None], query_mask=qm), 1e-5, 1e-4,
                     "cross mask with a shared [N] query mask")

    def test_emulated_agrees_with_reference_where_mra_approximates(self):
        cases = [(6, (2, 2, 256, 64), dict(scales=(32, 1), blocks_per_row=2)),
                 (7, (1, 2, 200, 32), dict(scales=(16, 4, 1), budget=[20, 40], mode="sparse", prior_first=1)),
                 (8, (2, 1, 300, 128), dict(scales=(64, 1), budget=5, prior_diagonal=3, scale=0.05))]
        for seed, shape, options in cases:
            q, k, v = local_inputs(seed, *shape)
            ref = mra.attend(q, k, v, **options)
            exact = mra.exact(q, k, v, scale=options.get("scale"))
            # An approximation that is not exact attention, or the comparison below would not test MRA.
            self.assertGreater(np.abs(ref - exact).max(), 1e-3, f"seed {seed}: the case refines every block")
            emulated = mra.attend(q, k, v, backend="emulated", **options)
            self.assertEqual(emulated.dtype, np.float32)
            assert_close(emulated, ref, 2e-5, 1e-4, f"emulated f32 vs reference, seed {seed}, {options}")
            half = mra.attend(*(a.astype(np.float16) for a in (q, k, v)), backend="emulated", **options)
            self.assertEqual(half.dtype, np.float16)
            ref16 = mra.attend(*(a.astype(np.float16) for a in (q, k, v)), **options)
            assert_close(half, ref16, 1e-2, 1e-2, f"emulated f16 vs reference, seed {seed}, {options}")

    def test_causal_through_the_kernels(self):
        # docs/semantics.md §9: 100 queries after 24 cached keys (Nk - Nq = 24, not a multiple of 16), policy row
        # by default. Every block refined: exact causal attention; fewer: the kernels agree with the reference; and
        # keys after a cut change no row that does not see them, bit for bit.
        q = local_inputs(11, 1, 2, 100, 32)[0]
        _, k, v = local_inputs(12, 1, 2, 124, 32)
        exact = mra.exact(q, k, v, causal=True)
        self.assertGreater(np.abs(exact - mra.exact(q, k, v)).max(), 1e-2)  # the mask matters
        assert_close(mra.attend(q, k, v, causal=True, scales=(16, 1), blocks_per_row=8), exact, 1e-5, 1e-5,
                     "reference, every block refined")
        for options in (dict(scales=(16, 1), blocks_per_row=1), dict(scales=(16, 4, 1), budget=(1, 2), mode="sparse")):
            ref = mra.attend(q, k, v, causal=True, **options)
            self.assertGreater(np.abs(ref - exact).max(), 1e-3, f"{options}: the case refines every block")
            emulated = mra.attend(q, k, v, causal=True, backend="emulated", **options)
            assert_close(emulated, ref, 2e-5, 1e-4, f"emulated causal vs reference, {options}")
            cut = 24 + 40  # rows 0 .. 40 see keys 0 .. 64 only
            k2, v2 = k.copy(), v.copy()
            k2[..., cut + 1:, :] *= -3.0
            v2[..., cut + 1:, :] += 5.0
            changed = mra.attend(q, k2, v2, causal=True, backend="emulated", **options)
            np.testing.assert_array_equal(changed[..., :41, :], emulated[..., :41, :], err_msg=str(options))
            self.assertGreater(np.abs(changed[..., 41:, :] - emulated[..., 41:, :]).max(), 0.0)

    def test_grouped_heads_and_the_selection_shared_by_the_group(self):
        # docs/semantics.md §8: K and V with 2 heads for 4 query heads equal K and V copied to their groups; §8.4:
        # selection="group" shares one selection per group (another selection than per head on these inputs),
        # the kernels agree with the reference, and mra-ref --selection group gives the same bits.
        q, k, v = local_inputs(31, 2, 4, 70, 32)
        k, v = k[:, ::2].copy(), v[:, ::2].copy()
        k_full, v_full = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
        options = dict(scales=(32, 1), budget=2)
        head = mra.attend(q, k, v, **options)
        np.testing.assert_array_equal(head, mra.attend(q, k_full, v_full, **options))
        group = mra.attend(q, k, v, selection="group", **options)
        self.assertGreater(np.abs(group - head).max(), 1e-3)
        assert_close(mra.attend(q, k, v, selection="group", backend="emulated", **options), group, 2e-5, 1e-4,
                     "emulated group selection vs reference, seed 31")
        causal = dict(scales=(32, 1), budget=1, causal=True, selection="group")
        assert_close(mra.attend(q, k, v, backend="emulated", **causal), mra.attend(q, k, v, **causal), 2e-5, 1e-4,
                     "emulated causal group selection vs reference, seed 31")
        if os.environ.get("MRA_REF"):
            with tempfile.TemporaryDirectory() as tmp:
                files = {name: os.path.join(tmp, f"{name}.npy") for name in ("q", "k", "v", "out")}
                for name, a in (("q", q), ("k", k), ("v", v)):
                    np.save(files[name], a)
                subprocess.run([os.environ["MRA_REF"], "attend", "--q", files["q"], "--k", files["k"], "--v",
                                files["v"], "--scales", "32,1", "--budget", "2", "--selection", "group", "-o",
                                files["out"]], check=True, stdout=subprocess.DEVNULL)
                np.testing.assert_array_equal(group, np.load(files["out"]))
        with self.assertRaisesRegex(mra.MraError, "selection: 'heads' is not 'head' or 'group'"):
            mra.attend(q, k, v, selection="heads")
        with self.assertRaisesRegex(mra.MraError, "a head count dividing q's"):
            mra.attend(q, k[:, :1].repeat(3, axis=1), v[:, :1].repeat(3, axis=1))

    @unittest.skipUnless(os.environ.get("MRA_REF"), "MRA_REF (the mra-ref binary) is not set")
    def test_options_mean_what_mra_ref_flags_mean(self):
        q, k, v = local_inputs(9, 2, 2, 150, 16)
        mask = np.ones((2, 150), np.float32)
        mask[0, 120:] = 0
        cases = [(["--scales", "16,4,1", "--budget", "12,30", "--mode", "sparse", "--prior-first", "1",
                   "--prior-diagonal", "3", "--scale", "0.2"],
                  dict(scales=(16, 4, 1), budget=(12, 30), mode="sparse", prior_first=1, prior_diagonal=3, scale=0.2)),
                 (["--scales", "32,1", "--blocks-per-row", "2"], dict(scales=(32, 1), blocks_per_row=2)),
                 (["--scales", "16,4,1", "--blocks-per-row", "2", "--policy", "row", "--prior-diagonal", "1"],
                  dict(scales=(16, 4, 1), blocks_per_row=2, policy="row", prior_diagonal=1)),
                 (["--scales", "16,4,1", "--budget", "1,3", "--policy", "row", "--mode", "sparse"],
                  dict(scales=(16, 4, 1), budget=(1, 3), policy="row", mode="sparse")),
                 ([], {})]
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for name, a in (("q", q), ("k", k), ("v", v), ("mask", mask)):
                files[name] = os.path.join(tmp, f"{name}.npy")
                np.save(files[name], a)
            for flags, options in cases:
                out_path = os.path.join(tmp, "out.npy")
                subprocess.run([os.environ["MRA_REF"], "attend", "--q", files["q"], "--k", files["k"], "--v",
                                files["v"], "--mask", files["mask"], *flags, "-o", out_path], check=True,
                               stdout=subprocess.DEVNULL)
                ours = mra.attend(q, k, v, mask=mask, **options)
                # The same reference code on the same float32 values: equal to the bit.
                np.testing.assert_array_equal(ours, np.load(out_path), err_msg=" ".join(flags))

    def test_errors_raise_mra_error_with_the_status_text(self):
        q, k, v = inputs(10, (64, 32))
        with self.assertRaisesRegex(mra.MraError, "unsupported configuration") as e:
            mra.attend(q[:, :24], k[:, :24], v[:, :24], backend="emulated")
        self.assertEqual(e.exception.status, 3)  # MRA_ERROR_UNSUPPORTED_CONFIG
        with self.assertRaisesRegex(mra.MraError, "reference: scales: 3 does not divide 32"):
            mra.attend(q, k, v, scales=(32, 3, 1))
        with self.assertRaisesRegex(mra.MraError, r"mask: value 2 at \(5,\) is not 0 or 1"):
            mra.attend(q, k, v, mask=np.where(np.arange(64) == 5, 2, 1))
        with self.assertRaisesRegex(mra.MraError, r"mask: shape \(63,\) is not \[64\] or \[1, 64\]"):
            mra.exact(q, k, v, mask=np.ones(63))
        with self.assertRaisesRegex(mra.MraError, "policy: 'rows' is not 'global' or 'row'"):
            mra.attend(q, k, v, policy="rows")
        with self.assertRaisesRegex(mra.MraError, "policy: 'global' cannot be combined with causal=True"):
            mra.attend(q, k, v, policy="global", causal=True, backend="emulated")
        with self.assertRaisesRegex(mra.MraError, "budget: expected 1 value"):
            mra.attend(q, k, v, budget=[1, 2])
        with self.assertRaisesRegex(mra.MraError, "cannot be combined with blocks_per_row"):
            mra.attend(q, k, v, budget=3, blocks_per_row=2)
        with self.assertRaisesRegex(mra.MraError, "mode: 'fast'"):
            mra.attend(q, k, v, mode="fast")
        with self.assertRaisesRegex(mra.MraError, "backend: 'gpu'"):
            mra.attend(q, k, v, backend="gpu")
        with self.assertRaisesRegex(mra.MraError, "scale: -1.0 must be a positive"):
            mra.exact(q, k, v, scale=-1.0)
        with self.assertRaisesRegex(mra.MraError, "k and v: shapes"):
            mra.exact(q, k, v[:10])
        with self.assertRaisesRegex(mra.MraError, "dtype int64"):
            mra.exact(q, k, np.ones((64, 32), np.int64))
        with self.assertRaisesRegex(mra.MraError, "at most 4 resolutions"):
            mra.attend(q, k, v, scales=(32, 16, 8, 4, 1), budget=(1, 1, 1, 1), backend="emulated")
        if not mra.HAVE_CUDA:
            with self.assertRaisesRegex(mra.MraError, "'cuda' is not built"):
                mra.attend(q, k, v, backend="cuda")

    def test_unaligned_and_strided_inputs(self):
        q, k, v = inputs(11, (2, 96, 64))
        buf = np.empty(q.size + 1, np.float32)
        shifted = buf[1:].reshape(q.shape)  # data 4 bytes past an aligned address
        shifted[...] = q
        strided = np.asfortranarray(k)
        out = mra.attend(shifted, strided, v, budget=9, backend="emulated")
        assert_close(out, mra.attend(q, k, v, budget=9), 2e-5, 1e-4, "unaligned / Fortran-order inputs")


if __name__ == "__main__":
    unittest.main()
