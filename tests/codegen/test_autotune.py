#!/usr/bin/env python3
"""tests/codegen/test_autotune.py: the autotune pieces that need no GPU (label codegen).

    python3 -m unittest tests/codegen/test_autotune.py        (or: ctest --test-dir build -L codegen)

codegen/apply_tuning.py, which merges the winners `mra-gpu-kit autotune` measured into tuning.toml: it replaces an
existing table's values, adds a table, keeps every other byte, refuses an unknown configuration or a bad value with
one line and exit status 2, and its result passes the generator's checks. And `generate.py --variants`: the
candidates of codegen/autotune.toml become checked variants with symbols of their own.
"""

import collections
import contextlib
import io
import pathlib
import sys
import tempfile
import tomllib
import unittest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "codegen"))
import apply_tuning  # noqa: E402
import generate  # noqa: E402

TUNING = generate.ROOT / "tuning.toml"
MANIFEST = generate.ROOT / "manifest.toml"

# A winner for a configuration that has a table (mra_fwd_r32x1_d128_bf16 holds max_registers = 200) and one for a
# configuration without one, as mra-gpu-kit autotune writes them.
WINNERS = """# mra-gpu-kit autotune: measured winners (apply: python3 codegen/apply_tuning.py FILE)
# GPU: Test GPU, N = 8192, heads = 16

[name."mra_fwd_r32x1_d128_bf16"]
# autotune (Test GPU, N = 8192, heads = 16): 1.000 ms against 1.200 ms as tuned (-16.7 %)
stages = 2
key_tile = 64

[name."mra_fwd_r32x1_d64_bf16"]
# autotune (Test GPU, N = 8192, heads = 16): 0.400 ms against 0.450 ms as tuned (-11.1 %)
key_tile = 64
"""


def run(tool, *args):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = tool.main([str(a) for a in args])
    return rc, err.getvalue()


class ApplyTuningTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = pathlib.Path(self.tmp.name)
        self.tuning = self.dir / "tuning.toml"
        self.tuning.write_text(TUNING.read_text())

    def tearDown(self):
        self.tmp.cleanup()

    def merge(self, winners_text):
        winners = self.dir / "winners.toml"
        winners.write_text(winners_text)
        return run(apply_tuning, winners, "--tuning", self.tuning)

    def test_replaces_a_table_adds_one_and_keeps_every_other_line(self):
        original = self.tuning.read_text()
        self.assertEqual(self.merge(WINNERS), (0, ""))
        merged = self.tuning.read_text()
        data = tomllib.loads(merged)
        # (a) the existing table: its values replaced or added, its register cap kept.
        self.assertEqual(data["name"]["mra_fwd_r32x1_d128_bf16"], {"max_registers": 200, "stages": 2, "key_tile": 64})
        # (b) a new table at the end.
        self.assertEqual(data["name"]["mra_fwd_r32x1_d64_bf16"], {"key_tile": 64})
        self.assertTrue(merged.endswith('[name."mra_fwd_r32x1_d64_bf16"]\n# autotune (Test GPU, N = 8192, heads = 16): '
                                        '0.400 ms against 0.450 ms as tuned (-11.1 %)\nkey_tile = 64\n'))
        # (c) every line of the old file is still there, in order, and the only new lines are the winners'.
        old_lines, new_lines = original.splitlines(), merged.splitlines()
        it = iter(new_lines)
        self.assertTrue(all(any(line == n for n in it) for line in old_lines), "an old line went missing or moved")
        added = collections.Counter(new_lines) - collections.Counter(old_lines)
        self.assertEqual(added, collections.Counter([
            "# autotune (Test GPU, N = 8192, heads = 16): 1.000 ms against 1.200 ms as tuned (-16.7 %)", "stages = 2",
            "key_tile = 64", "", '[name."mra_fwd_r32x1_d64_bf16"]',
            "# autotune (Test GPU, N = 8192, heads = 16): 0.400 ms against 0.450 ms as tuned (-11.1 %)",
            "key_tile = 64"]))
        # Everything before the first changed table is byte-identical.
        head = original.split("[name.mra_fwd_r32x1_d128_bf16]")[0]
        self.assertTrue(merged.startswith(head + "[name.mra_fwd_r32x1_d128_bf16]\n# autotune"))
        # (e) the generator accepts the result and gives the configurations the winners' values.
        configs = {c.name: c for c in generate.load_configs(MANIFEST, self.tuning)}
        self.assertEqual((configs["mra_fwd_r32x1_d128_bf16"].stages, configs["mra_fwd_r32x1_d128_bf16"].key_tile,
                          configs["mra_fwd_r32x1_d128_bf16"].max_registers), (2, 64, 200))
        self.assertEqual(configs["mra_fwd_r32x1_d64_bf16"].key_tile, 64)

    def test_a_second_merge_replaces_the_former_measurement(self):
        self.assertEqual(self.merge(WINNERS)[0], 0)
        once = self.tuning.read_text()
        second = WINNERS.replace("stages = 2", "stages = 4").replace("1.000 ms", "0.900 ms")
        self.assertEqual(self.merge(second)[0], 0)
        a, b = once.splitlines(), self.tuning.read_text().splitlines()
        self.assertEqual(len(a), len(b))
        self.assertEqual([(x, y) for x, y in zip(a, b) if x != y],
                         [(x, x.replace("1.000 ms", "0.900 ms")) for x in a if "1.000 ms" in x] + [("stages = 2", "stages = 4")])
        self.assertEqual(sum(x.startswith("# autotune") for x in b), 2)

    def test_no_winners_leaves_the_table_unchanged(self):
        original = self.tuning.read_text()
        self.assertEqual(self.merge("# mra-gpu-kit autotune: no candidate beat the current tuning\n"), (0, ""))
        self.assertEqual(self.tuning.read_text(), original)

    def test_bad_winners_are_refused_with_one_line_and_nothing_written(self):
        original = self.tuning.read_text()
        cases = {
            "unknown configuration": ('[name."mra_fwd_r32x1_d65_bf16"]\nkey_tile = 64\n', "mra_fwd_r32x1_d65_bf16"),
            "unknown key": ('[name."mra_fwd_r32x1_d64_bf16"]\nkeytile = 64\n', "keytile"),
            "not a positive integer": ('[name."mra_fwd_r32x1_d64_bf16"]\nkey_tile = 0\n', "key_tile"),
            "a string": ('[name."mra_fwd_r32x1_d64_bf16"]\nkey_tile = "64"\n', "key_tile"),
            "a rule of the generator (stages in [2, 8])": ('[name."mra_fwd_r32x1_d64_bf16"]\nstages = 9\n', "stages"),
            "tensor cores take keys in steps of 16": ('[name."mra_fwd_r32x1_d64_bf16"]\nkey_tile = 24\n', "key_tile"),
            "another table": ('[defaults]\nthreads = 64\n', "defaults"),
            "not TOML": ('[name."mra_fwd_r32x1_d64_bf16"\n', "not TOML"),
        }
        for what, (text, named) in cases.items():
            with self.subTest(what):
                rc, err = self.merge(text)
                self.assertEqual(rc, 2)
                self.assertEqual(err.count("\n"), 1, err)
                self.assertIn(named, err)
                self.assertEqual(self.tuning.read_text(), original)

    def test_a_layout_it_cannot_edit_is_refused(self):
        # A configuration's values given as a dotted key under [name]: appending a table would define it twice.
        self.tuning.write_text(TUNING.read_text().replace("[name.mra_fwd_r32x1_d128_bf16]\nmax_registers = 200\n", "")
                               + '\n[name]\nmra_fwd_r32x1_d128_bf16.max_registers = 200\n')
        before = self.tuning.read_text()
        rc, err = self.merge(WINNERS)
        self.assertEqual(rc, 2)
        self.assertIn("layout", err)
        self.assertEqual(self.tuning.read_text(), before)

    def test_a_merge_that_changes_anything_else_is_refused(self):
        # The guard behind the line edits: a merge whose result means more than the winners' values writes nothing.
        merge = apply_tuning.merge
        apply_tuning.merge = lambda text, winners: merge(text, winners).replace("max_registers = 200",
                                                                               "max_registers = 199")
        try:
            rc, err = self.merge(WINNERS)
        finally:
            apply_tuning.merge = merge
        self.assertEqual((rc, err.count("\n")), (2, 1))
        self.assertIn("does not hold the winners' values", err)
        self.assertEqual(self.tuning.read_text(), TUNING.read_text())

    def test_a_key_line_keeps_its_comment(self):
        self.tuning.write_text(TUNING.read_text().replace("[name.mra_fwd_r32x1_d128_bf16]\nmax_registers = 200\n",
                                                          "[name.mra_fwd_r32x1_d128_bf16]\nmax_registers = 200\n"
                                                          "stages = 3  # why three\n"))
        self.assertEqual(self.merge(WINNERS)[0], 0)
        self.assertIn("\nstages = 2  # why three\n", self.tuning.read_text())

    def test_out_writes_elsewhere(self):
        out = self.dir / "merged.toml"
        winners = self.dir / "winners.toml"
        winners.write_text(WINNERS)
        self.assertEqual(run(apply_tuning, winners, "--tuning", self.tuning, "--out", out)[0], 0)
        self.assertEqual(self.tuning.read_text(), TUNING.read_text())
        self.assertEqual(tomllib.loads(out.read_text())["name"]["mra_fwd_r32x1_d64_bf16"], {"key_tile": 64})


