#!/usr/bin/env python3
"""tests/sass/sass_mix.py: the SASS instruction mix and occupancy of every generated kernel (label sass).

    python3 tests/sass/sass_mix.py --library build/generated/libmra_kernels_cuda.a \
        --manifest generated/manifest.json --archs 80 90 --table build/sass-mix.md

Disassembles the CUDA build of generated/*.cu and writes one row per (configuration, kernel, architecture; the
backward's kernels too where the manifest marks a configuration "backward"): HMMA, FFMA, LDS, LDSM, LDGSTS, LDG by
width, BAR, SHFL, MUFU, local memory (LDL/STL), all instructions, registers, and for the attention kernels the
CTAs per SM and warps per SM the registers, the shared memory and the thread limits allow. The counts are
static (instructions in the kernel's code, not executed ones). Fails when an f16/bf16 tensor-core kernel (the
forward's attend_mma_kernel, the backward's grad_dq_mma_kernel and grad_dkv_mma_kernel) has no HMMA, when any
kernel uses local memory, or when an expected kernel is missing. Exits 77 (ctest: skipped) when cuobjdump or
nvdisasm is not found (tools/bootstrap.sh installs the PyPI wheels nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm).

How, and why so: `cuobjdump -sass` of the whole library took 157 s and printed 1.3 GB; nvdisasm decodes about
20 us per instruction, and the library's 5 million instructions are only about 300 thousand distinct 16-byte
encodings (each kernel is one template, and the configurations share most of their code). So `cuobjdump -xelf`
extracts the cubins (its listing names each one's archive member, i.e. the configuration, and the file name its
architecture), the code sections (.text.<kernel>) are read from the ELF here, and nvdisasm decodes each distinct
encoding once per architecture, as a raw instruction binary; a kernel's counts are its encodings' counts. The
registers come from `cuobjdump -res-usage` (under a second).
"""

import argparse
import collections
import json
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "codegen"))
from nvcc_resources import (BACKWARD_KERNELS, KERNELS, TENSOR_CORE_KERNELS, ctas_by_registers,  # noqa: E402
                            expected_kernels, report)  # (one list, one table writer)

SKIPPED = 77
COLUMNS = ("HMMA", "FFMA", "LDS", "LDSM", "LDGSTS", "LDG", "BAR", "SHFL", "MUFU", "LDL/STL", "all")
# Per SM, both sm_80 (A100) and sm_90 (H100/H200): 64 Ki registers, 2048 threads, 32 CTAs; shared memory per SM
# usable by CTAs (CUDA C++ Programming Guide, compute capabilities table), 1 KiB reserved per CTA.
SM = {"80": {"smem": 164 * 1024}, "90": {"smem": 228 * 1024}}
THREADS, CTAS, CTA_RESERVED = 2048, 32, 1024
INSTRUCTION_BYTES = 16  # every SASS instruction since sm_70
MEMBER = re.compile(r"member .*:(mra_fwd_\w+?)(?:\.cu)?\.o:")


def find_tool(name: str) -> str | None:
    candidates = [shutil.which(name), f"/usr/local/cuda/bin/{name}",
                  str(pathlib.Path(sysconfig.get_paths()["purelib"]) / f"nvidia/cu13/bin/{name}")]
    return next((c for c in candidates if c and pathlib.Path(c).is_file()), None)


def kernel_of(mangled: str) -> str:
    return next((k for k in KERNELS + BACKWARD_KERNELS if re.search(rf"\d{k}I", mangled)), mangled)


def code_sections(cubin: bytes, path: pathlib.Path):
    """(kernel's mangled name, code) of every .text.<kernel> section of a cubin (ELF64, little-endian)."""
    if cubin[:6] != b"\x7fELF\x02\x01":
        raise RuntimeError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx][4]
    for name, _, _, _, offset, size in headers:
        section = cubin[names + name:cubin.index(b"\0", names + name)].decode()
        if section.startswith(".text."):
            if size % INSTRUCTION_BYTES:
                raise RuntimeError(f"{path}: {section} is {size} bytes, not whole "
                                   f"{INSTRUCTION_BYTES}-byte instructions")
            yield section.removeprefix(".text."), cubin[offset:offset + size]


