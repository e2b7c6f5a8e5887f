#!/usr/bin/env python3
"""tests/mutation/run_mutants.py: the mutation suite of the kernels and the emulator (label `mutation`).

Each file tests/mutation/mutants/*.mutant names one source file, an exact snippet that must occur in it exactly
once, its replacement and the CTest labels whose tests must notice (tests/mutation/README.md). For every mutant
the runner writes the mutated source into a private copy of the tree, rebuilds only the test executables of
those labels, and runs their tests; a mutant is *killed* when a test fails (or times out: a hang is a kill),
*survives* when every test passes, and is an *error* when its snippet no longer matches the tree (the suite is
stale) or the mutated tree does not build. The real tree is only read, so a build or an edit may run meanwhile.

    tests/mutation/run_mutants.py                        # every mutant, build copy in build-mutation/
    tests/mutation/run_mutants.py --only exact-key-mask,select-compaction-chunks
    tests/mutation/run_mutants.py --check                # only: does every mutant still apply?

The copy and its build folder persist between runs (--work), so a run rebuilds only what the mutants touch.
Exit status: 0 when every mutant selected is killed, 1 when one survives or fails to apply or build, 2 on bad
usage or when the unmutated copy fails its own tests (then no verdict means anything).
"""

import argparse
import fcntl
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MUTANTS = Path(__file__).resolve().parent / "mutants"

# The configurations the copy builds (MRA_KERNELS). Together they run every path of the kernels (f32, f16 and
# bf16; 2 and 3 levels with 4x4 and 8x8 children; D = 32, 64, 128; 4 to 8 warps per CTA), and they include the
# ones the fixed-configuration tests of label kernels use: test_api (r16x4x1 d64 bf16 and r16x1 d64 bf16), its C
# caller (r16x1 d32 f32), tests/errors (r32x1 d32 f32), the long-context ranges (r32x1 d64 f32) and
# test_mutation_guards (a 2-level 16-bit one), the backward kernels' tests (r32x1 d64 f32, r16x4x1 d32 f32). A
# new test on a fixed configuration adds it here. Left out: r16x4x1 d32 bf16 and r32x1 d64 f16 of the long-context
# and GQA production cases (two more compiles per mutant); here those cases run their other configurations and
# CTest reports them skipped unless they fail.
DEFAULT_KERNELS = ("mra_fwd_r32x1_d32_f32|mra_fwd_r16x1_d32_f32|mra_fwd_r16x4x1_d64_bf16|mra_fwd_r64x8x1_d64_f16|"
                   "mra_fwd_r64x1_d128_f16|mra_fwd_r16x1_d64_bf16|mra_fwd_r32x1_d64_f32|mra_fwd_r16x4x1_d32_f32")
# Tests of a label that say nothing about a mutant and cost minutes: the vendoring consumer builds its own tree.
DEFAULT_EXCLUDE = r"vendoring_consumer"
# Top-level entries of the tree that are not source (as .gitignore has them).
SKIP_TOP = re.compile(r"^(build.*|\.git|mra-demo)$")
SKIP_ANY = {"__pycache__", ".git"}
# Written into the work folder, so that a work folder inside the tree is never copied into itself.
WORK_MARKER = "MUTATION-WORK-FOLDER"
# A mutant's tests run in tiers of their unmutated time (seconds), stopping at the first tier with a failure.
TIERS = [(0, 2), (2, 15), (15, float("inf"))]


@dataclass
class Mutant:
    name: str
    path: Path
    file: str = ""
    what: str = ""
    labels: list = field(default_factory=list)
    original: str = ""
    replacement: str = ""


@dataclass
class Result:
    mutant: Mutant
    verdict: str  # killed | SURVIVED | ERROR
    detail: str
    seconds: float


def fail_usage(message):
    print(f"run_mutants: {message}", file=sys.stderr)
    sys.exit(2)


