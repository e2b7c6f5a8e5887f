#!/usr/bin/env python3
"""codegen/generate.py: renders the MRA kernels (forward and backward) of every configuration into generated/.

    python3 codegen/generate.py            # write generated/ (only changed files; removes stale ones)
    python3 codegen/generate.py --check    # exit 1 and show the difference when generated/ is not current
    python3 codegen/generate.py --out DIR  # render into another folder
    python3 codegen/generate.py --variants DIR [--only NAME,NAME...]
                                           # the tuning candidates of codegen/autotune.toml, for the GPU kit's
                                           # `mra-gpu-kit autotune` (tests/kernels); into DIR, never generated/

Inputs: codegen/manifest.toml (which configurations exist), codegen/tuning.toml (their tuning parameters),
codegen/templates/*.j2. Needs Python >= 3.11 (tomllib) and Jinja2. Rendering is strict (an undefined variable
is an error) and deterministic (sorted configurations, nothing from the clock or the host), so a rendered tree
depends only on those inputs. The kernel math lives in runtime/kernels/*.cuh; templates only emit constants,
instantiations and the lists the build and the runtime read: registry.inc (the one list of configurations, read
by generated/CMakeLists.txt and the runtime) and manifest.json (the same with tuning, for tools and tests).
generated/CMakeLists.txt is written by hand (nothing in it depends on the manifest): the generator leaves it alone.
With --variants it renders, for the configurations codegen/autotune.toml sweeps (restricted to --only), one forward-only
kernel file per candidate tuning, each with its own entry symbol (mra_tune_..., never a configuration's mra_fwd_...),
and autotune.inc, their list; the build folder of the GPU kit is their only destination. Jinja2 is imported only
to render, so that codegen/apply_tuning.py can validate a tuning table without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
import json
import pathlib
import sys
import tempfile
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent
DTYPES = {"f32": ("float", 4, "MRA_DTYPE_F32"), "f16": ("__half", 2, "MRA_DTYPE_F16"),
          "bf16": ("__nv_bfloat16", 2, "MRA_DTYPE_BF16")}
TENSOR_CORE_DTYPES = ("f16", "bf16")
# The dtypes whose configurations get backward kernels (runtime/kernels/backward.cuh): all of them, so the C API
# (runtime/api.cpp) serves mra_backward for every generated configuration.
BACKWARD_DTYPES = ("f32", "f16", "bf16")
TUNING_KEYS = ("threads", "query_rows", "key_tile", "vector_width", "max_registers", "stages")
REGISTERS_PER_SM = 65536
# Files of the output folder that are written by hand: never rendered, removed or compared.
HAND_WRITTEN = frozenset({"CMakeLists.txt"})


class ConfigError(Exception):
    pass


def derived_threads(dtype: str, query_rows: int, threads: int) -> int:
    """The thread count a configuration runs: for f16/bf16 not a tuning value but one warp per 16 query rows."""
    # attend_mma_kernel runs one warp per 16-row slab of the query tile (runtime/kernels/attend.cuh).
    return 32 * -(-query_rows // 16) if dtype in TENSOR_CORE_DTYPES else threads


@dataclasses.dataclass(frozen=True)
class Config:
    resolutions: tuple[int, ...]
    head_dim: int
    dtype: str
    threads: int
    query_rows: int
    key_tile: int
    vector_width: int
    max_registers: int
    stages: int

    @property
    def name(self) -> str:
        sides = "x".join(str(s) for s in self.resolutions)
        return f"mra_fwd_r{sides}_d{self.head_dim}_{self.dtype}"

    @property
    def storage_type(self) -> str:
        return DTYPES[self.dtype][0]

    @property
    def dtype_enum(self) -> str:
        return DTYPES[self.dtype][2]

    @property
    def backward(self) -> bool:
        return self.dtype in BACKWARD_DTYPES

    @property
    def min_ctas_per_sm(self) -> int:
        # __launch_bounds__ takes a CTA count, not a register count: this many CTAs of `threads` threads fit
        # the register file only if each thread stays within max_registers.
        return max(1, REGISTERS_PER_SM // (self.threads * self.max_registers))

    def as_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["resolutions"] = list(self.resolutions)
        d["name"] = self.name
        d["min_ctas_per_sm"] = self.min_ctas_per_sm
        d["backward"] = self.backward
        return d


def check_config(c: Config) -> None:
    r = c.resolutions
    if len(r) < 2 or r[-1] != 1 or any(a <= b or a % b for a, b in zip(r, r[1:])):
        raise ConfigError(f"{c.name}: resolutions must decrease to 1, each dividing the one before")
    if c.dtype not in DTYPES:
        raise ConfigError(f"{c.name}: unknown dtype {c.dtype!r}")
    if c.head_dim % c.vector_width or (DTYPES[c.dtype][1] * c.vector_width) % 4:
        raise ConfigError(f"{c.name}: vector_width {c.vector_width} must divide the head dim in whole words")
    if c.threads % 32 or not 32 <= c.threads <= 1024:
        raise ConfigError(f"{c.name}: threads must be a multiple of 32 in [32, 1024]")
    if r[-2] % c.query_rows:
        raise ConfigError(f"{c.name}: query_rows {c.query_rows} must divide the finest block side {r[-2]}")
    if not 2 <= c.stages <= 8:
        raise ConfigError(f"{c.name}: stages (cp.async ring depth) must be in [2, 8]")
    if c.dtype in TENSOR_CORE_DTYPES:
        if c.key_tile % 16 or c.head_dim % 16:
            raise ConfigError(f"{c.name}: tensor cores take keys and features in steps of 16 (key_tile, head_dim)")
    elif (c.query_rows * c.head_dim) % c.threads or c.key_tile < 1:
        raise ConfigError(f"{c.name}: query_rows x head_dim must be a multiple of threads, key_tile >= 1")


def tuning_for(tuning: dict, name: str, head_dim: int, dtype: str, finest_side: int) -> dict:
    layers = [tuning.get("name", {}).get(name, {}), tuning.get("head_dim", {}).get(str(head_dim), {}),
              tuning.get("dtype", {}).get(dtype, {}), tuning.get("defaults", {})]
    out = {}
    for key in TUNING_KEYS:
        for layer in layers:
            if key in layer:
                out[key] = int(layer[key])
                break
        else:
            raise ConfigError(f"{name}: tuning table has no value for {key}")
    out["query_rows"] = min(out["query_rows"], finest_side)
    out["threads"] = derived_threads(dtype, out["query_rows"], out["threads"])
    return out


def load_configs(manifest_path: pathlib.Path, tuning_path: pathlib.Path) -> list[Config]:
    manifest = tomllib.loads(manifest_path.read_text())
    tuning = tomllib.loads(tuning_path.read_text())
    configs: dict[str, Config] = {}
    for family in manifest.get("family", []):
        for res, dim, dtype in itertools.product(family["resolutions"], family["head_dims"], family["dtypes"]):
            res = tuple(int(s) for s in res)
            probe = Config(res, int(dim), dtype, 0, 0, 0, 0, 0, 0)
            c = Config(res, int(dim), dtype, **tuning_for(tuning, probe.name, int(dim), dtype, res[-2]))
            check_config(c)
            if c.name in configs:
                raise ConfigError(f"{c.name}: listed twice in the manifest")
            configs[c.name] = c
    unknown = sorted(set(tuning.get("name", {})) - set(configs))
    if unknown:
        raise ConfigError(f"tuning.toml names configurations the manifest lacks: {', '.join(unknown)}")
    return [configs[n] for n in sorted(configs)]


@dataclasses.dataclass(frozen=True)
class Variant:
    """A tuning candidate of one configuration: its tuning with the candidate's keys replaced."""
    name: str                  # entry symbol and file name: mra_tune_<configuration>_<k>
    base: Config               # the configuration as tuned now (codegen/tuning.toml)
    config: Config             # the same with the candidate's values
    changes: tuple[tuple[str, int], ...]  # the candidate's keys and values, as autotune.toml gives them

    @property
    def description(self) -> str:
        return ", ".join(f"{k} = {v}" for k, v in self.changes)


