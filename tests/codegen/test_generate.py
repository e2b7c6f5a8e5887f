#!/usr/bin/env python3
"""tests/codegen/test_generate.py: the kernel generator's guarantees (label codegen).

    python3 -m unittest tests/codegen/test_generate.py        (or: ctest --test-dir build -L codegen)

Strict rendering, deterministic output, one name per configuration, write-if-changed, removal of stale files,
and a --check that fails on a stale, extra or missing file.
"""

import contextlib
import io
import pathlib
import re
import sys
import tempfile
import unittest

import jinja2

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "codegen"))
import generate  # noqa: E402


def configs():
    return generate.load_configs(generate.ROOT / "manifest.toml", generate.ROOT / "tuning.toml")


def run_main(*args) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return generate.main([str(a) for a in args])


class GeneratorTest(unittest.TestCase):
    def test_checked_in_tree_is_current(self):
        self.assertEqual(run_main("--check"), 0, "generated/ is stale: run python3 codegen/generate.py")

    def test_default_manifest_has_the_51_configurations(self):
        names = [c.name for c in configs()]
        self.assertEqual(len(names), 51)  # 45 + the 6 long-context ones
        self.assertEqual(names, sorted(set(names)))
        for n in names:
            self.assertRegex(n, r"^mra_fwd_r\d+(x\d+)+_d\d+_(f32|f16|bf16)$")
        self.assertIn("mra_fwd_r32x1_d64_bf16", names)
        self.assertIn("mra_fwd_r64x8x1_d128_f16", names)
        self.assertIn("mra_fwd_r256x16x1_d64_bf16", names)

    def test_name_is_file_symbol_and_registry_key(self):
        files = generate.render_tree(configs())
        registry = files["registry.inc"]
        for c in configs():
            text = files[f"{c.name}.cu"]
            self.assertIn(f"MRA_KERNEL_ENTRY({c.name})", text)
            self.assertIn(f"MRA_CONFIG({c.name}, ", registry)
            self.assertIn("DO NOT EDIT", text)
            self.assertIn("python3 codegen/generate.py", text)

    def test_rendering_is_deterministic(self):
        self.assertEqual(generate.render_tree(configs()), generate.render_tree(configs()))

    def test_undefined_variable_is_an_error(self):
        with self.assertRaises(jinja2.UndefinedError):
            generate.make_env().from_string("{{ no_such_value }}").render()

    def test_write_if_changed_and_stale_removal(self):
        files = generate.render_tree(configs())
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp)
            self.assertEqual(len(generate.write_tree(files, out)), len(files))
            stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
            self.assertEqual(generate.write_tree(files, out), [])
            self.assertEqual(stamp, {p.name: p.stat().st_mtime_ns for p in out.iterdir()})
            # The hand-written build file of the output folder is neither removed nor compared.
            (out / "CMakeLists.txt").write_text("# written by hand\n")
            self.assertEqual(run_main("--check", "--out", out), 0)
            # A manifest with one configuration: every other kernel file goes away.
            # (The tuning table without its per-name entries, which name configurations this manifest lacks.)
            manifest = out.parent / (out.name + "-manifest.toml")
            tuning = out.parent / (out.name + "-tuning.toml")
            manifest.write_text('[[family]]\nresolutions = [[32, 1]]\nhead_dims = [64]\ndtypes = ["bf16"]\n')
            tuning.write_text((generate.ROOT / "tuning.toml").read_text().split("\n[name.")[0] + "\n")
            try:
                self.assertEqual(run_main("--out", out, "--manifest", manifest, "--tuning", tuning), 0)
            finally:
                manifest.unlink()
                tuning.unlink()
            kernels = sorted(p.name for p in out.glob("*.cu"))
            self.assertEqual(kernels, ["mra_fwd_r32x1_d64_bf16.cu"])
            self.assertEqual((out / "CMakeLists.txt").read_text(), "# written by hand\n")

    def test_registry_is_the_one_list_the_build_reads(self):
        # generated/CMakeLists.txt takes every line of registry.inc that is not a comment as one
        # MRA_CONFIG(name, ...) entry whose kernel is name.cu; no other list of configurations is rendered.
        files = generate.render_tree(configs())
        entries = [ln for ln in files["registry.inc"].splitlines() if ln and not ln.startswith("//")]
        names = [re.match(r"^MRA_CONFIG\(([a-z0-9_]+), ", ln).group(1) for ln in entries]
        self.assertEqual(names, [c.name for c in configs()])
        self.assertEqual(sorted(n for n in files if not n.endswith(".cu")), ["manifest.json", "registry.inc"])

    def test_check_fails_on_stale_extra_and_missing_files(self):
        files = generate.render_tree(configs())
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp)
            generate.write_tree(files, out)
            self.assertEqual(run_main("--check", "--out", out), 0)
            victim = out / "mra_fwd_r16x1_d32_f32.cu"
            original = victim.read_text()
            victim.write_text(original.replace("Tuning<", "Tuning< "))
            self.assertEqual(run_main("--check", "--out", out), 1)
            victim.unlink()
            self.assertEqual(run_main("--check", "--out", out), 1)
            victim.write_text(original)
            (out / "leftover.cu").write_text("// from a removed configuration\n")
            self.assertEqual(run_main("--check", "--out", out), 1)

    def test_bad_configurations_are_refused(self):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = pathlib.Path(tmp) / "m.toml"
            manifest.write_text('[[family]]\nresolutions = [[32, 3, 1]]\nhead_dims = [64]\ndtypes = ["f32"]\n')
            self.assertEqual(run_main("--out", pathlib.Path(tmp) / "o", "--manifest", manifest), 2)
            tuning = pathlib.Path(tmp) / "t.toml"
            tuning.write_text((generate.ROOT / "tuning.toml").read_text() +
                              "\n[name.mra_fwd_r9x1_d1_f32]\nthreads = 64\n")
            self.assertEqual(run_main("--out", pathlib.Path(tmp) / "o", "--tuning", tuning), 2)


if __name__ == "__main__":
    unittest.main()
