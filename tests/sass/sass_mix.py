#!/usr/bin/env python3
"""tests/sass/sass_mix.py: the SASS instruction mix and occupancy of every generated kernel (label sass).

    python3 tests/sass/sass_mix.py --library build/generated/libmra_kernels_cuda.a \
        --manifest generated/manifest.json --archs 80 90 --table build/sass-mix.md

Disassembles the CUDA build of generated/*.cu with cuobjdump (-sass for the instructions, -res-usage for the
registers) and writes one row per (configuration, kernel, architecture; the backward's kernels too where the
manifest marks a configuration "backward"): HMMA, FFMA, LDS, LDSM, LDGSTS, LDG by
width, BAR, SHFL, MUFU, local memory (LDL/STL), all instructions, registers, and for the attention kernels the
CTAs per SM and warps per SM the registers, the shared memory and the thread limits allow. The counts are
static (instructions in the kernel's code, not executed ones). Fails when an f16/bf16 tensor-core kernel (the
forward's attend_mma_kernel, the backward's grad_dq_mma_kernel and grad_dkv_mma_kernel) has no HMMA, when any kernel uses local memory, or when an expected kernel is missing. Exits 77 (ctest: skipped) when
no cuobjdump is found (tools/bootstrap.sh installs the PyPI wheel nvidia-cuda-cuobjdump).
"""

import argparse
import collections
import json
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "codegen"))
from nvcc_resources import (BACKWARD_KERNELS, KERNELS, TENSOR_CORE_KERNELS, ctas_by_registers,  # noqa: E402
                            expected_kernels, report)  # (one list, one table writer)

SKIPPED = 77
COLUMNS = ("HMMA", "FFMA", "LDS", "LDSM", "LDGSTS", "LDG", "BAR", "SHFL", "MUFU", "LDL/STL", "all")
# Per SM, both sm_80 (A100) and sm_90 (H100/H200): 64 Ki registers, 2048 threads, 32 CTAs; shared memory per SM
# usable by CTAs (CUDA C++ Programming Guide, compute capabilities table), 1 KiB reserved per CTA.
SM = {"80": {"smem": 164 * 1024}, "90": {"smem": 228 * 1024}}
THREADS, CTAS, CTA_RESERVED = 2048, 32, 1024


def find_cuobjdump() -> str | None:
    candidates = [shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump",
                  str(pathlib.Path(sysconfig.get_paths()["purelib"]) / "nvidia/cu13/bin/cuobjdump")]
    return next((c for c in candidates if c and pathlib.Path(c).is_file()), None)


def kernel_of(mangled: str) -> str:
    return next((k for k in KERNELS + BACKWARD_KERNELS if re.search(rf"\d{k}I", mangled)), mangled)