def load_variants(autotune_path: pathlib.Path, configs: list[Config], only: set[str] | None = None
                  ) -> tuple[list[Variant], list[str]]:
    """The candidates of autotune.toml as variants of `configs` (those in `only`, when given), each checked by
    check_config; and one note per candidate skipped because it is the tuning the configuration has now or
    repeats an earlier candidate (a winner merged into tuning.toml makes its candidate the current tuning)."""
    data = tomllib.loads(autotune_path.read_text())
    by_name = {c.name: c for c in configs}
    if set(data) - {"sweep"}:
        raise ConfigError(f"{autotune_path.name}: unknown tables {sorted(set(data) - {'sweep'})}: only [[sweep]]")
    variants: dict[str, list[Variant]] = {}
    notes = []
    for i, sweep in enumerate(data.get("sweep", []), 1):
        where = f"{autotune_path.name} [[sweep]] {i}"
        if set(sweep) != {"configurations", "candidates"}:
            raise ConfigError(f"{where}: needs exactly the keys configurations and candidates")
        for name in sweep["configurations"]:
            if name not in by_name:
                raise ConfigError(f"{where}: no configuration {name!r} in the manifest")
        for cand in sweep["candidates"]:
            if not isinstance(cand, dict) or not cand or set(cand) - set(TUNING_KEYS) or any(
                    type(v) is not int or v <= 0 for v in cand.values()):
                raise ConfigError(f"{where}: a candidate must set some of {', '.join(TUNING_KEYS)} to positive "
                                  f"integers, got {cand!r}")
        for name in sweep["configurations"]:
            base = by_name[name]
            if only is not None and name not in only:
                continue
            for cand in sweep["candidates"]:
                if "threads" in cand and base.dtype in TENSOR_CORE_DTYPES:
                    raise ConfigError(f"{where}: {name}: threads is not a tuning value for {base.dtype} (one warp "
                                      f"per 16 query rows); sweep query_rows")
                changes = tuple((k, int(cand[k])) for k in TUNING_KEYS if k in cand)
                c = dataclasses.replace(base, **dict(changes))
                c = dataclasses.replace(c, threads=derived_threads(c.dtype, c.query_rows, c.threads))
                text = ", ".join(f"{k} = {v}" for k, v in changes)
                try:
                    check_config(c)
                except ConfigError as e:
                    raise ConfigError(f"{where}: candidate {{{text}}} of {e}") from None
                known = variants.setdefault(name, [])
                if c == base or any(v.config == c for v in known):
                    notes.append(f"skipped {name} {{{text}}}: "
                                 f"{'the current tuning' if c == base else 'the same as an earlier candidate'}")
                    continue
                known.append(Variant(f"{name.replace('mra_fwd_', 'mra_tune_', 1)}_{len(known) + 1}", base, c,
                                     changes))
    return [v for name in sorted(variants) for v in variants[name]], notes


