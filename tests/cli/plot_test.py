#!/usr/bin/env python3
"""tests/cli/plot_test.py: `mra-ref plot` and the demo's pictures, as XML and as a browser renders them.

  python3 tests/cli/plot_test.py svg    --mra-ref build/tools/mra-ref/mra-ref
  python3 tests/cli/plot_test.py render --mra-ref build/tools/mra-ref/mra-ref
(run by CTest: ctest --test-dir build -L cli)

svg: numpy writes structured inputs; `plot selection` with explicit budgets must give an SVG that parses as XML
with one shaded rect per coarsest-level block, exactly `budget` rects per refinement level, and in every block
row one block at the darkest shade (each row's best coefficient); `plot error` must give one polyline per
(scale set, mode) and one circle per configuration, and print a table in which the configuration that selects
every block has the error of exact attention (below 1e-5). Bad arguments: exit 2, one line, no file.

render: headless Chromium (Debian's `chromium`) screenshots both pictures; each PNG, decoded here, must be
mostly white but not blank, and hold the colours of the coarse shading and of the first refinement level.
Exits 77 (reported as skipped by CTest) when chromium is not installed.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib

import numpy as np

SKIP = 77
SVG = "{http://www.w3.org/2000/svg}"
FAILURES = []


def check(condition, message):
    if not condition:
        FAILURES.append(message)
        print("FAIL:", message)


def run(binary, args):
    return subprocess.run([binary] + [str(a) for a in args], capture_output=True, text=True)


def write_inputs(folder, n=256, d=16, heads=2):
    """Attention local along the sequence: each query is close to the keys near it."""
    rng = np.random.default_rng(7)
    base = np.cumsum(rng.standard_normal((heads, n, d)), axis=1) * 0.6
    q = (base + 0.3 * rng.standard_normal(base.shape)).astype(np.float32)
    k = (base + 0.3 * rng.standard_normal(base.shape)).astype(np.float32)
    v = rng.standard_normal(base.shape).astype(np.float32)
    path = os.path.join(folder, "inputs.npz")
    np.savez(path, q=q, k=k, v=v)
    return path


def elements(svg_path, tag, cls=None):
    root = ET.parse(svg_path).getroot()
    check(root.tag == SVG + "svg", f"{svg_path}: root element {root.tag}")
    return [e for e in root.iter(SVG + tag) if cls is None or e.get("class") == cls]


def svg_suite(binary, tmp):
    inputs = write_inputs(tmp)
    n = 256
    selection = os.path.join(tmp, "selection.svg")
    p = run(binary, ["plot", "selection", "--inputs", inputs, "--scales", "32,8,1", "--budget", "11,40",
                     "--head", "1", "-o", selection])
    check(p.returncode == 0, f"plot selection: exit {p.returncode}: {p.stderr.strip()}")
    coarse = elements(selection, "rect", "coarse")
    check(len(coarse) == (n // 32) ** 2, f"{len(coarse)} coarse blocks, expected {(n // 32) ** 2}")
    check(len(elements(selection, "rect", "level-1")) == 11, "level 1 does not show its budget of 11 blocks")
    check(len(elements(selection, "rect", "level-2")) == 40, "level 2 does not show its budget of 40 blocks")
    # Every block row's best coefficient gets the darkest shade: rows of 8 coarse blocks, in order.
    darkest = [i // (n // 32) for i, e in enumerate(coarse) if e.get("fill") == "#08306b"]
    check(sorted(set(darkest)) == list(range(n // 32)), f"rows with a darkest block: {sorted(set(darkest))}")
    check(len(darkest) < len(coarse) // 4, f"{len(darkest)} of {len(coarse)} blocks at the darkest shade")
    check(len({e.get("fill") for e in coarse}) > 3, "the coarse blocks use too few shades")

    error = os.path.join(tmp, "error.svg")
    p = run(binary, ["plot", "error", "--inputs", inputs, "--scale-sets", "32,1:16,4,1", "--blocks-per-row", "1,2,8",
                     "-o", error])
    check(p.returncode == 0, f"plot error: exit {p.returncode}: {p.stderr.strip()}")
    check(len(elements(error, "polyline", "series")) == 4, "expected 4 series (2 scale sets x 2 modes)")
    check(len(elements(error, "circle", "point")) == 12, "expected 12 points (2 sets x 2 modes x 3 budgets)")
    rows = [line.split() for line in p.stdout.splitlines() if line[:1].isdigit()]
    check(len(rows) == 12, f"the table has {len(rows)} rows, expected 12")
    # 32,1 with 8 blocks per row selects all 8 key blocks of every row: the result is exact attention.
    every = [r for r in rows if r[0] == "32,1" and r[2] == "8"]
    check(len(every) == 2 and all(float(r[3]) == 1.0 and float(r[4]) < 1e-5 for r in every),
          f"32,1 with every block selected: {every}")
    partial = [float(r[4]) for r in rows if r[2] == "1"]
    check(all(e > 1e-3 for e in partial), f"1 block per row should leave a visible error: {partial}")

    # Bad arguments: one line, exit 2, nothing written.
    for args, subject in ((["plot", "pie", "--inputs", inputs, "-o", "x.svg"], "plot"),
                          (["plot", "selection", "--inputs", inputs, "--head", "2", "-o", "x.svg"], "--head"),
                          (["plot", "error", "--inputs", inputs, "--scale-sets", "32,1:7,2", "-o", "x.svg"], "--scale-sets"),
                          (["plot", "error", "--inputs", inputs, "--scales", "32,1", "-o", "x.svg"], "--scales")):
        out = os.path.join(tmp, "x.svg")
        p = run(binary, args[:-1] + [out])
        check(p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and subject in p.stderr,
              f"{args}: exit {p.returncode}, stderr {p.stderr!r}")
        check(not os.path.exists(out), f"{args} left {out} behind")


def png_pixels(path):
    """Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) into rows of pixel tuples."""
    data = open(path, "rb").read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG")
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert depth == 8 and colour in (2, 6) and interlace == 0, "unexpected PNG format"
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return rows


def render_suite(binary, tmp):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("skipped: chromium is not installed (apt-get install chromium)")
        return SKIP
    inputs = write_inputs(tmp)
    pictures = {"selection": ["--scales", "32,8,1", "--budget", "11,40"], "error": ["--blocks-per-row", "1,2,4"]}
    for kind, options in pictures.items():
        svg = os.path.join(tmp, kind + ".svg")
        p = run(binary, ["plot", kind, "--inputs", inputs, *options, "-o", svg])
        check(p.returncode == 0, f"plot {kind}: {p.stderr.strip()}")
        png = os.path.join(tmp, kind + ".png")
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", "--window-size=1000,760", "file://" + svg],
                       capture_output=True, timeout=120)
        check(os.path.exists(png), f"chromium wrote no screenshot of {svg}")
        if not os.path.exists(png):
            continue
        pixels = [px for row in png_pixels(png) for px in row]
        white = sum(px == (255, 255, 255) for px in pixels) / len(pixels)
        dark_blue = sum(px[2] > 80 and px[0] < 60 and px[1] < 90 for px in pixels)  # coarse shading's dark end
        red = sum(px[0] > 180 and px[1] < 120 and px[2] < 120 for px in pixels)  # level 1 / the first series
        print(f"{kind}: {len(pixels)} pixels, {white:.3f} white, {dark_blue} dark blue, {red} red")
        check(0.2 < white < 0.995, f"{kind}: {white:.3f} of the screenshot is white (blank or garbled)")
        check(red > 50, f"{kind}: no red pixels (level 1 / the 32,1 series did not render)")
        if kind == "selection":
            check(dark_blue > 200, f"selection: {dark_blue} dark blue pixels (coarse shading did not render)")
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", choices=["svg", "render"])
    parser.add_argument("--mra-ref", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.suite == "svg":
            svg_suite(args.mra_ref, tmp)
        elif render_suite(args.mra_ref, tmp) == SKIP:
            return SKIP
    print(f"{len(FAILURES)} failure(s)" if FAILURES else "all checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
