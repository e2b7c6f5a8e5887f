#!/usr/bin/env python3
"""tests/interop/interop_test.py: mra-ref against numpy and against the official MRA-2 golden cases.

  python3 tests/interop/interop_test.py numpy  --mra-ref build/tools/mra-ref/mra-ref
  python3 tests/interop/interop_test.py golden --mra-ref build/tools/mra-ref/mra-ref --golden tests/golden/mra2-official
(run by CTest: ctest --test-dir build -L interop)

numpy: numpy writes Q, K, V and masks (float16/32/64, ranks 2, 3 and 4, .npy versions 1.0 to 3.0), `mra-ref exact`
and `mra-ref attend` run on them, numpy reads the outputs back and checks shape, dtype float32 and values against
exact softmax attention computed here in float64 from the same (rounded) input values. Tolerance:
|out - ref| <= 1e-5 + 1e-4 |ref| elementwise, for exact attention and for MRA with every block selected (which
the semantics define to be exact attention). Float64 inputs are first rounded to float32 by mra-ref, so the
reference here uses the float32-rounded values too. A default MRA configuration is checked for its structural
guarantees (masked query rows are 0; each output is a convex combination of real value rows).

golden: for each case of the official MRA-2 / MRA-2-s golden vectors, `mra-ref attend` with the case's scales,
budget, mode, priors and mask must match out.npy to a relative Frobenius error below 1e-4, and `mra-ref select`
must select exactly the blocks of selected.npy.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile


try:
    import numpy as np
except ImportError:
    print("interop: numpy is not installed; tools/bootstrap.sh installs it (python3 -m pip install numpy)")
    sys.exit(1)

ATOL, RTOL = 1e-5, 1e-4
FAILURES = []


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message)


def run(binary, args, expect=0):
    p = subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True)
    check(p.returncode == expect,
          f"mra-ref {' '.join(str(a) for a in args)}: exit {p.returncode}, expected {expect}; stderr: {p.stderr.strip()}")
    return p


def exact_attention(q, k, v, qmask=None, kmask=None):
    """Softmax attention in float64 on [B, H, N, D]; masks [B, N] (1 = real); masked or keyless rows are 0."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    b, h, nq, d = q.shape
    nk = k.shape[2]
    qmask = np.ones((b, nq), bool) if qmask is None else qmask.astype(bool)
    kmask = np.ones((b, nk), bool) if kmask is None else kmask.astype(bool)
    logits = np.einsum("bhid,bhjd->bhij", q, k) / np.sqrt(d)
    logits = np.where(kmask[:, None, None, :], logits, -np.inf)
    row_max = logits.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.exp(logits - row_max)
    total = weights.sum(axis=-1, keepdims=True)
    out = np.einsum("bhij,bhjd->bhid", weights, v) / np.where(total > 0, total, 1.0)
    return np.where(qmask[:, None, :, None], out, 0.0)


def as_rank4(x, rank):
    return x.reshape((1,) * (4 - rank) + x.shape)


def broadcast_mask(mask, batch):
    return None if mask is None else np.broadcast_to(mask.reshape(-1, mask.shape[-1]), (batch, mask.shape[-1]))


def save(path, array, version):
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version)


def check_close(name, out, expected):
    err = np.abs(out.astype(np.float64) - expected)
    bound = ATOL + RTOL * np.abs(expected)
    used = float((err / bound).max())
    check(bool(np.all(err <= bound)), f"{name}: outside |out - ref| <= {ATOL} + {RTOL}|ref| ({used:.3g} of the tolerance)")
    return used


