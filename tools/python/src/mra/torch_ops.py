"""mra.torch_ops: MRA attention as a PyTorch operator, torch.ops.mra.attend, registered with torch.library.

    import mra.torch_ops
    out = mra.torch_ops.attend(q, k, v, scales=(32, 1), blocks_per_row=4)    # q [B, H, N, D] tensors

CPU tensors run the generated kernels on the host (the emulated backend, libmra.so's mra_forward_host), CUDA
tensors the CUDA kernels on the current stream (mra_forward, when libmra.so was built with nvcc). float32,
float16 and bfloat16 are computed in their own dtype (sums in f32), shapes [B, H, N, D]. A fake-tensor
implementation lets torch.compile trace the operator. There is no backward pass yet: differentiating through
it raises an error saying so.
"""

from __future__ import annotations

import ctypes
from typing import List, Optional, Sequence, Union

import torch

from . import _native
from .api import Config, MraError, resolve_config, runtime_problem, workspace_size

_DTYPES = {torch.float32: _native.DTYPE_F32, torch.float16: _native.DTYPE_F16, torch.bfloat16: _native.DTYPE_BF16}


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_mask: Optional[torch.Tensor],
           key_mask: Optional[torch.Tensor]) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise MraError(f"mra::attend: q, k and v must be [B, H, N, D], got {tuple(q.shape)}, {tuple(k.shape)}, "
                       f"{tuple(v.shape)}")
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise MraError(f"mra::attend: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise MraError(f"mra::attend: dtypes {q.dtype}, {k.dtype}, {v.dtype}: all three must be one of float32, "
                       f"float16, bfloat16")
    devices = {t.device for t in (q, k, v, query_mask, key_mask) if t is not None}
    if len(devices) != 1:
        raise MraError(f"mra::attend: tensors on several devices: {sorted(map(str, devices))}")
    for name, m, n in (("query_mask", query_mask, q.shape[2]), ("key_mask", key_mask, k.shape[2])):
        if m is not None and (m.dtype != torch.uint8 or tuple(m.shape) != (q.shape[0], n)):
            raise MraError(f"mra::attend: {name} must be uint8 [{q.shape[0]}, {n}], got {m.dtype} {tuple(m.shape)}")


def _aligned_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t, contiguous, with its data 16-byte aligned (as the C API requires): a copy only when needed."""
    t = t.contiguous()
    if t.data_ptr() % 16 == 0:
        return t
    out = torch.empty_like(t, memory_format=torch.contiguous_format)
    out.copy_(t)
    if out.data_ptr() % 16:
        raise MraError("mra::attend: could not get 16-byte aligned memory for an input")
    return out


@torch.library.custom_op("mra::attend", mutates_args=())
def _attend_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_mask: Optional[torch.Tensor],
               key_mask: Optional[torch.Tensor], scales: List[int], budgets: List[int], sparse: bool,
               prior_first: int, prior_diagonal: int, scale: float) -> torch.Tensor:
    _check(q, k, v, query_mask, key_mask)
    config = Config(tuple(scales), tuple(budgets), sparse, prior_first, prior_diagonal)
    b, h, nq, d = q.shape
    p = runtime_problem(b, h, nq, k.shape[2], d, _DTYPES[q.dtype], config, scale)
    cuda = q.device.type == "cuda"
    if cuda and not _native.HAVE_CUDA:
        raise MraError("mra::attend: CUDA tensors, but libmra.so was built without the CUDA backend (no nvcc)")
    if q.device.type not in ("cpu", "cuda"):
        raise MraError(f"mra::attend: tensors on {q.device}, only cpu and cuda are supported")
    size = workspace_size(p, "cuda" if cuda else "emulated")
    q, k, v = (_aligned_contiguous(t) for t in (q, k, v))
    masks = [None if m is None else _aligned_contiguous(m) for m in (query_mask, key_mask)]
    out = torch.empty_like(q)
    workspace = torch.empty(max(size, 16), dtype=torch.uint8, device=q.device)
    ptr = [None if t is None else t.data_ptr() for t in (q, k, v, *masks, out, workspace)]
    if cuda:
        stream = ctypes.c_void_p(torch.cuda.current_stream(q.device).cuda_stream)
        status = _native.runtime.mra_forward(ctypes.byref(p), *ptr, size, stream)
    else:
        status = _native.runtime.mra_forward_host(ctypes.byref(p), *ptr, size)
    _native.check_runtime(status, f"mra::attend on {q.device.type} (scales {list(scales)}, D {d}, {q.dtype})")
    return out


@_attend_op.register_fake
def _attend_fake(q, k, v, query_mask, key_mask, scales, budgets, sparse, prior_first, prior_diagonal, scale):
    _check(q, k, v, query_mask, key_mask)
    return torch.empty_like(q)


def _no_backward(ctx, grad):
    raise RuntimeError("mra::attend has no backward pass yet: MRA attention can be used for inference only "
                       "(run it under torch.no_grad(), or detach its inputs)")


def _setup_context(ctx, inputs, output):
    pass


_attend_op.register_autograd(_no_backward, setup_context=_setup_context)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scales: Sequence[int] = (32, 1),
           budget: Union[int, Sequence[int], None] = None, blocks_per_row: Optional[int] = None, mode: str = "full",
           prior_first: int = 0, prior_diagonal: int = 0, scale: Optional[float] = None,
           mask: Optional[torch.Tensor] = None, query_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """torch.ops.mra.attend with the options of mra.attend (budgets resolved here, masks [B, N] of 0/1 or bool;
    `mask` masks the keys, and the queries too when Nq == Nk and no query_mask is given)."""
    if q.dim() != 4 or k.dim() != 4:
        raise MraError(f"mra.torch_ops.attend: q and k must be [B, H, N, D], got {tuple(q.shape)}, {tuple(k.shape)}")
    config = resolve_config(q.shape[2], k.shape[2], scales, budget, blocks_per_row, mode, prior_first, prior_diagonal)
    key_mask = None if mask is None else _mask("mask", mask, q.shape[0], k.shape[2], q.device)
    qmask = None if query_mask is None else _mask("query_mask", query_mask, q.shape[0], q.shape[2], q.device)
    if qmask is None and key_mask is not None and q.shape[2] == k.shape[2]:
        qmask = key_mask
    s = 0.0 if scale is None else float(scale)
    if scale is not None and not (s > 0.0 and s != float("inf")):
        raise MraError(f"scale: {scale!r} must be a positive finite number")
    return torch.ops.mra.attend(q, k, v, qmask, key_mask, list(config.scales), list(config.budgets), config.sparse,
                                config.prior_first, config.prior_diagonal, s)


def _mask(name: str, m: torch.Tensor, batch: int, n: int, device) -> torch.Tensor:
    if tuple(m.shape) != (batch, n):
        raise MraError(f"{name}: shape {tuple(m.shape)} is not [{batch}, {n}]")
    if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
        raise MraError(f"{name}: values must be 0 or 1")
    return m.to(device=device, dtype=torch.uint8).contiguous()
