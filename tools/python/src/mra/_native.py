"""mra._native: loads libmra.so (runtime/mra.h) and libmra_reference.so (reference/c_api/mra_reference.h) with
ctypes and declares their C structures and functions.

The libraries are looked up in the folders of the environment variable MRA_LIBRARY_DIR (os.pathsep-separated;
for a build tree: build/runtime and build/reference/c_api), then in this package's folder, where
`pip install tools/python` puts them.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import threading

MAX_LEVELS = 4  # MRA_MAX_LEVELS of runtime/mra.h

# mra_dtype and mra_mode of runtime/mra.h.
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2
MODE_FULL, MODE_SPARSE = 0, 1
POLICY_GLOBAL, POLICY_ROW = 0, 1
SELECTION_HEAD, SELECTION_GROUP = 0, 1
SUCCESS, LAUNCH_FAILED = 0, 4  # mra_status of runtime/mra.h


class MraError(ValueError):
    """A call into MRA failed: `status` is the C status code (None for a bad Python argument), the message says
    what is wrong and where."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Problem(ctypes.Structure):
    """struct mra_problem (runtime/mra.h)."""

    _fields_ = [("batch", ctypes.c_int64), ("heads", ctypes.c_int64), ("nq", ctypes.c_int64),
                ("nk", ctypes.c_int64), ("dim", ctypes.c_int64), ("dtype", ctypes.c_int),
                ("levels", ctypes.c_int32), ("resolutions", ctypes.c_int64 * MAX_LEVELS),
                ("budgets", ctypes.c_int64 * (MAX_LEVELS - 1)), ("mode", ctypes.c_int),
                ("prior_first", ctypes.c_int64), ("prior_diagonal", ctypes.c_int64), ("scale", ctypes.c_double),
                ("heads_kv", ctypes.c_int64), ("strides", ctypes.c_int64 * 16),
                ("causal", ctypes.c_int32), ("policy", ctypes.c_int), ("selection", ctypes.c_int)]


class ReferenceProblem(ctypes.Structure):
    """struct mra_reference_problem (reference/c_api/mra_reference.h)."""

    _fields_ = [("batch", ctypes.c_int64), ("heads", ctypes.c_int64), ("nq", ctypes.c_int64),
                ("nk", ctypes.c_int64), ("dim", ctypes.c_int64), ("scale", ctypes.c_double),
                ("levels", ctypes.c_int32), ("scales", ctypes.POINTER(ctypes.c_int64)),
                ("budgets", ctypes.POINTER(ctypes.c_int64)), ("sparse", ctypes.c_int32),
                ("prior_first", ctypes.c_int64), ("prior_diagonal", ctypes.c_int64),
                ("heads_kv", ctypes.c_int64), ("q_strides", ctypes.c_int64 * 4), ("k_strides", ctypes.c_int64 * 4),
                ("v_strides", ctypes.c_int64 * 4), ("out_strides", ctypes.c_int64 * 4),
                ("causal", ctypes.c_int32), ("policy", ctypes.c_int32), ("selection", ctypes.c_int32)]


def _find(name: str) -> str:
    folders = [f for f in os.environ.get("MRA_LIBRARY_DIR", "").split(os.pathsep) if f]
    folders.append(str(pathlib.Path(__file__).resolve().parent))
    for folder in folders:
        path = pathlib.Path(folder) / name
        if path.is_file():
            return str(path)
    raise ImportError(f"mra: {name} not found in {', '.join(folders)} (install the package with "
                      f"`pip install tools/python`, or point MRA_LIBRARY_DIR at a build tree)")


_p, _vp, _u8p, _i64p, _cp = (ctypes.POINTER(Problem), ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_int64), ctypes.c_char_p)