class VariantsTest(unittest.TestCase):
    def configs(self):
        return generate.load_configs(MANIFEST, TUNING)

    def test_the_checked_in_candidates_are_valid_and_named_apart(self):
        configs = self.configs()
        variants, _ = generate.load_variants(generate.ROOT / "autotune.toml", configs)
        self.assertGreater(len(variants), 0)
        real = {c.name for c in configs}
        for v in variants:
            self.assertRegex(v.name, r"^mra_tune_r\d+(x\d+)+_d\d+_(f32|f16|bf16)_\d+$")
            self.assertNotIn(v.name, real)
            self.assertNotEqual(v.config, v.base)
            # The candidate changes only its keys; f16/bf16 keep one warp per 16 query rows.
            for key in generate.TUNING_KEYS:
                if key not in dict(v.changes) and key != "threads":
                    self.assertEqual(getattr(v.config, key), getattr(v.base, key))
            if v.config.dtype != "f32":
                self.assertEqual(v.config.threads, 32 * -(-v.config.query_rows // 16))
        files = generate.render_variants(variants)
        self.assertEqual(sorted(files), sorted([f"{v.name}.cu" for v in variants] + ["autotune.inc"]))
        for v in variants:
            self.assertIn(f"MRA_TUNE_VARIANT({v.name}, {v.base.name}, \"{v.description}\")", files["autotune.inc"])
            self.assertIn(f"MRA_KERNEL_ENTRY({v.name})", files[f"{v.name}.cu"])
            self.assertIn("DO NOT EDIT", files[f"{v.name}.cu"])

    def write(self, text):
        path = pathlib.Path(self.tmp.name) / "autotune.toml"
        path.write_text(text)
        return path

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_current_tuning_and_repeats_are_skipped_only_restricts(self):
        path = self.write('[[sweep]]\nconfigurations = ["mra_fwd_r32x1_d64_bf16", "mra_fwd_r32x1_d64_f32"]\n'
                          'candidates = [{key_tile = 32}, {stages = 4}, {stages = 4, key_tile = 32}]\n')
        variants, notes = generate.load_variants(path, self.configs())
        self.assertEqual([(v.name, v.description) for v in variants],
                         [("mra_tune_r32x1_d64_bf16_1", "stages = 4"), ("mra_tune_r32x1_d64_f32_1", "stages = 4")])
        self.assertEqual(len(notes), 4)
        only, _ = generate.load_variants(path, self.configs(), {"mra_fwd_r32x1_d64_f32"})
        self.assertEqual([v.name for v in only], ["mra_tune_r32x1_d64_f32_1"])

    def test_bad_candidates_are_refused(self):
        cases = {
            "unknown configuration": ('["mra_fwd_r32x1_d65_bf16"]', "{key_tile = 64}", "mra_fwd_r32x1_d65_bf16"),
            "a rule of the generator": ('["mra_fwd_r32x1_d64_bf16"]', "{key_tile = 24}", "steps of 16"),
            "threads of a tensor-core kernel": ('["mra_fwd_r32x1_d64_bf16"]', "{threads = 64}", "query_rows"),
            "unknown key": ('["mra_fwd_r32x1_d64_f32"]', "{keytile = 64}", "positive integers"),
            "not positive": ('["mra_fwd_r32x1_d64_f32"]', "{key_tile = 0}", "positive integers"),
        }
        for what, (names, cand, said) in cases.items():
            with self.subTest(what):
                path = self.write(f"[[sweep]]\nconfigurations = {names}\ncandidates = [{cand}]\n")
                with self.assertRaises(generate.ConfigError) as e:
                    generate.load_variants(path, self.configs())
                self.assertIn(said, str(e.exception))
                rc, err = run(generate, "--variants", pathlib.Path(self.tmp.name) / "out", "--autotune", path)
                self.assertEqual((rc, err.count("\n")), (2, 1), err)

    def test_variants_go_to_their_folder_and_check_is_unchanged(self):
        out = pathlib.Path(self.tmp.name) / "variants"
        self.assertEqual(run(generate, "--variants", out, "--only", "mra_fwd_r32x1_d64_bf16")[0], 0)
        names = sorted(p.name for p in out.iterdir())
        self.assertIn("autotune.inc", names)
        self.assertTrue(all(n == "autotune.inc" or n.startswith("mra_tune_r32x1_d64_bf16_") for n in names), names)
        self.assertGreater(len(names), 1)
        self.assertEqual(run(generate, "--check")[0], 0)


if __name__ == "__main__":
    unittest.main()
