"""mra.torch_ops: MRA attention as PyTorch operators registered with torch.library, with a backward pass.

    import mra.torch_ops
    out = mra.torch_ops.attend(q, k, v, scales=(32, 1), blocks_per_row=4)    # q [B, H, N, D] tensors
    out.sum().backward()                                                      # q.grad, k.grad, v.grad

CPU tensors run the generated kernels on the host (the emulated backend, libmra.so's mra_forward_host), CUDA
tensors the CUDA kernels on the current stream (mra_forward, when libmra.so was built with nvcc). float32,
float16 and bfloat16 are computed in their own dtype (sums in f32), shapes [B, H, N, D]; k and v may have fewer
heads than q (grouped K/V heads, a count dividing q's: docs/semantics.md §8). Options as mra.attend's, causal
attention (§9) and the selection shared by a group of heads (§8.4) included. Tensors are read through their
strides (a [B, N, H, D] tensor seen as [B, H, N, D], e.g. x.transpose(1, 2), is not copied) when the C API
admits them (unit D stride, the others multiples of 16 bytes, 16-byte aligned data), and copied to contiguous
memory otherwise; the output and the gradients take their input's layout. Fake-tensor implementations let
torch.compile trace the operators.

The operators take the options after `scale` as row (policy row), causal and group (selection shared by the
group), each False by default. Three operators: torch.ops.mra.attend (inference: saves nothing, so differentiating through it raises an error),
torch.ops.mra.attend_train (returns the output and the forward's workspace, the state the backward reads; it is
differentiable) and torch.ops.mra.attend_backward (mra_backward / mra_backward_host: the gradients of
docs/semantics.md §7, the selection held fixed; in the inputs' dtype, float16 and bfloat16 on the tensor-core
backward of docs/kernels.md). attend() below picks attend_train when a
gradient is wanted.
"""

from __future__ import annotations

import ctypes
from typing import List, Optional, Sequence, Tuple, Union

import torch

from . import _native
from .api import (Config, MraError, backward_workspace_size, resolve_config, runtime_problem,
                  workspace_size)

