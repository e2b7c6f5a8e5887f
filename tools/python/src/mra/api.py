"""mra.api: MRA and exact attention on numpy arrays, with the options of `mra-ref attend` / `mra-ref exact`.

    out = mra.attend(q, k, v, scales=(32, 1), blocks_per_row=4, backend="reference")

Shapes as mra-ref: q [N, D], [H, N, D] or [B, H, N, D]; k and v the same with their own N. Masks [N] (shared by
the batch) or [B, N], bool or numbers 0/1, 1 = real token. Semantics: docs/semantics.md; the options, their
defaults and the backends: README.md ("Python").
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
from typing import Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import MraError

BACKENDS = ("reference", "emulated", "cuda")
DEFAULT_SCALES = (32, 1)
DEFAULT_BLOCKS_PER_ROW = 4


@dataclasses.dataclass(frozen=True)
class Config:
    """An MRA configuration with its budgets resolved (what mra-ref's load_config produces)."""

    scales: tuple
    budgets: tuple
    sparse: bool
    prior_first: int
    prior_diagonal: int
    policy: str = "global"
    selection: str = "head"


def _int(name: str, value, minimum: int = 0) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise MraError(f"{name}: expected an integer, got {value!r}")
    if value < minimum:
        raise MraError(f"{name}: must be at least {minimum}, got {value}")
    return int(value)


def _int_list(name: str, value, minimum: int) -> tuple:
    items = [value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        return tuple(_int(name, x, minimum) for x in items)
    except TypeError:
        raise MraError(f"{name}: expected an integer or a sequence of integers, got {value!r}") from None


def resolve_config(nq: int, nk: int, scales: Sequence[int] = DEFAULT_SCALES,
                   budget: Union[int, Sequence[int], None] = None, blocks_per_row: Optional[int] = None,
                   mode: str = "full", prior_first: int = 0, prior_diagonal: int = 0,
                   policy: str = "global", selection: str = "head") -> Config:
    """The configuration of `mra-ref attend`'s options: `budget` (one per refinement step) or `blocks_per_row`
    (default 4) gives the budgets (under policy "row" per block row: blocks_per_row itself at every level, as
    mra-ref); selection "head" or "group" (docs/semantics.md §8.4); checks everything the reference checks."""
    scales = _int_list("scales", scales, 1)
    if mode not in ("full", "sparse"):
        raise MraError(f"mode: {mode!r} is not 'full' or 'sparse'")
    if policy not in ("global", "row"):
        raise MraError(f"policy: {policy!r} is not 'global' or 'row'")
    if selection not in ("head", "group"):
        raise MraError(f"selection: {selection!r} is not 'head' or 'group'")
    if budget is not None and blocks_per_row is not None:
        raise MraError("budget: cannot be combined with blocks_per_row")
    if len(scales) < 2:
        raise MraError("scales: need at least two resolutions, the last one 1")
    levels = len(scales)
    if budget is not None:
        budgets = _int_list("budget", budget, 0)
        if len(budgets) != levels - 1:
            raise MraError(f"budget: expected {levels - 1} value(s), one per refinement step of scales, "
                           f"got {len(budgets)}")
    else:
        per_row = _int("blocks_per_row", DEFAULT_BLOCKS_PER_ROW if blocks_per_row is None else blocks_per_row)
        if policy == "row":
            budgets = (per_row,) * (levels - 1)  # docs/semantics.md §10: p blocks in every block row
        else:
            out = (ctypes.c_int64 * (levels - 1))()
            _native.call_reference(_native.reference.mra_reference_budgets, (ctypes.c_int64 * levels)(*scales),
                                   levels, nq, nk, per_row, out)
            budgets = tuple(out)
    return Config(scales, budgets, mode == "sparse", _int("prior_first", prior_first),
                  _int("prior_diagonal", prior_diagonal), policy, selection)


def _shapes(q: np.ndarray, k: np.ndarray, v: np.ndarray):
    """(batch, heads, nq, nk, dim) of mra-ref's shape rules; k and v may have fewer heads than q, a count dividing
    q's (grouped K/V heads, docs/semantics.md §8: _kv_heads)."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.dtype not in (np.float16, np.float32, np.float64):
            raise MraError(f"{name}: dtype {a.dtype} is not float16, float32 or float64")
    if q.ndim not in (2, 3, 4):
        raise MraError(f"q: shape {q.shape} is not [N, D], [H, N, D] or [B, H, N, D]")
    if k.shape != v.shape:
        raise MraError(f"k and v: shapes {k.shape} and {v.shape} differ")
    grouped = q.ndim >= 3 and k.ndim == q.ndim and k.shape[-3] > 0 and q.shape[-3] % k.shape[-3] == 0
    if k.ndim != q.ndim or k.shape[:-3] != q.shape[:-3] or not (grouped or k.shape[:-2] == q.shape[:-2]) \
            or k.shape[-1] != q.shape[-1]:
        raise MraError(f"k: shape {k.shape} does not match q {q.shape} (same batch and D, a head count dividing q's)")
    lead = (1,) * (4 - q.ndim) + q.shape[:-2]
    return lead[0], lead[1], q.shape[-2], k.shape[-2], q.shape[-1]


def _mask(name: str, mask, batch: int, n: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape not in ((n,), (batch, n)):
        raise MraError(f"{name}: shape {m.shape} is not [{n}] or [{batch}, {n}]")
    if m.dtype != np.bool_:
        bad = ~((m == 0) | (m == 1))
        if bad.any():
            where = np.unravel_index(int(np.argmax(bad)), m.shape)
            raise MraError(f"{name}: value {m[where].item()!r} at {tuple(int(i) for i in where)} is not 0 or 1")
    return np.ascontiguousarray(np.broadcast_to(m.astype(np.uint8), (batch, n)))


def resolve_masks(mask, query_mask, batch: int, nq: int, nk: int):
    """(query mask, key mask) as uint8 [B, N] or None. `mask` masks the keys, and the queries too when Nq == Nk and
    no query_mask is given (one sequence attending to itself), as mra-ref's --mask."""
    key = None if mask is None else _mask("mask", mask, batch, nk)
    query = None if query_mask is None else _mask("query_mask", query_mask, batch, nq)
    if query is None and key is not None and nq == nk:
        query = key
    return query, key


def _scale(scale) -> float:
    if scale is None:
        return 0.0  # the C APIs' "1/sqrt(D)"
    s = float(scale)
    if not math.isfinite(s) or s <= 0.0:
        raise MraError(f"scale: {scale!r} must be a positive finite number")
    return s


def _aligned(a: np.ndarray, dtype) -> np.ndarray:
    """A C-contiguous copy (or view) of `a` in `dtype` whose data is 16-byte aligned, as the C API requires."""
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.ctypes.data % 16 == 0:
        return a
    raw = np.empty(a.nbytes + 16, np.uint8)
    offset = (-raw.ctypes.data) % 16
    out = raw[offset:offset + a.nbytes].view(dtype).reshape(a.shape)
    out[...] = a
    return out


def _ptr(a: Optional[np.ndarray]):
    return None if a is None else a.ctypes.data


def _kv_heads(q: np.ndarray, k: np.ndarray) -> int:
    """K/V heads of arrays that passed _shapes (1 for [N, D])."""
    return k.shape[-3] if k.ndim >= 3 else 1


def runtime_problem(batch: int, heads: int, nq: int, nk: int, dim: int, dtype: int, config: Config,
                    scale: float, causal: bool = False, heads_kv: int = 0) -> _native.Problem:
    """The mra_problem of a problem and its configuration; MraError when the C API cannot express it."""
    if len(config.scales) > _native.MAX_LEVELS:
        raise MraError(f"scales: the generated kernels have at most {_native.MAX_LEVELS} resolutions, "
                       f"got {len(config.scales)} (the reference backend takes any number)")
    p = _native.Problem(batch=batch, heads=heads, nq=nq, nk=nk, dim=dim, dtype=dtype, levels=len(config.scales),
                        mode=_native.MODE_SPARSE if config.sparse else _native.MODE_FULL,
                        prior_first=config.prior_first, prior_diagonal=config.prior_diagonal, scale=scale,
                        causal=int(causal), heads_kv=heads_kv,
                        policy=_native.POLICY_ROW if config.policy == "row" else _native.POLICY_GLOBAL,
                        selection=_native.SELECTION_GROUP if config.selection == "group" else _native.SELECTION_HEAD)
    for i, s in enumerate(config.scales):
        p.resolutions[i] = s
    for i, b in enumerate(config.budgets):
        p.budgets[i] = b
    return p


def workspace_size(problem: _native.Problem, backend: str) -> int:
    size = ctypes.c_size_t()
    _native.check_runtime(_native.runtime.mra_workspace_size(ctypes.byref(problem), ctypes.byref(size)),
                          f"{backend} backend ({_describe(problem)})")
    return size.value


def backward_workspace_size(problem: _native.Problem, backend: str) -> int:
    size = ctypes.c_size_t()
    _native.check_runtime(_native.runtime.mra_backward_workspace_size(ctypes.byref(problem), ctypes.byref(size)),
                          f"{backend} backward ({_describe(problem)}; backward kernels exist for float32)")
    return size.value


def _describe(p: _native.Problem) -> str:
    scales = ",".join(str(p.resolutions[i]) for i in range(p.levels))
    dtype = {_native.DTYPE_F32: "f32", _native.DTYPE_F16: "f16", _native.DTYPE_BF16: "bf16"}.get(p.dtype, "?")
    return f"scales {scales}, D {p.dim}, {dtype}; docs/kernels.md lists the generated configurations"


def _run_reference(function, q, k, v, qmask, kmask, shape, config: Optional[Config], scale: float,
                   causal: bool = False, heads_kv: int = 0) -> np.ndarray:
    batch, heads, nq, nk, dim = shape
    q, k, v = (_aligned(a, np.float32) for a in (q, k, v))
    out = np.empty(q.shape, np.float32)
    scales = (ctypes.c_int64 * len(config.scales))(*config.scales) if config else None
    budgets = (ctypes.c_int64 * len(config.budgets))(*config.budgets) if config else None
    p = _native.ReferenceProblem(batch=batch, heads=heads, nq=nq, nk=nk, dim=dim, scale=scale,
                                 levels=len(config.scales) if config else 0, scales=scales, budgets=budgets,
                                 sparse=int(config.sparse) if config else 0,
                                 prior_first=config.prior_first if config else 0,
                                 prior_diagonal=config.prior_diagonal if config else 0,
                                 policy=int(config is not None and config.policy == "row"), causal=int(causal),
                                 heads_kv=heads_kv, selection=int(config is not None and config.selection == "group"))
    _native.call_reference(function, ctypes.byref(p), _ptr(q), _ptr(k), _ptr(v), _ptr(qmask), _ptr(kmask), _ptr(out))
    return out


def _run_emulated(q, k, v, qmask, kmask, shape, config: Config, scale: float, causal: bool,
                  heads_kv: int) -> np.ndarray:
    dtype, code = (np.float16, _native.DTYPE_F16) if q.dtype == np.float16 else (np.float32, _native.DTYPE_F32)
    p = runtime_problem(*shape, code, config, scale, causal, heads_kv)
    size = workspace_size(p, "emulated")
    q, k, v = (_aligned(a, dtype) for a in (q, k, v))
    out = _aligned(np.empty(q.shape, dtype), dtype)
    workspace = _aligned(np.empty(max(size, 1), np.uint8), np.uint8)
    _native.check_runtime(_native.runtime.mra_forward_host(ctypes.byref(p), _ptr(q), _ptr(k), _ptr(v), _ptr(qmask),
                                                           _ptr(kmask), _ptr(out), _ptr(workspace), size),
                          f"emulated backend ({_describe(p)})")
    return out


def _cuda_check(err: int, what: str) -> None:
    if err != 0:
        _native.runtime.cudaGetErrorString.restype = ctypes.c_char_p
        text = _native.runtime.cudaGetErrorString(ctypes.c_int(err)).decode()
        raise MraError(f"cuda backend: {what}: {text} (cudaError {err})")


def _device_alloc(stack: contextlib.ExitStack, nbytes: int) -> ctypes.c_void_p:
    """cudaMalloc'd memory, freed when `stack` closes (the CUDA runtime comes with libmra.so's CUDA backend)."""
    ptr = ctypes.c_void_p()
    _cuda_check(_native.runtime.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))), "cudaMalloc")
    stack.callback(_native.runtime.cudaFree, ptr)
    return ptr


