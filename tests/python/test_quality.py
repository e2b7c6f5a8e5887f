#!/usr/bin/env python3
"""tests/python/test_quality.py: the pieces of the quality benchmark (tools/quality, label python) on tiny frozen
inputs, without the model download.

    MRA_LIBRARY_DIR=build/runtime:build/reference/c_api PYTHONPATH=tools/python/src \
        python3 tests/python/test_quality.py

The numpy encoder against a forward pass written here loop by loop in float64 (per token, per head, math.erf) on a
tiny random BERT stored as safetensors; the tokenizer on a hand-made vocabulary with ids worked out by hand; the
safetensors reader on hand-built float16/bfloat16 bytes; the baselines' masks (exact-entry counts) and their
attention; the relative error against hand-computed values; and MRA through the benchmark's own call path on
real-text activations frozen from the model (tests/python/data/quality-slice.npz), where refining every block must
give exact attention and the errors must fall as the budget grows.
"""

import json
import math
import pathlib
import sys
import tempfile
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tools" / "quality"))
from check import assert_close  # noqa: E402
import encoder  # noqa: E402
import quality  # noqa: E402

SEED = 20261130
CONFIG = {"hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 2, "intermediate_size": 12,
          "max_position_embeddings": 16, "type_vocab_size": 2, "vocab_size": 11, "layer_norm_eps": 1e-12,
          "hidden_act": "gelu"}