def classes(op: str) -> list[str]:
    """The table's columns besides "all" one instruction (its opcode with modifiers, e.g. LDG.E.128.CONSTANT)
    counts in."""
    base = op.split(".")[0]
    if base in ("HMMA", "FFMA", "LDSM", "LDGSTS", "BAR", "SHFL", "MUFU", "LDS"):
        return [base]
    if base in ("LDL", "STL"):
        return ["LDL/STL"]
    if base == "LDG":
        width = next((w for w in ("128", "64", "U8", "S8", "U16", "S16") if f".{w}" in op), "32")
        return ["LDG", f"LDG{width}"]
    return []


def decode(nvdisasm: str, arch: str, encodings: dict, workdir: pathlib.Path) -> list[str]:
    """The opcodes of the distinct encodings of one architecture, in their order (their ids)."""
    binary = workdir / f"distinct.sm_{arch}.bin"
    binary.write_bytes(b"".join(encodings))
    text = subprocess.run([nvdisasm, "-b", f"SM{arch}", str(binary)], check=True, capture_output=True,
                          text=True).stdout
    ops = [None] * len(encodings)
    for m in re.finditer(r"^\s+/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", text, re.M):
        ops[int(m.group(1), 16) // INSTRUCTION_BYTES] = m.group(2)
    if None in ops:
        raise RuntimeError(f"nvdisasm -b SM{arch} left {ops.count(None)} of {len(ops)} instructions undecoded")
    return ops


def instruction_mix(cuobjdump: str, nvdisasm: str, library: pathlib.Path) -> dict:
    """{(configuration, kernel, arch): Counter of the table's columns} of every kernel in the library."""
    encodings = collections.defaultdict(dict)  # arch -> {16-byte encoding: id}
    kernels = {}  # (configuration, kernel, arch) -> {encoding id: count}
    with tempfile.TemporaryDirectory(prefix="sass-mix-") as tmp:
        workdir = pathlib.Path(tmp)
        listing = subprocess.run([cuobjdump, "-xelf", "all", str(library.resolve())], cwd=workdir, check=True,
                                 capture_output=True, text=True).stdout
        member = None
        for line in listing.splitlines():
            if line.startswith("member "):
                m = MEMBER.match(line)
                member = m.group(1) if m else None  # (a member other than a generated configuration: not counted)
                continue
            m = re.match(r"Extracting ELF file\s+\d+:\s+(\S+\.sm_(\d+)\.cubin)$", line)
            if not (m and member):
                continue
            path, arch = workdir / m.group(1), m.group(2)
            ids = encodings[arch]
            for mangled, code in code_sections(path.read_bytes(), path):
                counts = collections.Counter(code[i:i + INSTRUCTION_BYTES]
                                             for i in range(0, len(code), INSTRUCTION_BYTES))
                for encoding in counts:
                    if encoding not in ids:
                        ids[encoding] = len(ids)
                mix = kernels.setdefault((member, kernel_of(mangled), arch), collections.Counter())
                mix.update({ids[encoding]: n for encoding, n in counts.items()})
            path.unlink()
        # {encoding id: its columns besides "all"}, only the encodings that count in one (about a quarter)
        counted = {arch: {i: c for i, c in enumerate(map(classes, decode(nvdisasm, arch, ids, workdir))) if c}
                   for arch, ids in encodings.items()}
    found = {}
    for (member, kernel, arch), mix in kernels.items():
        c = found[(member, kernel, arch)] = collections.Counter(all=sum(mix.values()))
        for encoding in mix.keys() & counted[arch].keys():
            for column in counted[arch][encoding]:
                c[column] += mix[encoding]
    return found


def parse_registers(text: str) -> dict:
    """{(configuration, kernel, arch): registers} from cuobjdump -res-usage of the library."""
    found, member, arch, kernel = {}, None, None, None
    for line in text.splitlines():
        m = MEMBER.match(line)
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
    cuobjdump, nvdisasm = find_tool("cuobjdump"), find_tool("nvdisasm")
    if cuobjdump is None or nvdisasm is None:
        missing = " and ".join(t for t, p in (("cuobjdump", cuobjdump), ("nvdisasm", nvdisasm)) if p is None)
        print(f"SKIPPED: no {missing} (PATH, /usr/local/cuda/bin, PyPI nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm); "
              "run tools/bootstrap.sh")
        return SKIPPED
    sass = instruction_mix(cuobjdump, nvdisasm, args.library)
    regs = parse_registers(subprocess.run([cuobjdump, "-res-usage", str(args.library)], check=True,
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
