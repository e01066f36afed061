"""Optimizers with PyTorch's update formulas and defaults, and learning-rate schedules.

All updates act in place on ``p.data`` and read ``p.grad`` (parameters without a
gradient are skipped); each marks the parameter written, so a graph recorded before the
step refuses to backward. ``state_dict()`` holds the hyper-parameters, step count and
per-parameter buffers (arrays), so a run resumes exactly.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import numpy as np

from kernels import adam as adam_kernel

from . import backend


class Optimizer:
    defaults: dict = {}

    def __init__(self, params: Iterable, **hyper):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown options {sorted(unknown)}")
        self.hyper = {**self.defaults, **hyper}
        if self.hyper["lr"] <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {self.hyper['lr']}")
        self.steps = 0
        self.buffers: list = [{} for _ in self.params]

    @property
    def lr(self) -> float:
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper["lr"] = value

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.steps += 1
        for p, buf in zip(self.params, self.buffers):
            if p.grad is not None:
                self.update(p, p.grad, buf)
                p.mark_written()

    def update(self, p, g, buf: dict) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"hyper": dict(self.hyper), "steps": self.steps,
                "buffers": [{k: backend.to_device(v, "cpu").copy() for k, v in b.items()} for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        """Hyper-parameters, step count and buffers from ``state_dict()``; ValueError naming the
        first thing that does not fit (count, shape or dtype of a buffer, an unknown or
        non-numeric hyper-parameter), before anything is changed."""
        name = type(self).__name__
        if len(state["buffers"]) != len(self.params):
            raise ValueError(f"{name}.load_state_dict: state has {len(state['buffers'])} "
                             f"parameters, optimizer has {len(self.params)}")
        for p, b in zip(self.params, state["buffers"]):
            for k, v in b.items():
                if np.shape(v) != p.shape or getattr(v, "dtype", None) != p.dtype:
                    raise ValueError(f"{name}.load_state_dict: buffer {k!r} is {np.shape(v)} "
                                     f"{getattr(v, 'dtype', type(v).__name__)}, parameter is {p.shape} {p.dtype}")
        for k, v in state["hyper"].items():
            numbers = v if isinstance(v, (list, tuple)) else [v]
            if k not in self.defaults or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
                raise ValueError(f"{name}.load_state_dict: hyper-parameter {k}={v!r} is unknown or not finite")
        self.hyper.update(state["hyper"])
        self.steps = int(state["steps"])
        self.buffers = [{k: backend.to_device(v, p.device).copy() for k, v in b.items()}
                        for p, b in zip(self.params, state["buffers"])]


class SGD(Optimizer):
    """g ← ∇ + λp;  b ← μb + (1 − τ)g (b = g at the first step);  g ← g + μb if nesterov else b;
    p ← p − lr·g."""
    defaults = dict(lr=1e-2, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)

    def update(self, p, g, buf):
        h = self.hyper
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p.data
        if h["momentum"]:
            if "momentum" not in buf:
                buf["momentum"] = g.copy()
            else:
                buf["momentum"] = h["momentum"] * buf["momentum"] + (1 - h["dampening"]) * g
            g = g + h["momentum"] * buf["momentum"] if h["nesterov"] else buf["momentum"]
        p.data -= h["lr"] * g


class Adam(Optimizer):
    """m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  p ← p − lr·m̂ / (√v̂ + ε) with the bias
    corrections m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ).  weight_decay adds λp to g (L2)."""
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    decoupled = False

    def update(self, p, g, buf):
        h = self.hyper
        if "m" not in buf:
            xp = backend.array_module(p.data)
            buf["m"], buf["v"] = xp.zeros(p.shape, p.dtype), xp.zeros(p.shape, p.dtype)
        # One fused pass (kernels/adam.py); the in-place array version serves parameters
        # whose memory is not one contiguous block.
        adam_kernel.step(p.data, g, buf["m"], buf["v"], self.steps, h["lr"], *h["betas"], h["eps"],
                         h["weight_decay"], self.decoupled,
                         impl=None if p.data.flags.c_contiguous else "reference")


class AdamW(Adam):
    """Adam with decoupled weight decay: p ← p(1 − lr·λ) before the Adam step (λ = 0.01 by default)."""
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)
    decoupled = True


# ---- learning-rate schedules: step number → multiplier of the base rate -----------------

class Constant:
    def __call__(self, step: int) -> float:
        return 1.0


class StepDecay:
    """γ^⌊step / step_size⌋."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = step_size, gamma

    def __call__(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


class Cosine:
    """η_min/η + (1 − η_min/η)·½(1 + cos(π·step/T)), held at the end after T steps."""

    def __init__(self, total_steps: int, min_factor: float = 0.0):
        self.total_steps, self.min_factor = total_steps, min_factor

    def __call__(self, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class LinearWarmup:
    """Linear ramp from 1/warmup to 1 over ``warmup`` steps, then ``after(step − warmup)``."""

    def __init__(self, warmup: int, after=None):
        self.warmup, self.after = warmup, after or Constant()

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return self.after(step - self.warmup)


class IWAEStages:
    """The IWAE paper's schedule (Burda et al., 2016, §5): stage i = 0..7 lasts 3^i epochs at
    10^(−i/7) × the base rate, 3280 epochs in all; later epochs stay in the last stage."""

    stages = 8

    def __init__(self, steps_per_epoch: int):
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step: int) -> float:
        epoch, stage, stage_end = step // self.steps_per_epoch, 0, 1
        while epoch >= stage_end and stage < self.stages - 1:   # stage i ends after 3^0 + ... + 3^i epochs
            stage += 1
            stage_end += 3 ** stage
        return 10.0 ** (-stage / 7)


class Scheduler:
    """Sets ``optimizer.lr = base_lr · schedule(step)``; call ``step()`` once per optimizer step.
    ``start``: the optimizer steps already taken (a resumed run); ``base_lr``: default the
    optimizer's lr."""

    def __init__(self, optimizer: Optimizer, schedule, start: int = 0, base_lr: Optional[float] = None):
        self.optimizer, self.schedule = optimizer, schedule
        self.base_lr = optimizer.lr if base_lr is None else base_lr
        self.count = start
        optimizer.lr = self.base_lr * schedule(start)

    def step(self) -> None:
        self.count += 1
        self.optimizer.lr = self.base_lr * self.schedule(self.count)

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr, self.count = state["base_lr"], int(state["count"])
        self.optimizer.lr = self.base_lr * self.schedule(self.count)
