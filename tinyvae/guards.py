"""What stops or skips a training step: numbers that are not finite, a loss that has left its
recent range, an outsized gradient (VD-VAE's update skipping, Child 2021 §3.4)."""
from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Iterable, Optional

import numpy as np

from . import backend


def count_non_finite(arrays: Iterable) -> int:
    """How many numbers in ``arrays`` are NaN or ±inf. One sum per array first: a sum is finite
    when every term is (barring an overflow of huge values, then counted exactly: 0)."""
    bad = 0
    with np.errstate(over="ignore", invalid="ignore"):      # an overflowing sum is expected here, not news
        for a in arrays:
            if a.dtype.kind == "f" and not math.isfinite(float(a.sum())):
                bad += int((~backend.array_module(a).isfinite(a)).sum())
    return bad


def grad_norm(params: Iterable) -> float:
    """‖∇‖₂ over every parameter that has a gradient (inf if any entry is not finite)."""
    total = 0.0
    for p in params:
        if p.grad is not None:
            total += float((p.grad.astype("float64") ** 2).sum())
    return math.sqrt(total) if math.isfinite(total) else math.inf


class DivergenceGuard:
    """Says when a run has diverged: its loss above m + factor·max(|m|, 1), m the median of the
    last ``window`` ordinary losses, for ``patience`` steps in a row. ``factor`` 0: never."""

    def __init__(self, factor: float, patience: int, window: int = 100):
        self.factor, self.patience = factor, patience
        self.recent: deque = deque(maxlen=window)
        self.streak = 0

    def __call__(self, loss: float) -> Optional[str]:
        if not self.factor:
            return None
        if self.recent:
            median = statistics.median(self.recent)
            if loss > median + self.factor * max(abs(median), 1.0):
                self.streak += 1
                if self.streak >= self.patience:
                    return (f"the loss stayed above {self.factor:g} x its running median ({median:.4g}) for "
                            f"{self.streak} steps (last {loss:.4g}): the run diverged")
                return None
        self.streak = 0
        self.recent.append(loss)
        return None
