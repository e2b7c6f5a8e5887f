#!/usr/bin/env python3
"""codegen/apply_tuning.py: merges measured tuning winners (the file `mra-gpu-kit autotune` writes) into tuning.toml.

    python3 codegen/apply_tuning.py WINNERS.toml                   # edits codegen/tuning.toml in place
    python3 codegen/apply_tuning.py WINNERS.toml --tuning T --out O  # reads T, writes the merged table to O

WINNERS.toml holds only [name."<configuration>"] tables of tuning keys, each opened by `# autotune ...` comment lines
saying what was measured. For each one the table of that configuration in tuning.toml gets the winner's values: an existing
[name.X] / [name."X"] table has those keys replaced (or added after its last key) and its former `# autotune` lines
replaced by the winner's comment lines; its other keys stay (a register cap set against spills, for instance: the
candidate was measured with them). A configuration without a table gets a new one at the end. Every other byte of
tuning.toml (comments, tables, blank lines) is kept as it was. The result must parse to exactly the old table plus
the winners' values and pass generate.py's checks (load_configs); otherwise nothing is written.
Then regenerate: python3 codegen/generate.py. Exit status: 0 merged (or no winners), 2 with one line on stderr
naming what is wrong (unknown configuration, bad value, unreadable file). Needs Python >= 3.11 (tomllib); not Jinja2.
"""

from __future__ import annotations

import argparse
import copy
import os
import pathlib
import re
import sys
import tempfile
import tomllib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import generate  # noqa: E402

HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
NAME_KEY = re.compile(r"""^name\s*\.\s*(?:"([^"\\]+)"|'([^']+)'|([A-Za-z0-9_-]+))$""")
AUTOTUNE_COMMENT = "# autotune"


class TuningError(Exception):
    pass


def table_name(header_line: str) -> str | None:
    """The configuration of a [name.X] / [name."X"] header line, else None."""
    m = HEADER.match(header_line)
    if not m:
        return None
    n = NAME_KEY.match(m.group(1))
    return next((g for g in n.groups() if g), None) if n else None


def read_winners(text: str, where: str, known: set[str]) -> list[tuple[str, dict[str, int], list[str]]]:
    """(configuration, values, comment lines) per table of a winners file, in file order."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TuningError(f"{where}: not TOML: {e}") from None
    if set(data) - {"name"}:
        raise TuningError(f"{where}: only [name.\"<configuration>\"] tables are allowed, found {sorted(set(data) - {'name'})}")
    tables = data.get("name", {})
    for name, values in tables.items():
        if name not in known:
            raise TuningError(f"{where}: [name.\"{name}\"]: no such configuration in codegen/manifest.toml")
        if not isinstance(values, dict) or not values:
            raise TuningError(f"{where}: [name.\"{name}\"] must be a table of tuning keys")
        for key, value in values.items():
            if key not in generate.TUNING_KEYS:
                raise TuningError(f"{where}: [name.\"{name}\"]: unknown tuning key {key!r} "
                                  f"(known: {', '.join(generate.TUNING_KEYS)})")
            if type(value) is not int or value <= 0:
                raise TuningError(f"{where}: [name.\"{name}\"]: {key} must be a positive integer, got {value!r}")
    # The `# autotune` lines right under each header (what was measured) are carried into tuning.toml.
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        name = table_name(line)
        if name is None:
            continue
        comments = []
        for follow in lines[i + 1:]:
            if not follow.lstrip().startswith(AUTOTUNE_COMMENT):
                break
            comments.append(follow.strip())
        out.append((name, tables[name], comments))
    if sorted(n for n, _, _ in out) != sorted(tables):
        raise TuningError(f"{where}: write each configuration as one [name.\"<configuration>\"] table")
    return out


def merge(tuning_text: str, winners: list[tuple[str, dict[str, int], list[str]]]) -> str:
    """tuning_text with the winners' values and comments, every other line unchanged."""
    lines = tuning_text.splitlines(keepends=True)
    for name, values, comments in winners:
        start = next((i for i, ln in enumerate(lines) if table_name(ln) == name), None)
        if start is None:
            block = [f'[name."{name}"]\n'] + [c + "\n" for c in comments] + [f"{k} = {v}\n" for k, v in values.items()]
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines += ["\n"] + block
            continue
        end = next((i for i in range(start + 1, len(lines)) if HEADER.match(lines[i])), len(lines))
        body = lines[start + 1:end]
        pending = dict(values)
        kept = []
        for ln in body:
            key = ln.split("=", 1)[0].strip() if "=" in ln and not ln.lstrip().startswith("#") else None
            if ln.lstrip().startswith(AUTOTUNE_COMMENT):
                continue  # the former measurement, replaced below
            if key in pending:
                comment = ln.split("#", 1)[1].rstrip("\n") if "#" in ln else None
                ln = f"{key} = {pending.pop(key)}" + (f"  #{comment}" if comment is not None else "") + "\n"
            kept.append(ln)
        last_key = max((i for i, ln in enumerate(kept) if "=" in ln and not ln.lstrip().startswith("#")), default=-1)
        kept[last_key + 1:last_key + 1] = [f"{k} = {v}\n" for k, v in pending.items()]
        lines[start + 1:end] = [c + "\n" for c in comments] + kept
    return "".join(lines)


