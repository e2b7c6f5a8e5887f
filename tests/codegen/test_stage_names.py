#!/usr/bin/env python3
"""tests/codegen/test_stage_names.py: the launch stage names, one list in runtime/mra.h (mra_set_launch_observer's
comment, lines ` *   forward:` and ` *   backward:`), against the three places that spell them (label codegen):
  - the kernels: the names forward.cuh and backward.cuh tell the observer (their k...Stage constants);
  - tools/perf-model: the stages of `--tsv -` (forward and --backward, every coarse level: R = (64, 16, 4, 1)),
    each a name of the list or a part of one ("name: part");
  - the GPU kit (tests/kernels/stages_cuda.cpp), which times the observer's stages against the model's rows of the
    same name or its parts: every forward name must have model rows, but "share" (group_share_kernel, which the
    model does not estimate: the kit shows "-").
Which launches carry which name is checked on the emulator by `kernels.launch stages` (test_launch_stages.cpp).

    python3 tests/codegen/test_stage_names.py [--root DIR]     (exit 0: all agree; 1: the mismatches, listed)
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys

# The names the model leaves out, and why: group_share_kernel copies a selection (§8.4), no modelled work.
NOT_MODELLED = {"share"}


def header_lists(mra_h: str) -> dict[str, list[str]]:
    """The forward and backward lists of mra.h's observer comment."""
    lists = {}
    for which in ("forward", "backward"):
        lines = [l for l in mra_h.splitlines() if re.match(rf"\s*\*\s+{which}:\s", l)]
        if len(lines) != 1:
            raise SystemExit(f"runtime/mra.h: expected one ' *   {which}:' line in the launch observer's comment, "
                             f"found {len(lines)}")
        lists[which] = re.findall(r'"([^"]*)"', lines[0])
    return lists


def kernel_names(source: str) -> list[str]:
    """Every string of the `inline constexpr const char* k...Stage` constants (single names and arrays)."""
    names = []
    for body in re.findall(r"inline constexpr const char\*\s+k\w*Stage(?:\[\])?\s*=\s*(\{[^}]*\}|\"[^\"]*\")", source):
        names += re.findall(r'"([^"]*)"', body)
    return names


def model_stages(root: pathlib.Path, *flags: str) -> list[str]:
    """The stage column of `tools/perf-model --tsv -` (without its totals and the FlashAttention rows)."""
    out = subprocess.run([sys.executable, str(root / "tools/perf-model"), "--tsv", "-", "--sides", "64", "16", "4",
                          "1", "--n", "4096", *flags], check=True, capture_output=True, text=True).stdout
    rows = [line.split("\t") for line in out.splitlines() if line and not line.startswith("#")]
    stages = [r[2] for r in rows if len(r) == 4]
    if len(stages) != len(rows) or not stages:
        raise SystemExit(f"tools/perf-model --tsv: expected rows 'N<tab>mode<tab>stage<tab>us', got:\n{out}")
    return [s for s in stages if s not in ("MRA total", "backward total") and not s.startswith("FlashAttention")]


def owner(stage: str, names: list[str]) -> str | None:
    """The name of the list a model stage belongs to, as the kit matches them: itself, or "name: part"."""
    for name in names:
        if stage == name or stage.startswith(name + ": "):
            return name
    return None


def compare(what: str, listed: list[str], found: list[str]) -> list[str]:
    problems = []
    if len(set(found)) != len(found):
        problems.append(f"{what}: a name given twice: {found}")
    missing, extra = [n for n in listed if n not in found], [n for n in found if n not in listed]
    if missing:
        problems.append(f"{what}: lacks {missing}, which runtime/mra.h lists")
    if extra:
        problems.append(f"{what}: has {extra}, which runtime/mra.h does not list")
    return problems


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parents[2])
    root = ap.parse_args(argv).root
    listed = header_lists((root / "runtime/mra.h").read_text(encoding="utf-8"))
    problems = []
    for which, header in (("forward", "forward.cuh"), ("backward", "backward.cuh")):
        found = kernel_names((root / "runtime/kernels" / header).read_text(encoding="utf-8"))
        problems += compare(f"runtime/kernels/{header}", listed[which], found)
    for which, flags in (("forward", ("--mode", "full")), ("backward", ("--backward",))):
        stages = model_stages(root, *flags)
        for s in stages:
            if owner(s, listed[which]) is None:
                problems.append(f"tools/perf-model {' '.join(flags)}: stage '{s}' is not a {which} name of "
                                f"runtime/mra.h, nor a part of one")
        modelled = {owner(s, listed[which]) for s in stages}
        for name in listed[which]:
            if name not in modelled and name not in NOT_MODELLED:
                problems.append(f"tools/perf-model {' '.join(flags)}: no stage '{name}' (nor parts of it): the GPU "
                                f"kit would time it against no estimate")
            if name in modelled and name in NOT_MODELLED:
                problems.append(f"tools/perf-model {' '.join(flags)}: '{name}' is modelled now: drop it from "
                                f"NOT_MODELLED")
    for p in problems:
        print(f"FAIL: {p}")
    if problems:
        return 1
    print(f"ok: {len(listed['forward'])} forward and {len(listed['backward'])} backward stage names agree "
          f"(runtime/mra.h, forward.cuh, backward.cuh, tools/perf-model --tsv)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
