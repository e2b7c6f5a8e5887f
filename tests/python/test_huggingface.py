#!/usr/bin/env python3
"""tests/python/test_huggingface.py: transformers' MraModel patched by mra.huggingface.patch_mra (label python), on
CPU, batch 2 with padding.

    MRA_LIBRARY_DIR=build/runtime:build/reference/c_api PYTHONPATH=tools/python/src \
        python3 tests/python/test_huggingface.py

A tiny random-config MraModel from the installed transformers (no download): patched with the generated kernels
against the same model patched with the reference; with every block refined, each padded sequence of the batch
gives what it gives alone, unpadded (the masks are attached to their own sequences); and the drop-in
mra2_attention against the reference directly. Exits 77 (skipped) when torch or transformers cannot be imported.
"""

import inspect
import pathlib
import sys
import unittest

try:
    import torch
    import transformers
    from transformers.models.mra import modeling_mra
    UPSTREAM_MRA2_ATTENTION = modeling_mra.mra2_attention  # before any patch
except ImportError as e:
    print(f"skipped: torch or transformers cannot be imported ({e})")
    sys.exit(77)

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import mra  # noqa: E402
import mra.huggingface as mh  # noqa: E402
from check import assert_close  # noqa: E402


def tiny_model(seed: int, max_positions: int, block_per_row: int, **extra):
    torch.manual_seed(seed)
    config = transformers.MraConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=48, max_position_embeddings=max_positions,
                                    block_per_row=block_per_row, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0, **extra)
    return transformers.MraModel(config).eval()


def run(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()


class HuggingFaceTest(unittest.TestCase):
    def test_patched_model_matches_the_reference_with_padding(self):
        # 256 positions, 8 x 8 blocks of 32, 2 blocks per row: 16 of 64 blocks refined, a real approximation.
        for seed, mode, extra in ((31, "full", {}), (32, "sparse", dict(initial_prior_first_n_blocks=1,
                                                                           initial_prior_diagonal_n_blocks=3))):
            model = tiny_model(seed, 256, 2, approx_mode=mode, **extra)
            ids = torch.randint(3, 97, (2, 256), generator=torch.Generator().manual_seed(seed))
            mask = torch.ones(2, 256, dtype=torch.long)
            mask[1, 200:] = 0
            mh.patch_mra("kernels")
            kernels = run(model, ids, mask)
            mh.patch_mra("reference")
            reference = run(model, ids, mask)
            self.assertTrue(np.isfinite(kernels).all())
            assert_close(kernels, reference, 1e-4, 1e-4, f"patched MraModel, kernels vs reference, seed {seed}, {mode}")

    def test_each_padded_sequence_gives_what_it_gives_alone(self):
        # 64 positions, 2 x 2 blocks, budget min(2*4, 4) = 4: every block refined, so attention is exact and a
        # sequence's result cannot depend on the other sequences of the batch.
        model = tiny_model(33, 64, 4)
        ids = torch.randint(3, 97, (2, 64), generator=torch.Generator().manual_seed(33))
        mask = torch.ones(2, 64, dtype=torch.long)
        mask[0, 40:] = 0
        mask[1, 57:] = 0
        mh.patch_mra("kernels")
        batch = run(model, ids, mask)
        for b, n in ((0, 40), (1, 57)):
            alone = run(model, ids[b:b + 1, :n], mask[b:b + 1, :n])
            assert_close(batch[b, :n], alone[0], 1e-5, 1e-4, f"sequence {b} padded in a batch vs alone")

    def test_causal_patch_reads_no_later_token(self):
        # patch_mra(causal=True): every layer attends causally (docs/semantics.md §9), so through the whole model
        # (embeddings, layer norms and feed-forward layers are per token) the hidden state of token i does not
        # depend on the tokens after its block of 32 (§9.4: queries are pooled per block, so a state may depend on
        # the later tokens of its own block): changing the last 96 of 256 tokens leaves the first 160 states
        # unchanged bit for bit. Kernels against the reference; and not the encoder's result.
        model = tiny_model(35, 256, 2)
        ids = torch.randint(3, 97, (2, 256), generator=torch.Generator().manual_seed(35))
        changed = ids.clone()
        changed[:, 160:] = torch.randint(3, 97, (2, 96), generator=torch.Generator().manual_seed(36))
        mask = torch.ones(2, 256, dtype=torch.long)
        try:
            mh.patch_mra("kernels", causal=True)
            kernels, later = run(model, ids, mask), run(model, changed, mask)
            mh.patch_mra("reference", causal=True)
            reference = run(model, ids, mask)
        finally:
            mh.patch_mra("kernels")
        np.testing.assert_array_equal(kernels[:, :160], later[:, :160])
        self.assertGreater(np.abs(kernels[:, 160:] - later[:, 160:]).max(), 1e-3)
        assert_close(kernels, reference, 1e-4, 1e-4, "causal patched MraModel, kernels vs reference, seed 35")
        self.assertGreater(np.abs(kernels - run(model, ids, mask)).max(), 1e-3)

    def test_drop_in_has_the_upstream_signature_and_computes_mra(self):
        rng = np.random.default_rng(34)
        q, k, v = (rng.standard_normal((2, 3, 128, 32)).astype(np.float32) for _ in range(3))
        rows = np.ones((6, 128), np.float32)
        rows[3:, 100:] = 0  # batch 1 (rows 3..5, batch-major) is padded
        out = mh.mra2_attention(*(torch.from_numpy(a) for a in (q, k, v)), torch.from_numpy(rows), 6, "full",
                                block_size=32, initial_prior_first_n_blocks=1, initial_prior_diagonal_n_blocks=1)
        self.assertEqual(inspect.signature(mh.mra2_attention), inspect.signature(UPSTREAM_MRA2_ATTENTION))
        mh.patch_mra()
        self.assertIs(modeling_mra.mra2_attention, mh.mra2_attention)
        ref = mra.attend(*(a.reshape(6, 1, 128, 32) for a in (q, k, v)), mask=rows, scales=(32, 1), budget=6,
                         prior_first=1, prior_diagonal=1).reshape(q.shape)
        assert_close(out.numpy(), ref, 2e-5, 1e-4, "mra2_attention vs reference, seed 34")
        self.assertTrue((out[1, :, 100:] == 0).all())


if __name__ == "__main__":
    unittest.main()
