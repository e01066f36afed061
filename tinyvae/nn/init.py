"""Weight initialisers (in place, on a Parameter's data), with PyTorch's formulas, and
``filled``, the one place modules get the arrays of their parameters and buffers.

Inside ``placeholders()`` those arrays are zero-stride read-only views of one number and the
initialisers do nothing: building a model then costs no memory whatever its options say, so
a checkpoint's array shapes can be compared with the model's before anything is allocated,
and ``load_state_dict`` gives every parameter and buffer its real array.

fan_in / fan_out follow PyTorch: for a weight [d0, d1, k...], fan_in = d1·∏k and
fan_out = d0·∏k (so a ConvTranspose2d weight [in, out, k, k] has fan_in = out·k·k).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import backend
from ..random import get_rng


def fan_in_and_fan_out(shape: tuple) -> tuple:
    if len(shape) < 2:
        raise ValueError(f"fan in/out need at least 2 dims, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


class _Placeholders:
    on = False


@contextlib.contextmanager
def placeholders():
    """Modules built inside hold placeholder arrays (no memory); load their state before use."""
    before, _Placeholders.on = _Placeholders.on, True
    try:
        yield
    finally:
        _Placeholders.on = before


def filled(shape, value: float = 0.0, dtype=np.float32) -> np.ndarray:
    """A new array of ``shape`` holding ``value`` (a placeholder inside ``placeholders()``)."""
    if _Placeholders.on:
        return np.broadcast_to(np.array(value, dtype), shape)
    return np.full(shape, value, dtype)


def copied(array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` (inside ``placeholders()``, the placeholder itself)."""
    return array if _Placeholders.on else array.copy()


def _fill(t, values: np.ndarray):
    t.data = backend.to_device(values.astype(t.dtype), t.device)
    t.mark_written()
    return t


def scale_(t, factor: float):
    """Multiply t's values by ``factor`` in place (a placeholder stays one)."""
    return t if _Placeholders.on else _fill(t, t.data * factor)


def uniform_(t, low: float = 0.0, high: float = 1.0, rng=None):
    return t if _Placeholders.on else _fill(t, get_rng(rng).uniform(low, high, t.shape))


def normal_(t, mean: float = 0.0, std: float = 1.0, rng=None):
    return t if _Placeholders.on else _fill(t, get_rng(rng).normal(mean, std, t.shape))


def constant_(t, value: float):
    return t if _Placeholders.on else _fill(t, np.full(t.shape, value))


def zeros_(t):
    return constant_(t, 0.0)


def ones_(t):
    return constant_(t, 1.0)


def calculate_gain(nonlinearity: str, param: float = None) -> float:
    gains = {"linear": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0)}
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity not in gains:
        raise ValueError(f"calculate_gain: unknown nonlinearity {nonlinearity!r}")
    return gains[nonlinearity]


def xavier_uniform_(t, gain: float = 1.0, rng=None):
    fan_in, fan_out = fan_in_and_fan_out(t.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, rng)


def xavier_normal_(t, gain: float = 1.0, rng=None):
    fan_in, fan_out = fan_in_and_fan_out(t.shape)
    return normal_(t, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng)


def kaiming_uniform_(t, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", rng=None):
    fan = fan_in_and_fan_out(t.shape)[0 if mode == "fan_in" else 1]
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(t, -bound, bound, rng)


def kaiming_normal_(t, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu", rng=None):
    fan = fan_in_and_fan_out(t.shape)[0 if mode == "fan_in" else 1]
    return normal_(t, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), rng)


def default_layer_init_(weight, bias=None, rng=None) -> None:
    """PyTorch's default for Linear and Conv layers: kaiming_uniform(a=√5) on the weight,
    which is U(±1/√fan_in), and U(±1/√fan_in) on the bias."""
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        bound = 1 / math.sqrt(fan_in_and_fan_out(weight.shape)[0])
        uniform_(bias, -bound, bound, rng)