runtime = ctypes.CDLL(_find("libmra.so"))
runtime.mra_status_string.argtypes = [ctypes.c_int]
runtime.mra_status_string.restype = ctypes.c_char_p
runtime.mra_workspace_size.argtypes = [_p, ctypes.POINTER(ctypes.c_size_t)]
runtime.mra_workspace_size.restype = ctypes.c_int
runtime.mra_forward_host.argtypes = [_p, _vp, _vp, _vp, _u8p, _u8p, _vp, _vp, ctypes.c_size_t]
runtime.mra_forward_host.restype = ctypes.c_int
runtime.mra_backward_workspace_size.argtypes = [_p, ctypes.POINTER(ctypes.c_size_t)]
runtime.mra_backward_workspace_size.restype = ctypes.c_int
# q, k, v, query_mask, key_mask, out, dout, dq, dk, dv, forward workspace and its size, workspace and its size.
_BACKWARD_ARGS = [_p, _vp, _vp, _vp, _u8p, _u8p, _vp, _vp, _vp, _vp, _vp, _vp, ctypes.c_size_t, _vp, ctypes.c_size_t]
runtime.mra_backward_host.argtypes = _BACKWARD_ARGS
runtime.mra_backward_host.restype = ctypes.c_int
runtime.mra_last_cuda_error.argtypes = []
runtime.mra_last_cuda_error.restype = ctypes.c_int
# mra_launch_observer: void (*)(void* user, const char* stage, cudaStream_t stream).
_LaunchObserver = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
runtime.mra_set_launch_observer.argtypes = [_LaunchObserver, ctypes.c_void_p]
runtime.mra_set_launch_observer.restype = None
# mra_forward and mra_backward exist only where nvcc built the CUDA backend.
HAVE_CUDA = hasattr(runtime, "mra_forward")
if HAVE_CUDA:
    runtime.mra_forward.argtypes = [_p, _vp, _vp, _vp, _u8p, _u8p, _vp, _vp, ctypes.c_size_t, ctypes.c_void_p]
    runtime.mra_forward.restype = ctypes.c_int
    runtime.mra_backward.argtypes = _BACKWARD_ARGS + [ctypes.c_void_p]
    runtime.mra_backward.restype = ctypes.c_int

reference = ctypes.CDLL(_find("libmra_reference.so"))
_rp = ctypes.POINTER(ReferenceProblem)
for _name in ("mra_reference_attend", "mra_reference_exact"):
    getattr(reference, _name).argtypes = [_rp, _vp, _vp, _vp, _u8p, _u8p, _vp, _cp, ctypes.c_size_t]
    getattr(reference, _name).restype = ctypes.c_int
reference.mra_reference_budgets.argtypes = [_i64p, ctypes.c_int32, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                            _i64p, _cp, ctypes.c_size_t]
reference.mra_reference_budgets.restype = ctypes.c_int


def status_text(status: int) -> str:
    return runtime.mra_status_string(status).decode()


def check_runtime(status: int, what: str) -> None:
    """Raises MraError carrying mra_status_string(status) unless it is MRA_SUCCESS; then the first exception the
    launch observer raised during the call, if any."""
    raised, _observer_state.raised = getattr(_observer_state, "raised", None), None
    error = raised
    if status == LAUNCH_FAILED:
        error = MraError(f"{what}: {status_text(status)} (cudaError {runtime.mra_last_cuda_error()})", status)
    elif status != SUCCESS:
        error = MraError(f"{what}: {status_text(status)}", status)
    if error is not None:
        if raised is not None and error is not raised:
            error.__cause__ = raised  # the launch failed too: the observer's exception is named as its cause
        raise error


# The launch observer (runtime/mra.h, mra_set_launch_observer). The C library holds one trampoline, made once and
# kept for the life of the module, with no `user` pointer: it calls whichever Python function is set when a launch
# is announced, so replacing or clearing the function while calls run on other threads frees nothing those calls
# may still use. An exception cannot cross the C frames: the trampoline keeps the calling thread's first one, and
# check_runtime, which every call of the C API here is followed by, raises it when the call has returned.
_observer = None
_observer_state = threading.local()


def _on_launch(user, stage, stream) -> None:
    fn = _observer
    if fn is None or getattr(_observer_state, "raised", None) is not None:
        return
    try:
        fn(stage.decode(), stream)
    except BaseException as e:  # noqa: B036 (KeyboardInterrupt too: raised once the call returns)
        _observer_state.raised = e


_trampoline = _LaunchObserver(_on_launch)


def set_launch_observer(fn):
    """Sets fn(stage: str, stream: int | None) to be called before each kernel launch of every later forward and
    backward of libmra.so (mra.attend on the "emulated" and "cuda" backends, torch.ops.mra.*), on the calling
    thread; None clears it. Returns the observer set before (None if none). docs/python.md."""
    global _observer
    if fn is not None and not callable(fn):
        raise MraError(f"set_launch_observer: expected a callable or None, got {fn!r}")
    previous, _observer = _observer, fn
    runtime.mra_set_launch_observer(_trampoline if fn is not None else _LaunchObserver(), None)
    return previous


def call_reference(function, *args) -> None:
    """Calls a reference entry with an error buffer appended; raises MraError with its message on failure."""
    error = ctypes.create_string_buffer(512)
    status = function(*args, error, len(error))
    if status != SUCCESS:
        raise MraError(f"reference: {error.value.decode(errors='replace')}", status)
