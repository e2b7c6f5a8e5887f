#!/usr/bin/env python3
"""tests/codegen/nvcc_resources.py: the register/shared-memory/stack/spill table of the CUDA build (label nvcc).

    python3 tests/codegen/nvcc_resources.py --logs build/tests/codegen/ptxas --manifest generated/manifest.json \
        --archs 80 90 --table build/nvcc-resources.md

Reads the -Xptxas -v logs that tests/codegen/ptxas-log.sh kept while the build compiled generated/*.cu, writes
one table row per (configuration, kernel, architecture), prints it, and fails when a kernel spills, uses more
registers than its configuration's max_registers (codegen/tuning.toml), or is missing from a log. With --only
(the configurations a build restricted by MRA_KERNELS compiled) it checks those and names the others as not built.
"""

import argparse
import json
import pathlib
import re
import sys

# group_pool_kernel before pool_kernel: parse() takes the first name contained in the mangled one.
KERNELS = ("group_pool_kernel", "group_share_kernel", "pool_kernel", "coarse_rowmax_kernel", "coarse_rank_kernel",
           "coarse_count_kernel", "coarse_write_kernel", "refine_keys_kernel", "level_rank_kernel", "level_count_kernel",
           "level_write_kernel", "coarse_level1_kernel", "coarse_merge_kernel", "attend_kernel", "attend_mma_kernel")
# The backward's kernels (runtime/kernels/backward.cuh), in the configurations the manifest marks "backward": the
# stages every dtype runs, and the exact-part stages by dtype (f16/bf16 on tensor cores, backward_mma.cuh).
BACKWARD_COMMON = ("grad_delta_kernel", "grad_block_kernel", "grad_coarse_rows_kernel", "grad_coarse_cols_kernel")
BACKWARD_EXACT = {"f32": ("grad_dq_kernel", "grad_dkv_kernel"),
                  "f16": ("grad_dq_mma_kernel", "grad_dkv_mma_kernel"),
                  "bf16": ("grad_dq_mma_kernel", "grad_dkv_mma_kernel")}
BACKWARD_KERNELS = BACKWARD_COMMON + BACKWARD_EXACT["f32"] + BACKWARD_EXACT["f16"]
ATTEND = {"f32": "attend_kernel", "f16": "attend_mma_kernel", "bf16": "attend_mma_kernel"}  # by dtype
# The kernels whose exact part is on tensor cores: their SASS must hold HMMA (tests/sass).
TENSOR_CORE_KERNELS = ("attend_mma_kernel",) + BACKWARD_EXACT["f16"]
REGISTERS_PER_SM = 65536


def expected_kernels(cfg: dict) -> list[str]:
    """The kernels a generated configuration (manifest.json entry) compiles: the forward's, and the backward's."""
    out = [k for k in KERNELS if (k != "refine_keys_kernel" or len(cfg["resolutions"]) > 2)
           and (not k.startswith("attend") or k == ATTEND[cfg["dtype"]])]
    return out + (list(BACKWARD_COMMON + BACKWARD_EXACT[cfg["dtype"]]) if cfg.get("backward") else [])


def parse(log: str) -> dict:
    """{(kernel, arch): {regs, smem, stack, spill_stores, spill_loads}} from one nvcc -Xptxas -v log."""
    found, current = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\S+)' for 'sm_(\d+)'", line)
        if m:
            kernel = next((k for k in KERNELS + BACKWARD_KERNELS if k in m.group(1)), m.group(1))
            current = found.setdefault((kernel, m.group(2)), {})
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(s.group(1)) if s else 0
    return found


def ctas_by_registers(regs: int, threads: int) -> int:
    per_warp = (regs * 32 + 255) // 256 * 256
    return (REGISTERS_PER_SM // per_warp) // ((threads + 31) // 32) if regs else 0


def report(header: str, rows: list[str], problems: list[str], path: pathlib.Path) -> int:
    """Writes and prints the Markdown table, prints the problems; the exit status (1 when any)."""
    table = [header, "|" + "---|" * (header.count("|") - 1)] + rows
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(table) + "\n")
    print("\n".join(table))
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    print(f"{len(rows)} kernels checked, {len(problems)} problems; table: {path}")
    return 1 if problems else 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=pathlib.Path, required=True)
    ap.add_argument("--manifest", type=pathlib.Path, required=True)
    ap.add_argument("--archs", nargs="+", required=True)
    ap.add_argument("--table", type=pathlib.Path, required=True)
    ap.add_argument("--only", default="", help="comma-separated configurations built (default: every one)")
    args = ap.parse_args(argv)
    configs = json.loads(args.manifest.read_text())["configurations"]
    if args.only:
        built = set(args.only.split(","))
        unknown = sorted(built - set(configs))
        if unknown:
            print(f"FAIL: not in the manifest: {', '.join(unknown)}", file=sys.stderr)
            return 1
        left_out = sorted(set(configs) - built)
        if left_out:
            print(f"not built (MRA_KERNELS), so not checked: {len(left_out)} configurations: {', '.join(left_out)}")
        configs = {name: cfg for name, cfg in configs.items() if name in built}
    archs = [re.sub(r"\D.*", "", a) for a in args.archs]
    rows, problems = [], []
    for name, cfg in sorted(configs.items()):
        log = args.logs / f"{name}.cu.log"
        if not log.exists():
            problems.append(f"{name}: no ptxas log at {log} (rebuild mra_kernels_cuda)")
            continue
        found = parse(log.read_text())
        for kernel in expected_kernels(cfg):
            for arch in archs:
                r = found.get((kernel, arch))
                if not r or "regs" not in r:
                    problems.append(f"{name}: {kernel} for sm_{arch} is not in {log}")
                    continue
                threads = cfg["threads"] if kernel.startswith("attend") else None
                ctas = ctas_by_registers(r["regs"], threads) if threads else ""
                rows.append(f"| {name} | {kernel} | sm_{arch} | {r['regs']} | {r['smem']} | {r['stack']} | "
                            f"{r['spill_stores']}/{r['spill_loads']} | {ctas} |")
                if r["spill_stores"] or r["spill_loads"]:
                    problems.append(f"{name}: {kernel} spills on sm_{arch} ({r['spill_stores']} B stored)")
                if r["regs"] > cfg["max_registers"]:
                    problems.append(f"{name}: {kernel} uses {r['regs']} registers on sm_{arch}, "
                                    f"over max_registers {cfg['max_registers']}")
    header = ("| configuration | kernel | arch | registers | static smem (B) | stack (B) | spills st/ld (B) | "
              "attend CTAs/SM by registers |")
    return report(header, rows, problems, args.table)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
