"""Array-module dispatch: one ``xp`` for NumPy (device 'cpu') and CuPy (device 'cuda').

Every op finds its array module from its inputs, so the same forward/backward code
runs on both.  CuPy is optional: without it only 'cpu' exists.
"""
from __future__ import annotations

from typing import Any

import numpy as np

try:
    import cupy
except ImportError:  # no GPU stack installed: NumPy only
    cupy = None

DEVICES = ("cpu", "cuda")


def array_module(a: Any):
    """The module (numpy or cupy) that owns array ``a``."""
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    return np


def device_of(a: Any) -> str:
    return "cuda" if array_module(a) is not np else "cpu"


def to_device(a: Any, device: str):
    """Copy array ``a`` to ``device`` ('cpu' or 'cuda'); no copy if already there."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; expected one of {DEVICES}")
    if device == "cpu":
        return cupy.asnumpy(a) if cupy is not None and isinstance(a, cupy.ndarray) else np.asarray(a)
    if cupy is None:
        raise RuntimeError("device 'cuda' needs CuPy: pip install 'tinyvae[cuda]'")
    return cupy.asarray(a)


def cuda_available() -> bool:
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except cupy.cuda.runtime.CUDARuntimeError:
        return False


def scatter_add(target, index, values) -> None:
    """``target[index] += values`` with repeated indices accumulated (np.add.at semantics)."""
    xp = array_module(target)
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)


def erf(x):
    """Elementwise error function (NumPy has none; Numba's math.erf on CPU, CuPy's on GPU)."""
    xp = array_module(x)
    if xp is not np:
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    from ._erf import erf_cpu
    return erf_cpu(x)