def parse_sass(text: str) -> dict:
    """{(configuration, kernel, arch): Counter of opcode classes} from cuobjdump -sass of the library."""
    found, member, arch, current = {}, None, None, None
    for line in text.splitlines():
        m = re.match(r"member .*:(mra_fwd_\w+?)(?:\.cu)?\.o:", line)
        if m:
            member, current = m.group(1), None
            continue
        m = re.match(r"arch = sm_(\d+)", line)
        if m:
            arch, current = m.group(1), None
            continue
        m = re.search(r"Function : (\S+)", line)
        if m and member:
            current = found.setdefault((member, kernel_of(m.group(1)), arch), collections.Counter())
            continue
        m = re.match(r"\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m and current is not None:
            op = m.group(1)
            base = op.split(".")[0]
            current["all"] += 1
            if base in ("HMMA", "FFMA", "LDSM", "LDGSTS", "BAR", "SHFL", "MUFU", "LDS"):
                current[base] += 1
            elif base in ("LDL", "STL"):
                current["LDL/STL"] += 1
            elif base == "LDG":
                width = next((w for w in ("128", "64", "U8", "S8", "U16", "S16") if f".{w}" in op), "32")
                current[f"LDG{width}"] += 1
                current["LDG"] += 1
    return found


def parse_registers(text: str) -> dict:
    """{(configuration, kernel, arch): registers} from cuobjdump -res-usage of the library."""
    found, member, arch, kernel = {}, None, None, None
    for line in text.splitlines():
        m = re.match(r"member .*:(mra_fwd_\w+?)(?:\.cu)?\.o:", line)
        if m:
            member = m.group(1)
        m = re.search(r"arch = sm_(\d+)", line)
        if m:
            arch = m.group(1)
        m = re.search(r"Function (\S+):", line)
        if m:
            kernel = kernel_of(m.group(1))
        m = re.search(r"REG:(\d+)", line)
        if m and member and kernel:
            found[(member, kernel, arch)] = int(m.group(1))
    return found


def attend_smem(cfg: dict) -> int:
    """Dynamic shared memory of the attention kernel: MmaSmem<Cfg>::bytes / AttendSmem<Cfg>::bytes
    (runtime/kernels/attend.cuh), restated here for the occupancy column."""
    d, rows, tile, threads = cfg["head_dim"], cfg["query_rows"], cfg["key_tile"], cfg["threads"]
    coarse_words = 2 * d + threads + threads // 32 + 2 + threads
    if cfg["dtype"] == "f32":
        return 4 * (rows * (d + 1) + tile * (d + 1) + tile * d + rows * tile + tile + coarse_words)
    stages, slabs, pitch = cfg["stages"], -(-rows // 16), d + 8
    elems = (16 * slabs + 2 * stages * tile) * pitch
    # (without causal attention: with it, MmaSmem::causal_bytes adds 4 (tile + 1) bytes per ring slot)
    return (elems * 2 + 15) // 16 * 16 + stages * -(-tile // 32) * 4 + coarse_words * 4


def occupancy(regs: int, threads: int, smem: int, arch: str) -> tuple[int, int]:
    warps = -(-threads // 32)
    by_regs = ctas_by_registers(regs, threads) if regs else CTAS
    by_smem = SM[arch]["smem"] // (smem + CTA_RESERVED)
    ctas = min(by_regs, by_smem, THREADS // threads, CTAS)
    return ctas, ctas * warps


def main(argv) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=pathlib.Path, required=True)
    ap.add_argument("--manifest", type=pathlib.Path, required=True)
    ap.add_argument("--archs", nargs="+", required=True)
    ap.add_argument("--table", type=pathlib.Path, required=True)
    args = ap.parse_args(argv)
    tool = find_cuobjdump()
    if tool is None:
        print("SKIPPED: no cuobjdump (PATH, /usr/local/cuda/bin, PyPI nvidia-cuda-cuobjdump); run tools/bootstrap.sh")
        return SKIPPED
    sass = parse_sass(subprocess.run([tool, "-sass", str(args.library)], check=True, capture_output=True,
                                     text=True).stdout)
    regs = parse_registers(subprocess.run([tool, "-res-usage", str(args.library)], check=True,
                                          capture_output=True, text=True).stdout)
    configs = json.loads(args.manifest.read_text())["configurations"]
    built = {member for member, _, _ in sass}
    archs = [re.sub(r"\D.*", "", a) for a in args.archs]
    rows, problems = [], []
    for name, cfg in sorted(configs.items()):
        if name not in built:
            continue  # not in this build's MRA_KERNELS subset
        for kernel in expected_kernels(cfg):
            for arch in archs:
                c = sass.get((name, kernel, arch))
                if c is None:
                    problems.append(f"{name}: {kernel} for sm_{arch} is not in {args.library}")
                    continue
                ldg = "/".join(f"{c[f'LDG{w}']}" for w in ("128", "64", "32", "U8"))
                r = regs.get((name, kernel, arch), 0)
                occ = ""
                if kernel.startswith("attend"):
                    ctas, warps = occupancy(r, cfg["threads"], attend_smem(cfg), arch)
                    occ = f"{ctas} / {warps}"
                rows.append(f"| {name} | {kernel} | sm_{arch} | " +
                            " | ".join(ldg if col == "LDG" else str(c[col]) for col in COLUMNS) + f" | {r} | {occ} |")
                if kernel in TENSOR_CORE_KERNELS and c["HMMA"] == 0:
                    problems.append(f"{name}: {kernel} on sm_{arch} has no HMMA (the exact part is not on tensor cores)")
                if c["LDL/STL"]:
                    problems.append(f"{name}: {kernel} on sm_{arch} uses local memory ({c['LDL/STL']} LDL/STL)")
    if not rows:
        problems.append(f"no generated kernel found in {args.library}")
    header = ("| configuration | kernel | arch | HMMA | FFMA | LDS | LDSM | LDGSTS | LDG 128/64/32/8-bit | BAR | SHFL | "
              "MUFU | LDL/STL | instructions | registers | attend CTAs / warps per SM |")
    return report(header, rows, problems, args.table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