def parse_mutant(path):
    """Reads one .mutant file: `key: value` header lines, then the original and replacement blocks."""
    m = Mutant(name=path.stem, path=path)
    text = path.read_text()
    head, sep, body = text.partition("<<<<<<< original\n")
    if not sep:
        raise ValueError(f"{path}: no '<<<<<<< original' line")
    original, sep, rest = body.partition("=======\n")
    if not sep:
        raise ValueError(f"{path}: no '=======' line after the original")
    replacement, sep, tail = rest.partition(">>>>>>> mutant\n")
    if not sep or tail.strip():
        raise ValueError(f"{path}: the file must end with a '>>>>>>> mutant' line")
    for line in head.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{path}: header line without 'key: value': {line!r}")
        key, value = key.strip(), value.strip()
        if key == "file":
            m.file = value
        elif key == "what":
            m.what = value
        elif key == "labels":
            m.labels = value.split()
        else:
            raise ValueError(f"{path}: unknown header key {key!r}")
    if not m.file or not m.what or not m.labels:
        raise ValueError(f"{path}: 'file', 'what' and 'labels' are required")
    if original == replacement:
        raise ValueError(f"{path}: the replacement equals the original")
    m.original, m.replacement = original, replacement
    return m


def applies(m, root):
    """None when the mutant's snippet occurs exactly once in root/file, else why not."""
    target = root / m.file
    if not target.is_file():
        return f"{m.file} does not exist"
    count = target.read_text().count(m.original)
    if count != 1:
        return f"the original snippet occurs {count} times in {m.file} (must be once): update the mutant"
    return None


def is_source_dir(path, top):
    """False for folders that hold no source: .git, caches, build trees (any folder with a CMakeCache.txt,
    which covers the runner's own work folder), and the top-level folders .gitignore names."""
    name = path.name
    if name in SKIP_ANY or (path / "CMakeCache.txt").exists() or (path / WORK_MARKER).exists():
        return False
    return not (path.parent == top and SKIP_TOP.match(name))


def sync_tree(src, dst):
    """Makes dst a copy of the source tree of src, rewriting only files whose content differs (so the build
    folder rebuilds only what changed since the last run or the last mutant)."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        rel = here.relative_to(src)
        dirnames[:] = sorted(d for d in dirnames if is_source_dir(here / d, src))
        for name in filenames:
            if name in SKIP_ANY:
                continue
            r = rel / name
            seen.add(r)
            s, d = src / r, dst / r
            if os.path.islink(s):
                continue
            if d.is_file() and filecmp.cmp(s, d, shallow=False):
                continue
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, d)
            shutil.copymode(s, d)
    for dirpath, dirnames, filenames in os.walk(dst):
        rel = Path(dirpath).relative_to(dst)
        for name in filenames:
            if rel / name not in seen:
                (dst / rel / name).unlink()


def run(cmd, log, timeout=None, cwd=None):
    """Runs cmd with its output appended to log; returns (exit status, seconds); 124 on timeout."""
    start = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {' '.join(str(c) for c in cmd)}\n")
        out.flush()
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=cwd).returncode
        except subprocess.TimeoutExpired:
            out.write(f"(timed out after {timeout} s)\n")
            rc = 124
    return rc, time.monotonic() - start


def tail(log, lines=15):
    text = Path(log).read_text(errors="replace").splitlines()
    return "\n".join("    " + t for t in text[-lines:])


class Workspace:
    """The tree as it was when the run started (work/snapshot), the copy that is mutated (work/src) and its
    build folder (work/build)."""

    def __init__(self, work, kernels, jobs, log):
        self.work, self.kernels, self.jobs, self.log = work, kernels, jobs, log
        self.snapshot, self.src, self.build = work / "snapshot", work / "src", work / "build"
        self.ninja = shutil.which("ninja") is not None

    def configure(self):
        cache = self.build / "CMakeCache.txt"
        wanted = f"MRA_KERNELS:STRING={self.kernels}"
        if cache.is_file() and wanted in cache.read_text().splitlines():
            return 0
        cmd = ["cmake", "-S", self.src, "-B", self.build, "-DCMAKE_BUILD_TYPE=Release", "-DMRA_CUDA=OFF",
               "-DMRA_WERROR=OFF", f"-DMRA_KERNELS={self.kernels}"]
        if self.ninja and not cache.is_file():
            cmd += ["-G", "Ninja"]
        return run(cmd, self.log)[0]

    def build_targets(self, targets, timeout):
        cmd = ["cmake", "--build", self.build, "-j", str(self.jobs)]
        if targets:
            cmd += ["--target", *targets]
        return run(cmd, self.log, timeout)

    def tests_of(self, labels, exclude):
        """The (number, name, executable) of every test carrying one of the labels, in CTest's numbering."""
        out = subprocess.run(["ctest", "--test-dir", self.build, "--show-only=json-v1"], capture_output=True,
                             text=True, check=True).stdout
        found = []
        for number, t in enumerate(json.loads(out)["tests"], start=1):
            props = {p["name"]: p["value"] for p in t.get("properties", [])}
            if not set(props.get("LABELS", [])) & set(labels):
                continue
            if exclude and re.search(exclude, t["name"]):
                continue
            found.append((number, t["name"], (t.get("command") or [""])[0]))
        return found

    def targets_of(self, tests):
        """Build outputs the tests run (as Ninja targets); None means "build everything"."""
        if not self.ninja:
            return None
        targets = set()
        for _, _, exe in tests:
            try:
                targets.add(str(Path(exe).resolve().relative_to(self.build.resolve())))
            except ValueError:
                return None  # a test runs something that is not built here (a script): build everything
        return sorted(targets)

    def run_tests(self, tests, test_timeout, junit, stop_on_failure):
        """Runs the tests (numbers and names); returns (exit status, failed names, seconds per test name)."""
        cmd = ["ctest", "--test-dir", self.build, "-I", "0,0,0," + ",".join(str(n) for n, _, _ in tests),
               "-j", str(self.jobs), "--timeout", str(test_timeout), "--no-tests=error", "--output-junit", junit]
        if stop_on_failure:
            cmd += ["--stop-on-failure"]
        if Path(junit).exists():
            Path(junit).unlink()
        rc, _ = run(cmd, self.log)
        failed, times = [], {}
        if Path(junit).is_file():
            for case in ET.parse(junit).getroot().iter("testcase"):
                name = case.get("name")
                times[name] = float(case.get("time") or 0)
                if case.get("status") == "fail" or case.find("failure") is not None:
                    failed.append(name)
        return rc, failed, times

    def first_failure(self, tests, baseline, test_timeout, junit):
        """Runs the tests in tiers of their unmutated time, the quick ones first, until a tier has a failure
        (so a killed mutant rarely waits for a slow test). Returns (exit status, failed names)."""
        tiers = [[t for t in tests if lo <= baseline.get(t[1], 0) < hi] for lo, hi in TIERS]
        for tier in (t for t in tiers if t):
            rc, failed, _ = self.run_tests(tier, test_timeout, junit, True)
            if rc != 0:
                return rc, failed
        return 0, []