_DTYPES = {torch.float32: _native.DTYPE_F32, torch.float16: _native.DTYPE_F16, torch.bfloat16: _native.DTYPE_BF16}


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_mask: Optional[torch.Tensor],
           key_mask: Optional[torch.Tensor]) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise MraError(f"mra::attend: q, k and v must be [B, H, N, D], got {tuple(q.shape)}, {tuple(k.shape)}, "
                       f"{tuple(v.shape)}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[1] < 1 or q.shape[1] % k.shape[1] != 0 \
            or k.shape[3] != q.shape[3]:
        raise MraError(f"mra::attend: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match "
                       f"(k and v [B, H_kv, Nk, D] with H_kv dividing q's H)")
    if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise MraError(f"mra::attend: dtypes {q.dtype}, {k.dtype}, {v.dtype}: all three must be one of float32, "
                       f"float16, bfloat16")
    devices = {t.device for t in (q, k, v, query_mask, key_mask) if t is not None}
    if len(devices) != 1:
        raise MraError(f"mra::attend: tensors on several devices: {sorted(map(str, devices))}")
    for name, m, n in (("query_mask", query_mask, q.shape[2]), ("key_mask", key_mask, k.shape[2])):
        if m is not None and (m.dtype != torch.uint8 or tuple(m.shape) != (q.shape[0], n)):
            raise MraError(f"mra::attend: {name} must be uint8 [{q.shape[0]}, {n}], got {m.dtype} {tuple(m.shape)}")


def _strides_admitted(t: torch.Tensor) -> bool:
    """Whether the C API reads t through its own strides (docs/semantics.md §8, rules 1, 2 and 5): unit D stride,
    the others non-negative multiples of 16 bytes, data 16-byte aligned."""
    step = 16 // t.element_size()
    return t.data_ptr() % 16 == 0 and t.stride(3) == 1 and all(s >= 0 and s % step == 0 for s in t.stride()[:3])


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements are distinct and fill its storage span (torch.empty_like then keeps its strides)."""
    return torch.empty_like(t).stride() == t.stride()


def _readable(t: torch.Tensor) -> torch.Tensor:
    """An input as the kernels read it: t itself when the C API admits its strides, else a contiguous copy."""
    return t if _strides_admitted(t) else _aligned_contiguous(t)


def _writable_layout(t: torch.Tensor) -> torch.Tensor:
    """An input whose gradient is written with its strides (runtime/mra.h: dq, dk, dv take q's, k's, v's): t when
    those strides are admitted and its elements distinct, else a contiguous copy."""
    return t if _strides_admitted(t) and _dense(t) else _aligned_contiguous(t)


def _set_strides(p, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
    """The element strides of the four tensors into mra_problem.strides (q, k, v, out, each [B, H, N, D])."""
    for t, first in ((q, 0), (k, 4), (v, 8), (out, 12)):
        for d in range(4):
            p.strides[first + d] = 1 if d == 3 else t.stride(d)


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


def _problem(q: torch.Tensor, k: torch.Tensor, scales, budgets, sparse, prior_first, prior_diagonal, scale, row,
             causal, group):
    """The C API's mra_problem of a call, and whether it runs on CUDA."""
    config = Config(tuple(scales), tuple(budgets), sparse, prior_first, prior_diagonal, "row" if row else "global",
                    "group" if group else "head")
    b, h, nq, d = q.shape
    p = runtime_problem(b, h, nq, k.shape[2], d, _DTYPES[q.dtype], config, scale, causal, k.shape[1])
    cuda = q.device.type == "cuda"
    if cuda and not _native.HAVE_CUDA:
        raise MraError("mra::attend: CUDA tensors, but libmra.so was built without the CUDA backend (no nvcc)")
    if q.device.type not in ("cpu", "cuda"):
        raise MraError(f"mra::attend: tensors on {q.device}, only cpu and cuda are supported")
    return p, cuda


def _stream(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def _forward(q, k, v, query_mask, key_mask, scales, budgets, sparse, prior_first, prior_diagonal, scale, row, causal,
             group):
    """Runs the forward; returns the output and the workspace it filled (the backward's saved state)."""
    _check(q, k, v, query_mask, key_mask)
    p, cuda = _problem(q, k, scales, budgets, sparse, prior_first, prior_diagonal, scale, row, causal, group)
    size = workspace_size(p, "cuda" if cuda else "emulated")
    out = _output_like(q)  # before q is copied, so that it is what the fake implementation gives
    q, k, v = (_readable(t) for t in (q, k, v))
    masks = [None if m is None else _aligned_contiguous(m) for m in (query_mask, key_mask)]
    _set_strides(p, q, k, v, out)
    # Zeroed, so that the bytes no kernel writes (alignment padding) are the same in every run: attend_train returns
    # the workspace as an output, and torch.compile's checks compare outputs.
    workspace = torch.zeros(max(size, 16), dtype=torch.uint8, device=q.device)
    ptr = [None if t is None else t.data_ptr() for t in (q, k, v, *masks, out, workspace)]
    if cuda:
        status = _native.runtime.mra_forward(ctypes.byref(p), *ptr, size, _stream(q))
    else:
        status = _native.runtime.mra_forward_host(ctypes.byref(p), *ptr, size)
    _native.check_runtime(status, f"mra::attend on {q.device.type} (scales {list(scales)}, D {q.shape[3]}, {q.dtype})")
    return out, workspace


def _output_like(q: torch.Tensor) -> torch.Tensor:
    """The output: q's layout when q is dense (a [B, N, H, D] q gives a [B, N, H, D] output), else contiguous."""
    return torch.empty_like(q) if _dense(q) else torch.empty(q.shape, dtype=q.dtype, device=q.device)


@torch.library.custom_op("mra::attend", mutates_args=())
def _attend_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_mask: Optional[torch.Tensor],
               key_mask: Optional[torch.Tensor], scales: List[int], budgets: List[int], sparse: bool,
               prior_first: int, prior_diagonal: int, scale: float, row: bool = False, causal: bool = False,
               group: bool = False) -> torch.Tensor:
    return _forward(q, k, v, query_mask, key_mask, scales, budgets, sparse, prior_first, prior_diagonal, scale, row,
                    causal, group)[0]


@_attend_op.register_fake
def _attend_fake(q, k, v, query_mask, key_mask, scales, budgets, sparse, prior_first, prior_diagonal, scale,
                 row=False, causal=False, group=False):
    _check(q, k, v, query_mask, key_mask)
    return _output_like(q)


def _no_backward(ctx, grad):
    raise RuntimeError("mra::attend saves nothing for a backward pass: differentiate mra.torch_ops.attend, which "
                       "runs torch.ops.mra.attend_train when a gradient is wanted")


def _setup_context(ctx, inputs, output):
    pass


_attend_op.register_autograd(_no_backward, setup_context=_setup_context)


@torch.library.custom_op("mra::attend_train", mutates_args=())
def _attend_train_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_mask: Optional[torch.Tensor],
                     key_mask: Optional[torch.Tensor], scales: List[int], budgets: List[int], sparse: bool,
                     prior_first: int, prior_diagonal: int, scale: float, row: bool = False, causal: bool = False,
                     group: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    return _forward(q, k, v, query_mask, key_mask, scales, budgets, sparse, prior_first, prior_diagonal, scale, row,
                    causal, group)


@_attend_train_op.register_fake
def _attend_train_fake(q, k, v, query_mask, key_mask, scales, budgets, sparse, prior_first, prior_diagonal, scale,
                       row=False, causal=False, group=False):
    _check(q, k, v, query_mask, key_mask)
    p, cuda = _problem(q, k, scales, budgets, sparse, prior_first, prior_diagonal, scale, row, causal, group)
    size = workspace_size(p, "cuda" if cuda else "emulated")
    return _output_like(q), torch.empty(max(size, 16), dtype=torch.uint8, device=q.device)


@torch.library.custom_op("mra::attend_backward", mutates_args=())
def _attend_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, query_mask: Optional[torch.Tensor],
                        key_mask: Optional[torch.Tensor], out: torch.Tensor, dout: torch.Tensor, saved: torch.Tensor,
                        scales: List[int], budgets: List[int], sparse: bool, prior_first: int, prior_diagonal: int,
                        scale: float, row: bool = False, causal: bool = False,
                        group: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check(q, k, v, query_mask, key_mask)
    if out.shape != q.shape or dout.shape != q.shape or out.dtype != q.dtype or dout.dtype != q.dtype:
        raise MraError(f"mra::attend_backward: out {tuple(out.shape)} {out.dtype} and dout {tuple(dout.shape)} "
                       f"{dout.dtype} must be shaped and typed like q {tuple(q.shape)} {q.dtype}")
    p, cuda = _problem(q, k, scales, budgets, sparse, prior_first, prior_diagonal, scale, row, causal, group)
    size = backward_workspace_size(p, "cuda" if cuda else "emulated")
    # dq, dk, dv are written with the strides of q, k, v, and dout is read with out's: the forward's own layouts
    # when they allow it, so a [B, N, H, D] model gets [B, N, H, D] gradients without a copy.
    q, k, v = (_writable_layout(t) for t in (q, k, v))
    out, saved = _readable(out), _aligned_contiguous(saved)
    dout = dout if dout.stride() == out.stride() and _strides_admitted(dout) else torch.empty_like(out).copy_(dout)
    masks = [None if m is None else _aligned_contiguous(m) for m in (query_mask, key_mask)]
    dq, dk, dv = (_output_like(t) for t in (q, k, v))
    _set_strides(p, q, k, v, out)
    workspace = torch.empty(max(size, 16), dtype=torch.uint8, device=q.device)
    ptr = [None if t is None else t.data_ptr() for t in (q, k, v, *masks, out, dout, dq, dk, dv)]
    args = (*ptr, saved.data_ptr(), saved.numel(), workspace.data_ptr(), size)
    if cuda:
        status = _native.runtime.mra_backward(ctypes.byref(p), *args, _stream(q))
    else:
        status = _native.runtime.mra_backward_host(ctypes.byref(p), *args)
    _native.check_runtime(status, f"mra::attend_backward on {q.device.type} (scales {list(scales)}, "
                                  f"D {q.shape[3]}, {q.dtype})")
    return dq, dk, dv


@_attend_backward_op.register_fake
def _attend_backward_fake(q, k, v, query_mask, key_mask, out, dout, saved, scales, budgets, sparse, prior_first,
                          prior_diagonal, scale, row=False, causal=False, group=False):
    _check(q, k, v, query_mask, key_mask)
    return _output_like(q), _output_like(k), _output_like(v)


def _train_setup(ctx, inputs, output):
    q, k, v, query_mask, key_mask = inputs[:5]
    out, saved = output
    ctx.save_for_backward(q, k, v, query_mask, key_mask, out, saved)
    ctx.options = inputs[5:]


def _train_backward(ctx, dout, dsaved):
    q, k, v, query_mask, key_mask, out, saved = ctx.saved_tensors
    dq, dk, dv = torch.ops.mra.attend_backward(q, k, v, query_mask, key_mask, out, dout, saved, *ctx.options)
    return (dq, dk, dv) + (None,) * 11


_attend_train_op.register_autograd(_train_backward, setup_context=_train_setup)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scales: Sequence[int] = (32, 1),
           budget: Union[int, Sequence[int], None] = None, blocks_per_row: Optional[int] = None, mode: str = "full",
           prior_first: int = 0, prior_diagonal: int = 0, policy: Optional[str] = None, causal: bool = False,
           selection: str = "head", scale: Optional[float] = None, mask: Optional[torch.Tensor] = None,
           query_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """torch.ops.mra.attend with the options of mra.attend (budgets resolved here, masks [B, N] of 0/1 or bool;
    `mask` masks the keys, and the queries too when Nq == Nk and no query_mask is given; causal: query i sees key j
    only when j <= i + Nk - Nq, policy "row" by default and "global" refused, docs/semantics.md §9; selection
    "head" or "group", §8.4); torch.ops.mra.attend_train instead when a gradient is wanted, so that backward() gives
    q.grad, k.grad, v.grad (every dtype; causal attention too, §9.7). q is [B, H, N, D], k and v [B, H_kv, Nk, D] with
    H_kv dividing H, any strides."""
    if q.dim() != 4 or k.dim() != 4:
        raise MraError(f"mra.torch_ops.attend: q and k must be [B, H, N, D], got {tuple(q.shape)}, {tuple(k.shape)}")
    causal = bool(causal)
    if policy is None:
        policy = "row" if causal else "global"
    config = resolve_config(q.shape[2], k.shape[2], scales, budget, blocks_per_row, mode, prior_first, prior_diagonal,
                            policy, selection)
    if causal and config.policy == "global":
        raise MraError("policy: 'global' cannot be combined with causal=True: a global budget lets later rows' keys "
                       "change an earlier row's selection (docs/semantics.md §9.4); use 'row'")
    key_mask = None if mask is None else _mask("mask", mask, q.shape[0], k.shape[2], q.device)
    qmask = None if query_mask is None else _mask("query_mask", query_mask, q.shape[0], q.shape[2], q.device)
    if qmask is None and key_mask is not None and q.shape[2] == k.shape[2]:
        qmask = key_mask
    s = 0.0 if scale is None else float(scale)
    if scale is not None and not (s > 0.0 and s != float("inf")):
        raise MraError(f"scale: {scale!r} must be a positive finite number")
    args = (q, k, v, qmask, key_mask, list(config.scales), list(config.budgets), config.sparse, config.prior_first,
            config.prior_diagonal, s, config.policy == "row", causal, config.selection == "group")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return torch.ops.mra.attend_train(*args)[0]
    return torch.ops.mra.attend(*args)


def _mask(name: str, m: torch.Tensor, batch: int, n: int, device) -> torch.Tensor:
    if tuple(m.shape) != (batch, n):
        raise MraError(f"{name}: shape {tuple(m.shape)} is not [{batch}, {n}]")
    if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
        raise MraError(f"{name}: values must be 0 or 1")
    return m.to(device=device, dtype=torch.uint8).contiguous()
