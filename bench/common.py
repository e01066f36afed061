"""Shared benchmark plumbing: best-of-N timing, JSON lines, machine description, optional peers."""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Callable, Optional

# bench/kernels.py shares its name with the ``kernels`` package it measures. Every benchmark
# imports this module first; taking this folder off the import path here makes ``import
# kernels`` (directly, or inside tinyvae) find the package rather than that script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def best_of(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, sync: Optional[Callable] = None) -> float:
    """Minimum wall time in seconds over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def emit(**record) -> None:
    """Print one JSON line; ``ratio`` fields are ours / peer's time (lower is better for us)."""
    print(json.dumps(record), flush=True)


def try_import_torch(threads: int):
    """PyTorch on the CPU with the same thread count as NumPy, or None if not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch
