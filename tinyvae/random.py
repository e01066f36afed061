"""Random numbers: one seeded NumPy ``Generator`` that layers and data use by default.

``manual_seed(s)`` makes every default draw reproducible (same seed on CPU ⇒ same
numbers). Every function that draws also takes an explicit ``rng=`` to bypass it.
"""
from __future__ import annotations

from typing import Optional

import numpy as np


class _Default:
    generator = np.random.default_rng(0)


def manual_seed(seed: int) -> np.random.Generator:
    _Default.generator = np.random.default_rng(seed)
    return _Default.generator


def get_rng(rng: Optional[np.random.Generator] = None) -> np.random.Generator:
    return rng if rng is not None else _Default.generator