def _run_cuda(q, k, v, qmask, kmask, shape, config: Config, scale: float, causal: bool, heads_kv: int) -> np.ndarray:
    if not _native.HAVE_CUDA:
        raise MraError("backend: 'cuda' is not built in this installation (libmra.so was built without nvcc)")
    dtype, code = (np.float16, _native.DTYPE_F16) if q.dtype == np.float16 else (np.float32, _native.DTYPE_F32)
    p = runtime_problem(*shape, code, config, scale, causal, heads_kv)
    size = workspace_size(p, "cuda")
    to_device, to_host = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost
    rt = _native.runtime
    out = np.empty(q.shape, dtype)
    with contextlib.ExitStack() as stack:
        def upload(a):
            if a is None:
                return None
            a = np.ascontiguousarray(a)
            d = _device_alloc(stack, a.nbytes)
            _cuda_check(rt.cudaMemcpy(d, _ptr(a), ctypes.c_size_t(a.nbytes), to_device), "cudaMemcpy")
            return d

        d_q, d_k, d_v = (upload(np.asarray(a, dtype)) for a in (q, k, v))
        d_qmask, d_kmask = upload(qmask), upload(kmask)
        d_out, d_ws = _device_alloc(stack, out.nbytes), _device_alloc(stack, size)
        _native.check_runtime(rt.mra_forward(ctypes.byref(p), d_q, d_k, d_v, d_qmask, d_kmask, d_out, d_ws, size, None),
                              f"cuda backend ({_describe(p)})")
        _cuda_check(rt.cudaMemcpy(_ptr(out), d_out, ctypes.c_size_t(out.nbytes), to_host), "cudaMemcpy")
    return out