def render_variants(variants: list[Variant]) -> dict[str, str]:
    env = make_env()
    files = {f"{v.name}.cu": env.get_template("variant.cu.j2").render(v=v, template="variant.cu.j2")
             for v in variants}
    files["autotune.inc"] = env.get_template("autotune.inc.j2").render(variants=variants,
                                                                       template="autotune.inc.j2")
    return files


def make_env():
    """The one Jinja environment: an undefined variable is an error, whitespace is kept as written."""
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "templates"), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)


def render_tree(configs: list[Config]) -> dict[str, str]:
    env = make_env()
    files = {}
    for c in configs:
        files[f"{c.name}.cu"] = env.get_template("kernel.cu.j2").render(c=c, template="kernel.cu.j2")
    files["registry.inc"] = env.get_template("registry.inc.j2").render(configs=configs, template="registry.inc.j2")
    files["manifest.json"] = json.dumps(
        {"generated_by": "codegen/generate.py", "regenerate": "python3 codegen/generate.py",
         "configurations": {c.name: c.as_json() for c in configs}}, indent=2, sort_keys=True) + "\n"
    return files


def write_tree(files: dict[str, str], out: pathlib.Path) -> list[str]:
    """Writes files that changed, removes files no configuration produces; returns what it touched."""
    out.mkdir(parents=True, exist_ok=True)
    touched = []
    for name, text in sorted(files.items()):
        path = out / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            touched.append(f"wrote {name}")
    for path in sorted(out.iterdir()):
        if path.is_file() and path.name not in files and path.name not in HAND_WRITTEN:
            path.unlink()
            touched.append(f"removed {path.name}")
    return touched