def numpy_suite(binary):
    rng = np.random.default_rng(20240601)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        f = lambda name: os.path.join(tmp, name)
        cases = [
            # (dtype, rank, B, H, Nq, Nk, D, mask kind, .npy version)
            (np.float32, 4, 2, 2, 70, 70, 16, "batch", (1, 0)),
            (np.float32, 3, 1, 3, 45, 45, 8, "shared", (2, 0)),
            (np.float32, 2, 1, 1, 70, 70, 16, None, (3, 0)),
            (np.float64, 4, 2, 1, 40, 40, 8, "batch", (1, 0)),
            (np.float64, 2, 1, 1, 33, 33, 8, None, (1, 0)),
            (np.float16, 4, 1, 2, 64, 64, 16, "batch", (1, 0)),
            (np.float16, 3, 1, 2, 50, 50, 8, None, (1, 0)),
            (np.float32, 4, 2, 1, 30, 70, 16, "cross", (1, 0)),
        ]
        for dtype, rank, B, H, nq, nk, D, mask_kind, version in cases:
            name = f"{np.dtype(dtype).name} rank {rank} Nq={nq} Nk={nk} mask={mask_kind} v{version[0]}"
            shape_q = (B, H, nq, D)[4 - rank:]
            shape_k = (B, H, nk, D)[4 - rank:]
            q = (rng.standard_normal(shape_q) * 0.8).astype(dtype)
            k = (rng.standard_normal(shape_k) * 0.8).astype(dtype)
            v = rng.standard_normal(shape_k).astype(dtype)
            for x, n in ((q, "q"), (k, "k"), (v, "v")):
                save(f(n + ".npy"), x, version)
            args = ["--q", f("q.npy"), "--k", f("k.npy"), "--v", f("v.npy")]
            kmask = qmask = None
            if mask_kind == "batch":
                kmask = np.ones((B, nk), bool)
                kmask[-1, nk - 11:] = False  # padding at the end of the last batch
                qmask = kmask
                save(f("mask.npy"), kmask, version)
                args += ["--mask", f("mask.npy")]
            elif mask_kind == "shared":
                kmask = np.ones(nk, np.float32)
                kmask[5] = 0
                qmask = kmask
                save(f("mask.npy"), kmask, version)
                args += ["--mask", f("mask.npy")]
            elif mask_kind == "cross":
                kmask = (rng.random((B, nk)) > 0.2).astype(np.int32)
                qmask = np.ones(nq, np.uint8)
                qmask[-3:] = 0
                save(f("mask.npy"), kmask, version)
                save(f("qmask.npy"), qmask, version)
                args += ["--key-mask", f("mask.npy"), "--query-mask", f("qmask.npy")]

            # mra-ref computes in float32 inputs: round float64 the same way before the float64 reference.
            as32 = lambda x: as_rank4(x.astype(np.float32), rank)
            expected = exact_attention(as32(q), as32(k), as32(v), broadcast_mask(qmask, B), broadcast_mask(kmask, B))
            expected = expected.reshape(shape_q)

            def load_output(path):
                out = np.load(path)
                check(out.shape == q.shape, f"{name}: output shape {out.shape}, expected {q.shape}")
                check(out.dtype == np.float32, f"{name}: output dtype {out.dtype}, expected float32")
                return out

            run(binary, ["exact"] + args + ["-o", f("exact.npy")])
            worst = max(worst, check_close(f"{name} exact", load_output(f("exact.npy")), expected))

            for config in (["--blocks-per-row", "100000"],
                           ["--blocks-per-row", "100000", "--mode", "sparse"],
                           ["--scales", "8,2,1", "--blocks-per-row", "100000"]):
                run(binary, ["attend"] + args + config + ["-o", f("all.npy")])
                worst = max(worst, check_close(f"{name} attend {' '.join(config)}", load_output(f("all.npy")), expected))

            run(binary, ["attend"] + args + ["-o", f("default.npy")])
            out = as_rank4(load_output(f("default.npy")).astype(np.float64), rank)
            v64 = as32(v).astype(np.float64)
            check(bool(np.all(np.isfinite(out))), f"{name} default attend: non-finite output")
            qm = broadcast_mask(qmask, B)
            km = np.ones((B, nk), bool) if kmask is None else broadcast_mask(kmask, B).astype(bool)
            if qm is not None:
                check(bool(np.all(out[~qm.astype(bool)[:, None, :].repeat(H, 1)] == 0)),
                      f"{name} default attend: a masked query row is not 0")
            for b in range(B):
                lo = v64[b][:, km[b]].min(axis=1)[:, None, :]
                hi = v64[b][:, km[b]].max(axis=1)[:, None, :]
                inside = (out[b] >= lo - 1e-5) & (out[b] <= hi + 1e-5)
                check(bool(np.all(inside)), f"{name} default attend: output outside the range of the real values")
            print(f"ok  {name}")

        # What numpy writes for arrays mra-ref must refuse: one line, exit 2, no output.
        q = rng.standard_normal((2, 32, 8)).astype(np.float32)
        for label, array, problem in (("fortran order", np.asfortranarray(q), "fortran_order"),
                                      ("big-endian", q.astype(">f4"), "big-endian"),
                                      ("complex", q.astype(np.complex64), "unsupported dtype")):
            np.save(f("bad.npy"), array)
            np.save(f("good.npy"), q)
            p = run(binary, ["exact", "--q", f("bad.npy"), "--k", f("good.npy"), "--v", f("good.npy"),
                             "-o", f("refused.npy")], expect=2)
            check(p.stderr.startswith(f"mra-ref: {f('bad.npy')}: ") and problem in p.stderr
                  and p.stderr.count("\n") == 1, f"{label}: stderr {p.stderr!r}")
            check(not os.path.exists(f("refused.npy")), f"{label}: an output file was written")
            print(f"ok  refused: {label}")
    print(f"numpy interop: worst fraction of the tolerance used: {worst:.3g}")