def apply(winners_path: pathlib.Path, tuning_path: pathlib.Path, manifest_path: pathlib.Path) -> tuple[str, list[str]]:
    """The merged tuning.toml text and one line per configuration whose effective tuning it changes."""
    before = {c.name: c for c in generate.load_configs(manifest_path, tuning_path)}
    winners = read_winners(winners_path.read_text(), str(winners_path), set(before))
    old_text = tuning_path.read_text()
    new_text = merge(old_text, winners)
    # The merged text must mean exactly the old table plus the winners' values: a layout this tool does not edit
    # (a dotted key under [name], an inline table) fails here instead of being half-changed.
    expected = copy.deepcopy(tomllib.loads(old_text))
    for name, values, _ in winners:
        expected.setdefault("name", {}).setdefault(name, {}).update(values)
    try:
        got = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError as e:
        raise TuningError(f"{tuning_path}: the merged table does not parse ({e}): its layout is not one this tool edits")
    if got != expected:
        raise TuningError(f"{tuning_path}: the merged table does not hold the winners' values: edit it by hand")
    with tempfile.TemporaryDirectory() as tmp:
        merged_path = pathlib.Path(tmp) / "tuning.toml"
        merged_path.write_text(new_text)
        try:
            after = {c.name: c for c in generate.load_configs(manifest_path, merged_path)}
        except generate.ConfigError as e:
            raise TuningError(f"{winners_path}: the merged tuning is invalid: {e}") from None
    report = []
    for name, _, _ in winners:
        changed = [f"{k} {getattr(before[name], k)} -> {getattr(after[name], k)}" for k in generate.TUNING_KEYS
                   if getattr(before[name], k) != getattr(after[name], k)]
        report.append(f"{name}: {', '.join(changed) if changed else 'unchanged'}")
    return new_text, report


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("winners", type=pathlib.Path, help="the TOML file mra-gpu-kit autotune wrote")
    ap.add_argument("--tuning", type=pathlib.Path, default=generate.ROOT / "tuning.toml")
    ap.add_argument("--manifest", type=pathlib.Path, default=generate.ROOT / "manifest.toml")
    ap.add_argument("--out", type=pathlib.Path, help="where the merged table goes (default: --tuning, in place)")
    args = ap.parse_args(argv)
    out = args.out or args.tuning
    try:
        text, report = apply(args.winners, args.tuning, args.manifest)
    except (TuningError, generate.ConfigError, OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        print(f"apply_tuning.py: {e}", file=sys.stderr)
        return 2
    # Written next to the target and renamed over it: never a half-written tuning table.
    try:
        fd, part = tempfile.mkstemp(dir=out.resolve().parent, prefix=out.name + ".")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(part, out.stat().st_mode & 0o777 if out.exists() else 0o644)
        os.replace(part, out)
    except OSError as e:
        print(f"apply_tuning.py: cannot write {out}: {e}", file=sys.stderr)
        return 2
    for line in report:
        print(line)
    print(f"apply_tuning.py: {len(report)} configurations merged into {out}"
          + ("; now run: python3 codegen/generate.py" if report else " (no winners: unchanged)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