def check_tree(files: dict[str, str], out: pathlib.Path) -> list[str]:
    """Renders into a temporary folder and compares it with `out`; returns the differences found."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        write_tree(files, pathlib.Path(tmp))
        fresh = {p.name: p.read_text() for p in pathlib.Path(tmp).iterdir()}
    present = ({p.name: p.read_text() for p in out.iterdir() if p.is_file() and p.name not in HAND_WRITTEN}
               if out.is_dir() else {})
    for name in sorted(set(fresh) | set(present)):
        if name not in present:
            problems.append(f"missing: {name}")
        elif name not in fresh:
            problems.append(f"extra (no configuration produces it): {name}")
        elif present[name] != fresh[name]:
            diff = difflib.unified_diff(present[name].splitlines(True), fresh[name].splitlines(True),
                                        f"{out.name}/{name}", f"rendered/{name}", n=2)
            problems.append(f"stale: {name}\n" + "".join(itertools.islice(diff, 40)))
    return problems


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail when the output folder is not current")
    ap.add_argument("--out", type=pathlib.Path, default=REPO / "generated", help="output folder")
    ap.add_argument("--manifest", type=pathlib.Path, default=ROOT / "manifest.toml")
    ap.add_argument("--tuning", type=pathlib.Path, default=ROOT / "tuning.toml")
    ap.add_argument("--variants", type=pathlib.Path, metavar="DIR",
                    help="render the tuning candidates of --autotune into DIR (a build folder), not the kernels")
    ap.add_argument("--autotune", type=pathlib.Path, default=ROOT / "autotune.toml")
    ap.add_argument("--only", metavar="NAME,...", help="--variants: only for these configurations (those built)")
    args = ap.parse_args(argv)
    import jinja2
    try:
        configs = load_configs(args.manifest, args.tuning)
        if args.variants:
            only = set(args.only.split(",")) if args.only is not None else None
            variants, notes = load_variants(args.autotune, configs, only)
            files = render_variants(variants)
        else:
            files = render_tree(configs)
    except (ConfigError, jinja2.TemplateError, tomllib.TOMLDecodeError, KeyError, TypeError) as e:
        print(f"generate.py: {e}", file=sys.stderr)
        return 2
    if args.variants:
        if args.check:
            print("generate.py: --check compares generated/, not --variants", file=sys.stderr)
            return 2
        for line in notes + write_tree(files, args.variants):
            print(line)
        print(f"generate.py --variants: {len(variants)} candidates in {args.variants}")
        return 0
    if args.check:
        problems = check_tree(files, args.out)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print(f"generate.py --check: {args.out} is not current; run: python3 codegen/generate.py",
                  file=sys.stderr)
            return 1
        print(f"generate.py --check: {args.out} is current ({len(files)} files)")
        return 0
    for line in write_tree(files, args.out):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