def attend(q, k, v, *, scales: Sequence[int] = DEFAULT_SCALES, budget: Union[int, Sequence[int], None] = None,
           blocks_per_row: Optional[int] = None, mode: str = "full", prior_first: int = 0, prior_diagonal: int = 0,
           policy: Optional[str] = None, scale: Optional[float] = None, mask=None, query_mask=None,
           causal: bool = False, selection: str = "head", backend: str = "reference") -> np.ndarray:
    """MRA attention of (q, k, v), shaped like q. k and v may have fewer heads than q (a count dividing q's: grouped
    K/V heads, docs/semantics.md §8); selection "head" (default: every query head selects its own blocks) or
    "group" (the heads sharing a K/V head share one selection, ranked by their mean query, §8.4).

    scales: block sides s_1 > ... > s_L = 1 (default (32, 1)); budget: blocks refined per batch and head, one per
    refinement step, or blocks_per_row (default 4) to derive them; mode: "full" (MRA-L) or "sparse" (MRA-L-s);
    prior_first / prior_diagonal: preferred block rows/columns and diagonal band; policy: "global" (each level's
    budget to the best blocks of the slice; the default) or "row" (budgets per block row, docs/semantics.md §10;
    the default with causal); causal: query i sees key j only when j <= i + Nk - Nq, and no output reads a later
    key (docs/semantics.md §9; needs policy "row"); scale: logit scale (default 1/sqrt(D)); mask: key mask [N] or [B, N] (also the query mask when Nq == Nk), query_mask: query mask;
    backend: "reference" (float32, any configuration), "emulated" (the generated kernels on the CPU; float32, or
    float16 kept as float16) or "cuda" (the generated kernels on the GPU, when built). Raises MraError."""
    if backend not in BACKENDS:
        raise MraError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    shape = _shapes(q, k, v)
    batch, _, nq, nk, _ = shape
    causal = bool(causal)
    if policy is None:
        policy = "row" if causal else "global"
    config = resolve_config(nq, nk, scales, budget, blocks_per_row, mode, prior_first, prior_diagonal, policy,
                            selection)
    if causal and config.policy == "global":
        raise MraError("policy: 'global' cannot be combined with causal=True: a global budget lets later rows' keys "
                       "change an earlier row's selection (docs/semantics.md §9.4); use 'row'")
    qmask, kmask = resolve_masks(mask, query_mask, batch, nq, nk)
    s = _scale(scale)
    heads_kv = _kv_heads(q, k)
    if backend == "reference":
        return _run_reference(_native.reference.mra_reference_attend, q, k, v, qmask, kmask, shape, config, s, causal,
                              heads_kv)
    run = _run_emulated if backend == "emulated" else _run_cuda
    return run(q, k, v, qmask, kmask, shape, config, s, causal, heads_kv)


def exact(q, k, v, *, scale: Optional[float] = None, mask=None, query_mask=None, causal: bool = False,
          backend: str = "reference") -> np.ndarray:
    """Exact softmax attention of (q, k, v) in float32, shaped like q (the reference; options as attend)."""
    if backend != "reference":
        raise MraError(f"backend: exact attention is computed by the reference only, not {backend!r}")
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    shape = _shapes(q, k, v)
    qmask, kmask = resolve_masks(mask, query_mask, shape[0], shape[2], shape[3])
    return _run_reference(_native.reference.mra_reference_exact, q, k, v, qmask, kmask, shape, None, _scale(scale),
                          bool(causal), _kv_heads(q, k))
