"""mra.huggingface: MRA attention for Hugging Face transformers' MraModel (model_type "mra"), on CPU and GPU.

    import mra.huggingface
    mra.huggingface.patch_mra()          # every MraModel now attends through this project's kernels
    model = transformers.MraModel.from_pretrained(...)   # or MraModel(config)

transformers' own mra2_attention fetches CUDA kernels from a model hub at run time and returns zeros without
them (always on CPU); its MraSelfAttention attaches the padding masks of a batch to the wrong sequences
(the [B, S] mask is tiled head-major while the rows are batch-major). patch_mra() replaces both:
`MraSelfAttention.forward` builds one mask row per (batch, head) in the right order and calls `mra2_attention`
below, which has transformers' signature and runs torch.ops.mra.attend (the generated kernels: on the host for
CPU tensors, on the GPU for CUDA tensors). Configurations without a generated kernel (a head dim other than 32,
64 or 128 after padding, a block size other than 16, 32 or 64) fall back to the reference on CPU.
The result is returned in the model's dtype. There is no backward pass: inference only.
patch_mra(causal=True) makes every layer attend causally (docs/semantics.md §9: query i sees keys j <= i, and no
output reads a later token): the model then works as a decoder. Causal attention needs the row policy (§9.4), so the
layer's budget of num_block blocks per (batch, head) becomes num_block / ceil(S / 32) blocks per block row (at
least 1; block_per_row at S = max_position_embeddings), besides the blocks the diagonal crosses, which are refined.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import api, torch_ops
from .api import MraError

_GENERATED_DIMS = (32, 64, 128)
_GENERATED_BLOCKS = (16, 32, 64)


def _attend(query, key, value, rows_mask: Optional[torch.Tensor], num_blocks: int, approx_mode: str,
            block_size: int, prior_first: int, prior_diagonal: int, scale: float, backend: str,
            causal: bool = False) -> torch.Tensor:
    """MRA attention of [B, H, S, D] tensors whose mask has one row per (batch, head): each (batch, head) is a
    slice of its own (batch B*H, one head), the mask masking its queries and keys. causal: §9, with the budget
    spread over the block rows (policy row)."""
    if approx_mode not in ("full", "sparse"):
        raise MraError(f"approx_mode: {approx_mode!r} is not 'full' or 'sparse'")
    b, h, s, d = query.shape
    flat = [t.reshape(b * h, 1, s, d) for t in (query, key, value)]
    mask = None if rows_mask is None else (rows_mask.reshape(b * h, s) > 0.5)
    budget = max(1, num_blocks // -(-s // block_size)) if causal else num_blocks
    options = dict(scales=(block_size, 1), budget=[budget], mode=approx_mode, prior_first=prior_first,
                   prior_diagonal=prior_diagonal, scale=scale, causal=causal)
    generated = block_size in _GENERATED_BLOCKS and d <= max(_GENERATED_DIMS)
    if backend == "reference" or (query.device.type == "cpu" and not generated):
        out = api.attend(*(t.detach().float().cpu().numpy() for t in flat),
                         mask=None if mask is None else mask.cpu().numpy(), backend="reference", **options)
        return torch.from_numpy(out).to(query.device).reshape(b, h, s, d)
    # The generated head dims are 32, 64 and 128: zero features add nothing to the logits, and the scale is
    # passed explicitly, so padding D up changes nothing but the kernel that runs.
    padded = next((p for p in _GENERATED_DIMS if p >= d), d)
    if padded != d:
        flat = [torch.nn.functional.pad(t, (0, padded - d)) for t in flat]
    out = torch_ops.attend(*(t.float() for t in flat), mask=mask, **options)
    return out[..., :d].reshape(b, h, s, d)


def mra2_attention(query, key, value, mask, num_blocks, approx_mode, block_size=32, initial_prior_first_n_blocks=0,
                   initial_prior_diagonal_n_blocks=0):
    """transformers' mra2_attention, computed by this project: query, key, value [B, H, S, D]; mask [B*H, S] with
    one row per (batch, head), batch-major (> 0.5 = real token), or None; num_blocks blocks refined per (batch,
    head); approx_mode "full" or "sparse"; priors as in MraConfig. Returns float32 [B, H, S, D], 0 at masked
    queries. Unlike upstream, S need not be a multiple of block_size, and it never returns zeros silently. Never
    causal (upstream's signature has no such argument): patch_mra(causal=True) makes the patched layers causal."""
    return _attend(query, key, value, mask, int(num_blocks), approx_mode, int(block_size),
                   int(initial_prior_first_n_blocks), int(initial_prior_diagonal_n_blocks),
                   1.0 / math.sqrt(query.shape[-1]), "kernels")


def _token_mask(attention_mask: Optional[torch.Tensor], batch: int, seq_len: int) -> Optional[torch.Tensor]:
    """[B, S] bool (True = real token) from what MraModel passes its layers: a [B, S] 0/1 mask, or an additive
    [B, 1, Q, S] float mask (0 = real)."""
    if attention_mask is None:
        return None
    if attention_mask.ndim == 4:
        return attention_mask[:, 0, -1, :] == 0
    return attention_mask.reshape(batch, seq_len) > 0.5


def _self_attention_forward(self, hidden_states, attention_mask=None):
    """MraSelfAttention.forward with the masks attached to their own sequences and no silent zeros."""
    batch, seq_len, _ = hidden_states.shape

    def heads(layer):
        return layer(hidden_states).view(batch, seq_len, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    query, key, value = heads(self.query), heads(self.key), heads(self.value)
    tokens = _token_mask(attention_mask, batch, seq_len)
    rows = None if tokens is None else tokens[:, None, :].expand(batch, self.num_attention_heads, seq_len)
    context = _attend(query, key, value, rows, self.num_block, self.approx_mode, 32, self.initial_prior_first_n_blocks,
                      self.initial_prior_diagonal_n_blocks, 1.0 / math.sqrt(self.attention_head_size),
                      getattr(self, "mra_backend", "kernels"), getattr(self, "mra_causal", False))
    context = context.to(hidden_states.dtype).permute(0, 2, 1, 3).reshape(batch, seq_len, self.all_head_size)
    return (context,)


def patch_mra(backend: str = "kernels", causal: bool = False) -> None:
    """Makes every transformers MraModel (present and future) attend through this project: replaces
    modeling_mra.mra2_attention and MraSelfAttention.forward. backend "kernels" (default: the generated kernels,
    host or GPU) or "reference" (the reference on CPU, float32, for checking); causal: every layer attends
    causally (module docstring)."""
    if backend not in ("kernels", "reference"):
        raise MraError(f"backend: {backend!r} is not 'kernels' or 'reference'")
    from transformers.models.mra import modeling_mra

    modeling_mra.mra2_attention = mra2_attention
    modeling_mra.MraSelfAttention.forward = _self_attention_forward
    modeling_mra.MraSelfAttention.mra_backend = backend
    modeling_mra.MraSelfAttention.mra_causal = bool(causal)
