"""Gradient utilities."""
from __future__ import annotations

import math
from typing import Iterable

from .. import backend


def clip_grad_norm(params: Iterable, max_norm: float) -> float:
    """Scale all gradients so their joint L2 norm is at most ``max_norm``; return the norm
    before clipping (inf or nan if a gradient is non-finite, so callers can skip the step)."""
    params = [p for p in params if p.grad is not None]
    total = math.sqrt(sum(float((backend.array_module(p.grad).square(p.grad)).sum()) for p in params))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            p.grad = p.grad * scale
    return total
