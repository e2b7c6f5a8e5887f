#!/usr/bin/env python3
"""tests/interop/files_test.py: mra-ref's .npz and safetensors files against numpy and the safetensors library.

  python3 tests/interop/files_test.py npz         --mra-ref build/tools/mra-ref/mra-ref
  python3 tests/interop/files_test.py safetensors --mra-ref build/tools/mra-ref/mra-ref
(run by CTest: ctest --test-dir build -L interop)

npz: numpy writes Q, K, V and a mask with np.savez (stored members, zip64 local headers) and np.savez_compressed
(deflate), in float16/32/64; `mra-ref exact` reads them (--inputs FILE, FILE:NAME, mixed with .npy) and writes
-o OUT.npz; numpy's np.load reads the output back, which must match exact attention computed here in float64
(|out - ref| <= 1e-5 + 1e-4 |ref|), with dtype float32 and Q's shape. Broken archives (truncated, a flipped data
byte, a missing array) must give exit 2, one line naming the file, and no output.

safetensors: the same with files the safetensors library writes (F32, F16, F64; BF16 written here by hand, since
numpy has no bfloat16; with torch installed also BF16 and BOOL written by the library's torch flavour, which must
read the hand-made file back) and -o OUT.safetensors read back by safetensors.numpy.load_file. Exits 77 (reported
as skipped by CTest) when the safetensors library is not installed (tools/bootstrap.sh installs it).
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The float64 oracle and the failure log of the .npy interop test.
from interop_test import FAILURES, check, exact_attention  # noqa: E402

SKIP = 77
ATOL, RTOL = 1e-5, 1e-4


def run(binary, args):
    return subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True)


def inputs(seed, dtype, shape=(2, 2, 40, 8)):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    mask = np.ones(shape[0] * shape[2], bool).reshape(shape[0], shape[2])
    mask[1, 31:] = False  # padding in the second batch element
    return q, k, v, mask


def expected(q, k, v, mask):
    f32 = [x.astype(np.float32) for x in (q, k, v)]
    return exact_attention(*f32, qmask=mask, kmask=mask)


def check_output(name, out, ref):
    check(out.dtype == np.float32, f"{name}: dtype {out.dtype}, expected float32")
    check(out.shape == ref.shape, f"{name}: shape {out.shape}, expected {ref.shape}")
    if out.shape == ref.shape:
        err = np.abs(out.astype(np.float64) - ref)
        used = (err / (ATOL + RTOL * np.abs(ref))).max()
        worst = np.unravel_index(err.argmax(), err.shape)
        check(used <= 1.0, f"{name}: max error {err.max():.3e} at {worst}, {used:.2f} of the tolerance")
        print(f"{name}: max error {err.max():.3e}, {used:.3f} of the tolerance used")


def write_files(folder, files):
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def check_refused(binary, args, names, out):
    p = run(binary, args)
    lines = p.stderr.strip().splitlines()
    check(p.returncode == 2, f"{args}: exit {p.returncode}, expected 2 ({p.stderr.strip()})")
    check(len(lines) == 1 and names in p.stderr, f"{args}: expected one line naming {names}, got {p.stderr!r}")
    check(not os.path.exists(out), f"{args}: left {out} behind")
    return p.stderr.strip()


def npz_suite(binary, tmp):
    for seed, dtype, save in ((1, np.float32, np.savez), (2, np.float16, np.savez_compressed),
                              (3, np.float64, np.savez_compressed)):
        q, k, v, mask = inputs(seed, dtype)
        ref = expected(q, k, v, mask)
        archive = os.path.join(tmp, f"in_{seed}.npz")
        save(archive, q=q, k=k, v=v, mask=mask)
        out = os.path.join(tmp, f"out_{seed}.npz")
        p = run(binary, ["exact", "--inputs", archive, "-o", out])
        check(p.returncode == 0, f"exact --inputs {archive}: exit {p.returncode}: {p.stderr.strip()}")
        with np.load(out) as f:
            check(list(f.keys()) == ["out"], f"{out}: arrays {list(f.keys())}, expected ['out']")
            check_output(f"{save.__name__} {np.dtype(dtype).name} --inputs", f["out"], ref)

    # Arrays under other names, picked one by one and mixed with a .npy file; the output under a chosen name.
    q, k, v, mask = inputs(4, np.float32)
    archive = os.path.join(tmp, "named.npz")
    np.savez_compressed(archive, query=q, key=k, padding=mask.astype(np.int64))
    np.save(os.path.join(tmp, "v.npy"), v)
    out = os.path.join(tmp, "named_out.npz")
    p = run(binary, ["exact", "--q", archive + ":query", "--k", archive + ":key", "--v", os.path.join(tmp, "v.npy"),
                     "--mask", archive + ":padding", "-o", out + ":attention"])
    check(p.returncode == 0, f"exact with FILE:NAME: exit {p.returncode}: {p.stderr.strip()}")
    with np.load(out) as f:
        check_output("FILE:NAME inputs, -o OUT.npz:attention", f["attention"], expected(q, k, v, mask))

    # compare reads archives too: against itself zero error, and --tensor picks the array.
    p = run(binary, ["compare", out, out + ":attention", "--atol", "0"])
    check(p.returncode == 0 and "PASS" in p.stdout, f"compare of an .npz with itself: {p.stdout} {p.stderr}")
    p = run(binary, ["compare", archive, archive, "--tensor", "query"])
    check(p.returncode == 0 and "0.000e+00" in p.stdout, f"compare --tensor: {p.stdout} {p.stderr}")

    # Hostile archives: one line naming the file, exit 2, no output.
    good = open(os.path.join(tmp, "in_1.npz"), "rb").read()
    broken = {
        "truncated.npz": good[: len(good) // 2],
        "flipped.npz": good[:200] + bytes([good[200] ^ 0x40]) + good[201:],
    }
    write_files(tmp, broken)
    bad_out = os.path.join(tmp, "bad.npz")
    message = check_refused(binary, ["exact", "--inputs", os.path.join(tmp, "flipped.npz"), "-o", bad_out],
                            "flipped.npz", bad_out)
    check("CRC-32 mismatch" in message, f"a flipped byte: {message}")
    message = check_refused(binary, ["exact", "--inputs", os.path.join(tmp, "truncated.npz"), "-o", bad_out],
                            "truncated.npz", bad_out)
    check("end of central directory" in message, f"a truncated archive: {message}")
    message = check_refused(binary, ["exact", "--q", archive, "--k", archive + ":key", "--v", archive + ":key",
                                     "-o", bad_out], "named.npz:q", bad_out)
    check("no array 'q'" in message and "'query'" in message, f"a missing array: {message}")


def bf16_file(path, name, array):
    """A safetensors file holding `array` as BF16 (the upper halves of its float32 bits, truncated)."""
    bits = (np.ascontiguousarray(array, np.float32).view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({name: {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [0, bits.nbytes]}})
    header += " " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header.encode() + bits.tobytes())
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_from_the_library(binary, tmp, q, k, v, mask, hand_made, hand_made_q):
    """BF16 Q, K, V and a BOOL mask written by the safetensors library itself (its torch flavour: numpy has no
    bfloat16), and the hand-made BF16 file read back by the library. Skipped, and said so, without torch."""
    try:
        import torch
        from safetensors.torch import load_file, save_file
    except ImportError as e:
        print(f"BF16 through the safetensors library: skipped ({e})")
        return
    tensors = {name: torch.from_numpy(a).bfloat16() for name, a in (("q", q), ("k", k), ("v", v))}
    tensors["mask"] = torch.from_numpy(mask)
    path, out = os.path.join(tmp, "bf16_lib.safetensors"), os.path.join(tmp, "bf16_lib_out.safetensors")
    save_file(tensors, path)
    p = run(binary, ["exact", "--inputs", path, "-o", out])
    check(p.returncode == 0, f"exact --inputs {path} (BF16 by the library): exit {p.returncode}: {p.stderr.strip()}")
    rounded = [tensors[name].float().numpy() for name in ("q", "k", "v")]
    check_output("BF16 and BOOL by the safetensors library --inputs", load_file(out)["out"].numpy(),
                 expected(*rounded, mask))
    read = load_file(hand_made)["query"]
    check(read.dtype == torch.bfloat16 and np.array_equal(read.float().numpy(), hand_made_q),
          f"{hand_made}: the library reads {read.dtype}, not the BF16 values written")


def safetensors_suite(binary, tmp):
    from safetensors.numpy import load_file, save_file

    for seed, dtype in ((5, np.float32), (6, np.float16), (7, np.float64)):
        q, k, v, mask = inputs(seed, dtype)
        path = os.path.join(tmp, f"in_{seed}.safetensors")
        save_file({"q": q, "k": k, "v": v, "mask": mask}, path)
        out = os.path.join(tmp, f"out_{seed}.safetensors")
        p = run(binary, ["exact", "--inputs", path, "-o", out])
        check(p.returncode == 0, f"exact --inputs {path}: exit {p.returncode}: {p.stderr.strip()}")
        got = load_file(out)
        check(list(got) == ["out"], f"{out}: tensors {list(got)}, expected ['out']")
        check_output(f"safetensors {np.dtype(dtype).name} --inputs", got["out"], expected(q, k, v, mask))

    # BF16 Q alongside F32 K and V from another file; the output under a chosen name.
    q, k, v, mask = inputs(8, np.float32)
    q_bf16 = bf16_file(os.path.join(tmp, "q_bf16.safetensors"), "query", q)
    save_file({"k": k, "v": v}, os.path.join(tmp, "kv.safetensors"))
    out = os.path.join(tmp, "bf16_out.safetensors")
    p = run(binary, ["exact", "--q", os.path.join(tmp, "q_bf16.safetensors") + ":query", "--k", os.path.join(tmp, "kv.safetensors"),
                     "--v", os.path.join(tmp, "kv.safetensors"), "-o", out + ":attention"])
    check(p.returncode == 0, f"exact with a BF16 Q: exit {p.returncode}: {p.stderr.strip()}")
    check_output("BF16 Q, -o OUT.safetensors:attention", load_file(out)["attention"],
                 expected(q_bf16, k, v, np.ones_like(mask)))
    bf16_from_the_library(binary, tmp, q, k, v, mask, os.path.join(tmp, "q_bf16.safetensors"), q_bf16)

    # Hostile files: one line naming the file, exit 2, no output.
    good = open(os.path.join(tmp, "in_5.safetensors"), "rb").read()
    (length,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8:8 + length])
    header["q"]["data_offsets"][1] += 4
    text = json.dumps(header).encode()
    broken = {"offsets.safetensors": struct.pack("<Q", len(text)) + text + good[8 + length:],
              "huge_length.safetensors": struct.pack("<Q", 2**63) + good[8:]}
    write_files(tmp, broken)
    bad_out = os.path.join(tmp, "bad.safetensors")
    message = check_refused(binary, ["exact", "--inputs", os.path.join(tmp, "offsets.safetensors"), "-o", bad_out],
                            "offsets.safetensors:q", bad_out)
    check("tensor 'q'" in message, f"bad offsets: {message}")
    message = check_refused(binary, ["exact", "--inputs", os.path.join(tmp, "huge_length.safetensors"), "-o", bad_out],
                            "huge_length.safetensors", bad_out)
    check("header length" in message, f"a huge header length: {message}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", choices=["npz", "safetensors"])
    parser.add_argument("--mra-ref", required=True)
    args = parser.parse_args()
    if args.suite == "safetensors":
        try:
            import safetensors.numpy  # noqa: F401
        except ImportError:
            print("skipped: the safetensors library is not installed (tools/bootstrap.sh installs it)")
            return SKIP
    with tempfile.TemporaryDirectory() as tmp:
        (npz_suite if args.suite == "npz" else safetensors_suite)(args.mra_ref, tmp)
    print(f"{len(FAILURES)} failure(s)" if FAILURES else "all checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