def tiny_weights(rng) -> dict:
    h, inner, c = CONFIG["hidden_size"], CONFIG["intermediate_size"], CONFIG
    w = {"embeddings.word_embeddings.weight": rng.standard_normal((c["vocab_size"], h)),
         "embeddings.position_embeddings.weight": rng.standard_normal((c["max_position_embeddings"], h)),
         "embeddings.token_type_embeddings.weight": rng.standard_normal((2, h)),
         "embeddings.LayerNorm.weight": 1 + 0.1 * rng.standard_normal(h),
         "embeddings.LayerNorm.bias": 0.1 * rng.standard_normal(h)}
    for layer in range(c["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        for name, shape in (("attention.self.query", (h, h)), ("attention.self.key", (h, h)),
                            ("attention.self.value", (h, h)), ("attention.output.dense", (h, h)),
                            ("intermediate.dense", (inner, h)), ("output.dense", (h, inner))):
            w[p + name + ".weight"] = rng.standard_normal(shape) / math.sqrt(shape[1])
            w[p + name + ".bias"] = 0.1 * rng.standard_normal(shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"] = 1 + 0.1 * rng.standard_normal(h)
            w[p + name + ".bias"] = 0.1 * rng.standard_normal(h)
    # Stored as float32, as a checkpoint; the loop forward below reads the same rounded values.
    return {k: v.astype(np.float32) for k, v in w.items()}


def loop_forward(w: dict, ids: list):
    """BERT's forward pass written out element by element in float64, with a "bert." prefix on the names."""
    w = {k[len("bert."):]: v.astype(np.float64) for k, v in w.items()}
    h, heads = CONFIG["hidden_size"], CONFIG["num_attention_heads"]
    dh, eps = h // heads, CONFIG["layer_norm_eps"]

    def norm(row, name):
        mean = sum(row) / h
        var = sum((x - mean) ** 2 for x in row) / h
        return [(row[i] - mean) / math.sqrt(var + eps) * w[name + ".weight"][i] + w[name + ".bias"][i]
                for i in range(h)]

    def linear(row, name):
        weight, bias = w[name + ".weight"], w[name + ".bias"]
        return [sum(weight[o][i] * row[i] for i in range(len(row))) + bias[o] for o in range(len(bias))]

    xs = [norm([w["embeddings.word_embeddings.weight"][t][i] + w["embeddings.position_embeddings.weight"][pos][i]
                + w["embeddings.token_type_embeddings.weight"][0][i] for i in range(h)], "embeddings.LayerNorm")
          for pos, t in enumerate(ids)]
    captured = []
    for layer in range(CONFIG["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        q, k, v = ([linear(x, p + "attention.self." + part) for x in xs] for part in ("query", "key", "value"))
        captured.append(tuple(np.array([[[row[hd * dh + d] for d in range(dh)] for row in m] for hd in range(heads)])
                              for m in (q, k, v)))
        context = [[0.0] * h for _ in xs]
        for hd in range(heads):
            cols = range(hd * dh, (hd + 1) * dh)
            for i in range(len(xs)):
                logits = [sum(q[i][c] * k[j][c] for c in cols) / math.sqrt(dh) for j in range(len(xs))]
                top = max(logits)
                e = [math.exp(s - top) for s in logits]
                for c in cols:
                    context[i][c] = sum(e[j] * v[j][c] for j in range(len(xs))) / sum(e)
        xs = [norm([a + b for a, b in zip(x, linear(ctx, p + "attention.output.dense"))], p + "attention.output.LayerNorm")
              for x, ctx in zip(xs, context)]
        inner = [[0.5 * u * (1 + math.erf(u / math.sqrt(2))) for u in linear(x, p + "intermediate.dense")] for x in xs]
        xs = [norm([a + b for a, b in zip(x, linear(m, p + "output.dense"))], p + "output.LayerNorm")
              for x, m in zip(xs, inner)]
    return np.array(xs), captured


class EncoderTest(unittest.TestCase):
    def test_forward_matches_loop_forward(self):
        rng = np.random.default_rng(SEED)
        weights = {"bert." + k: v for k, v in tiny_weights(rng).items()}
        ids = [2, 5, 9, 1, 7, 7, 3]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = pathlib.Path(tmp)
            encoder.write_safetensors(tmp / "model.safetensors", weights)
            (tmp / "config.json").write_text(json.dumps(CONFIG))
            model = encoder.Encoder.load(tmp)
        hidden, qkv = model.forward(ids)
        want_hidden, want_qkv = loop_forward(weights, ids)
        for layer, (got, want) in enumerate(zip(qkv, want_qkv)):
            for name, g, e in zip("qkv", got, want):
                assert_close(g, e, 1e-5, 1e-5, f"seed {SEED}: layer {layer} {name}")
        assert_close(hidden, want_hidden, 1e-5, 1e-4, f"seed {SEED}: last hidden state")
        with self.assertRaisesRegex(ValueError, "longer than the model's 16 positions"):
            model.forward([1] * 17)

    def test_gelu_is_the_erf_form(self):
        x = np.linspace(-6, 6, 241, dtype=np.float32)
        want = [0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in x.astype(np.float64)]
        # The erf approximation is good to 1.5e-7, so GELU to |x|/2 * 1.5e-7 <= 4.5e-7 here; a tanh-form GELU is
        # off by up to 5e-4.
        assert_close(encoder.gelu(x), want, 5e-7, 1e-6, "gelu")


class TokenizerTest(unittest.TestCase):
    VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "run", "##ning", ",", "hello", "!",
             "a", "##b", "大"]

    def test_hand_worked_ids(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "vocab.txt"
            path.write_text("\n".join(self.VOCAB) + "\n", encoding="utf-8")
            tok = encoder.Tokenizer(path)
        text = "Unaffable RUNNING,\théllo!!\x00 xyz ab大a unaffx"
        self.assertEqual(tok.words(text), ["unaffable", "running", ",", "hello", "!", "!", "xyz", "ab", "大", "a",
                                           "unaffx"])
        # un ##aff ##able | run ##ning | , | hello | ! | ! | xyz: no piece -> [UNK] | a ##b | 大 | a |
        # unaffx: 'x' matches no continuation piece -> the whole word is [UNK]
        self.assertEqual(tok.encode(text), [4, 5, 6, 7, 8, 9, 10, 11, 11, 1, 12, 13, 14, 12, 1])
        self.assertEqual((tok.cls, tok.sep, tok.unk), (2, 3, 1))


class SafetensorsTest(unittest.TestCase):
    def test_half_types_from_hand_built_bytes(self):
        header = json.dumps({"__metadata__": {"format": "pt"},
                             "h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
                             "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [4, 8]}}).encode()
        # float16 1.0 = 0x3C00, -2.0 = 0xC000; bfloat16 1.0 = 0x3F80, -0.5 = 0xBF00 (little-endian)
        data = bytes([0x00, 0x3C, 0x00, 0xC0, 0x80, 0x3F, 0x00, 0xBF])
        with tempfile.TemporaryDirectory() as tmp:
            path = pathlib.Path(tmp) / "t.safetensors"
            path.write_bytes(len(header).to_bytes(8, "little") + header + data)
            t = encoder.read_safetensors(path)
        self.assertEqual(t["h"].tolist(), [1.0, -2.0])
        self.assertEqual(t["b"].tolist(), [[1.0, -0.5]])
        self.assertEqual(set(t), {"h", "b"})


class BaselineTest(unittest.TestCase):
    def test_masks_have_the_exact_entries_of_the_mra_rows(self):
        for n, width in ((512, 32), (512, 256), (64, 8), (64, 64)):
            m = quality.window_mask(n, width)
            self.assertTrue((m.sum(axis=1) == width).all(), (n, width))
            self.assertTrue(m[np.arange(n), np.arange(n)].all(), "every query sees itself")
        rng = np.random.default_rng(SEED)
        m = quality.random_block_mask(rng, 512, 32, 3)
        self.assertEqual(int(m.sum()), 3 * 512 * 32)
        self.assertTrue((m.sum(axis=1) == 3 * 32).all())
        blocks = m.reshape(16, 32, 16, 32)
        self.assertTrue((blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all(), "whole 32x32 blocks")

    def test_masked_attention_and_relative_error(self):
        rng = np.random.default_rng(SEED)
        logits, v = rng.standard_normal((1, 6, 6)), rng.standard_normal((1, 6, 3))
        full = quality.masked_attention(logits, np.ones((6, 6), bool), v)
        p = np.exp(logits[0]) / np.exp(logits[0]).sum(axis=1, keepdims=True)
        assert_close(full[0], p @ v[0], 1e-12, 1e-12, f"seed {SEED}: unmasked = softmax")
        one = quality.masked_attention(logits, np.eye(6, dtype=bool), v)
        assert_close(one, v, 1e-12, 1e-12, "only the diagonal allowed: each query returns its own value")
        exact = np.array([[[3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
        approx = np.array([[[3.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
        # head 0: ||(0,0,0,-3)|| / ||(3,0,0,4)|| = 3/5; head 1: identical
        assert_close(quality.relative_errors(approx, exact), [0.6, 0.0], 1e-15, 0, "relative errors")


class MraOnRealActivationsTest(unittest.TestCase):
    """MRA through the benchmark's options (quality.mra_options) on the frozen slice of real activations."""

    @classmethod
    def setUpClass(cls):
        import mra
        cls.mra = mra
        data = np.load(HERE / "data" / "quality-slice.npz")
        cls.q, cls.k, cls.v = (data[name].astype(np.float32) for name in "qkv")
        cls.exact = mra.exact(cls.q, cls.k, cls.v)

    def errors(self, config, per_row):
        out = self.mra.attend(self.q, self.k, self.v, **quality.mra_options(config, per_row, 1, 1))
        return quality.relative_errors(out, self.exact)

    def test_every_block_refined_is_exact(self):
        # 64 blocks per row fills every budget of every resolution set at N = 512 (docs/semantics.md §2.8).
        for config in (quality.Mra(s, mode, priors, policy) for s in quality.SCALE_SETS
                       for mode in ("full", "sparse") for priors in (False, True) for policy in ("global", "row")):
            assert_close(self.errors(config, 64), [0, 0], 1e-5, 0, config.label() + " " + str(config.scales))

    def test_policies_differ(self):
        # Same exact entries, chosen per slice or per block row: different selections, different outputs.
        for mode in ("full", "sparse"):
            by_slice, by_row = (self.mra.attend(self.q, self.k, self.v,
                                                **quality.mra_options(quality.Mra((32, 1), mode, False, p), 2, 1, 1))
                                for p in ("global", "row"))
            self.assertGreater(quality.relative_errors(by_slice, by_row).max(), 1e-2, mode)

    def test_error_falls_with_the_budget(self):
        for mode in ("full", "sparse"):
            config = quality.Mra((32, 1), mode, False, "global")
            errors = [float(self.errors(config, p).mean()) for p in (1, 4, 16)]
            self.assertGreater(errors[0], errors[1], f"{config.label()}: {errors}")
            self.assertGreater(errors[1], errors[2], f"{config.label()}: {errors}")
            self.assertLess(errors[0], 1.5, f"{config.label()}: {errors}")

    def test_priors_reach_the_selection(self):
        # At one block per row the priors (first block row and column, diagonal) take the whole budget, so other
        # blocks are refined: the outputs move, in both modes.
        for mode in ("full", "sparse"):
            plain, priors = (self.mra.attend(self.q, self.k, self.v,
                                             **quality.mra_options(quality.Mra((32, 1), mode, p, "global"), 1, 1, 1))
                             for p in (False, True))
            self.assertGreater(quality.relative_errors(priors, plain).max(), 1e-2, mode)

    def test_exact_entries_of_the_tables(self):
        # 2 levels: p blocks of 32x32 per block row; (128, 32, 1) the same; (32, 8, 1): p blocks of 8x8 per row.
        # The row policy spends the same: p blocks in every block row.
        for scales, per_query in (((32, 1), 32), ((128, 32, 1), 32), ((32, 8, 1), 8)):
            for p in (1, 2, 4, 8):
                for policy in ("global", "row"):
                    config = quality.Mra(scales, "full", False, policy)
                    self.assertEqual(quality.exact_entries(self.mra, config, 512, p), per_query * p * 512,
                                     (scales, policy))


if __name__ == "__main__":
    unittest.main()