def default_labels_order(mutants):
    labels = []
    for m in mutants:
        for label in m.labels:
            if label not in labels:
                labels.append(label)
    return labels


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutant names (file names without .mutant)")
    ap.add_argument("--check", action="store_true", help="only check that every mutant applies to the tree")
    ap.add_argument("--work", type=Path, default=REPO / "build-mutation",
                    help="folder of the private copy and its build (default: build-mutation/ in the tree)")
    ap.add_argument("--kernels", default=DEFAULT_KERNELS, help="MRA_KERNELS of the copy's build")
    ap.add_argument("--exclude", default=DEFAULT_EXCLUDE, help="regex of test names never run")
    ap.add_argument("--jobs", type=int, default=2, help="build and ctest parallelism (default 2)")
    ap.add_argument("--test-timeout", type=int, default=0,
                    help="seconds per test before it counts as a hang (default: 5x its unmutated time, >= 60)")
    ap.add_argument("--build-timeout", type=int, default=1800, help="seconds per build")
    args = ap.parse_args()

    try:
        mutants = [parse_mutant(p) for p in sorted(MUTANTS.glob("*.mutant"))]
    except ValueError as e:
        fail_usage(str(e))
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in {m.name for m in mutants}]
        if unknown:
            fail_usage(f"no mutant named {', '.join(unknown)} in {MUTANTS}")
        mutants = [m for m in mutants if m.name in wanted]
    if not mutants:
        fail_usage(f"no mutants in {MUTANTS}")

    if args.check:
        stale = [(m, why) for m, why in ((m, applies(m, REPO)) for m in mutants) if why]
        for m, why in stale:
            print(f"STALE {m.name}: {why}")
        print(f"{len(mutants) - len(stale)} of {len(mutants)} mutants apply to {REPO}")
        return 1 if stale else 0

    args.work = args.work.resolve()  # ctest reads a relative --output-junit against the build folder, not here
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / WORK_MARKER).write_text("tests/mutation/run_mutants.py: snapshot, mutated copy and build\n")
    lock = open(args.work / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fail_usage(f"another run holds {args.work}/lock")
    log = args.work / "last-run.log"
    log.write_text("")
    junit = args.work / "junit.xml"
    ws = Workspace(args.work, args.kernels, args.jobs, log)
    labels_all = default_labels_order(mutants)
    print(f"mutation: {len(mutants)} mutants, labels {' '.join(labels_all)}, MRA_KERNELS={args.kernels}; "
          f"log {log}", flush=True)

    # The unmutated copy: build it all once (test discovery needs the executables), then its tests must pass.
    t0 = time.monotonic()
    sync_tree(REPO, ws.snapshot)  # one consistent tree for the whole run, whatever is edited meanwhile
    sync_tree(ws.snapshot, ws.src)
    stale = [(m, why) for m, why in ((m, applies(m, ws.snapshot)) for m in mutants) if why]
    for m, why in stale:
        print(f"  {m.name}: STALE, {why}", flush=True)
    if ws.configure() != 0 or ws.build_targets(None, args.build_timeout)[0] != 0:
        print(f"mutation: the unmutated copy does not configure or build:\n{tail(log)}")
        return 2
    tests_all = ws.tests_of(labels_all, args.exclude)
    t1 = time.monotonic()
    rc, failed, baseline = ws.run_tests(tests_all, 3600, str(junit), False)
    if rc != 0:
        print(f"mutation: the unmutated copy fails {', '.join(failed) or 'its tests'} (exit {rc}):\n{tail(log)}")
        return 2
    print(f"mutation: the unmutated copy built in {t1 - t0:.0f} s and passed its {len(baseline)} tests in "
          f"{time.monotonic() - t1:.0f} s", flush=True)
    test_timeout = args.test_timeout or max(60, int(5 * max(baseline.values(), default=60)))

    results = []
    for m, why in stale:
        results.append(Result(m, "ERROR", f"stale: {why}", 0.0))
    stale_names = {m.name for m, _ in stale}
    for m in (m for m in mutants if m.name not in stale_names):
        start = time.monotonic()
        sync_tree(ws.snapshot, ws.src)  # undoes the previous mutant
        target = ws.src / m.file
        target.write_text(target.read_text().replace(m.original, m.replacement, 1))
        tests = ws.tests_of(m.labels, args.exclude)
        rc, _ = ws.build_targets(ws.targets_of(tests), args.build_timeout)
        if rc != 0:
            results.append(Result(m, "ERROR", "does not build (log: " + str(log) + ")", time.monotonic() - start))
            print(f"  {m.name}: ERROR, the mutated tree does not build:\n{tail(log)}", flush=True)
            continue
        rc, failed = ws.first_failure(tests, baseline, test_timeout, str(junit))
        seconds = time.monotonic() - start
        if rc == 0:
            results.append(Result(m, "SURVIVED", "every test of " + " ".join(m.labels) + " passes", seconds))
        elif failed:
            results.append(Result(m, "killed", ", ".join(failed[:3]) + (" ..." if len(failed) > 3 else ""), seconds))
        else:
            results.append(Result(m, "ERROR", f"ctest exit {rc} without a failed test (log: {log})", seconds))
        print(f"  {m.name}: {results[-1].verdict} ({results[-1].detail}) {seconds:.0f} s", flush=True)
    sync_tree(ws.snapshot, ws.src)

    order = {m.name: i for i, m in enumerate(mutants)}
    results.sort(key=lambda r: order[r.mutant.name])
    print()
    print("| mutant | file | what | result | s |")
    print("|---|---|---|---|---|")
    for r in results:
        verdict = f"killed by {r.detail}" if r.verdict == "killed" else f"**{r.verdict}**: {r.detail}"
        print(f"| {r.mutant.name} | {r.mutant.file} | {r.mutant.what} | {verdict} | {r.seconds:.0f} |")
    killed = sum(r.verdict == "killed" for r in results)
    print(f"\n{killed} of {len(results)} mutants killed in {time.monotonic() - t0:.0f} s "
          f"(MRA_KERNELS={args.kernels}, -j{args.jobs})")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
