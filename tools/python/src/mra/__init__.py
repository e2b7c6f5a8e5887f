"""mra: MRA attention (multi-resolution approximate softmax attention, Zeng et al. 2022) from Python.

    import numpy as np, mra
    q = k = v = np.random.default_rng(0).standard_normal((2, 256, 64), dtype=np.float32)
    out = mra.attend(q, k, v, scales=(32, 1), blocks_per_row=4)      # ~ mra.exact(q, k, v)

numpy in and out (mra.attend, mra.exact; options named as mra-ref's flags), backends "reference", "emulated"
and "cuda" (when built); errors raise mra.MraError. PyTorch: mra.torch_ops (torch.ops.mra.attend); Hugging Face:
mra.huggingface (mra2_attention, patch_mra). mra.set_launch_observer: the stage of each kernel launch (profiling).
"""

from ._native import HAVE_CUDA, MraError, set_launch_observer
from .api import BACKENDS, Config, attend, exact, resolve_config

__all__ = ["attend", "exact", "MraError", "Config", "resolve_config", "BACKENDS", "HAVE_CUDA", "set_launch_observer"]
__version__ = "0.1.0"