def golden_suite(binary, golden):
    check(os.path.isdir(golden), f"no golden folder at {golden}")
    names = sorted(d for d in os.listdir(golden) if os.path.isfile(os.path.join(golden, d, "case.json")))
    check(len(names) > 0, f"no golden case in {golden}")
    print(f"{'case':22} {'rel. Frobenius':>15} {'max abs':>10}  selection")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            d = os.path.join(golden, name)
            with open(os.path.join(d, "case.json")) as fh:
                case = json.load(fh)
            args = ["--q", os.path.join(d, "q.npy"), "--k", os.path.join(d, "k.npy"), "--v", os.path.join(d, "v.npy"),
                    "--scales", ",".join(str(s) for s in case["scales"]), "--budget", case["budget"],
                    "--mode", case["mode"], "--prior-first", case["prior_first"],
                    "--prior-diagonal", case["prior_diagonal"]]
            if os.path.exists(os.path.join(d, "mask.npy")):
                args += ["--mask", os.path.join(d, "mask.npy")]
            out_path = os.path.join(tmp, name + ".npy")
            json_path = os.path.join(tmp, name + ".json")
            if run(binary, ["attend"] + args + ["-o", out_path]).returncode != 0:
                continue
            if run(binary, ["select"] + args + ["-o", json_path]).returncode != 0:
                continue

            out = np.load(out_path).astype(np.float64)
            expected = np.load(os.path.join(d, "out.npy")).astype(np.float64)
            rel = float(np.linalg.norm(out - expected) / np.linalg.norm(expected))
            max_abs = float(np.abs(out - expected).max())
            check(rel < 1e-4, f"{name}: relative Frobenius error {rel:.3e} >= 1e-4")

            with open(json_path) as fh:
                selection = json.load(fh)
            official = np.load(os.path.join(d, "selected.npy"))
            mismatches = []
            for entry in selection["selected"]:
                if entry["level"] != 1:  # levels are numbered from 1, as docs/semantics.md numbers them
                    continue
                mine = set(entry["blocks"])
                theirs = set(int(x) for x in official[entry["b"], entry["h"]])
                if mine != theirs:
                    mismatches.append(f"b={entry['b']} h={entry['h']}: only ours {sorted(mine - theirs)}, "
                                      f"only official {sorted(theirs - mine)}")
            check(len(selection["selected"]) == official.shape[0] * official.shape[1],
                  f"{name}: {len(selection['selected'])} selections, expected one per batch and head")
            check(not mismatches, f"{name}: selection differs: {'; '.join(mismatches)}")
            print(f"{name:22} {rel:15.3e} {max_abs:10.3e}  {'identical' if not mismatches else 'DIFFERENT'}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=["numpy", "golden"])
    parser.add_argument("--mra-ref", required=True, help="path of the mra-ref binary")
    parser.add_argument("--golden", help="folder of the official golden cases (suite golden)")
    a = parser.parse_args()
    if a.suite == "numpy":
        numpy_suite(a.mra_ref)
    else:
        golden_suite(a.mra_ref, a.golden or "")
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
