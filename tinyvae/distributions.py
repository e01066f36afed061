"""Probability distributions for VAEs. ``log_prob`` is elementwise (sum it over the event
axes yourself, as ``objectives`` does over pixels and latent dimensions).

Log-variances are soft-clamped to (−LOGVAR_LIMIT, LOGVAR_LIMIT) by ℓ ↦ L·tanh(ℓ/L), smooth
and nearly the identity for |ℓ| ≪ L, so exp(ℓ) can never overflow (the fused kernel is
exact over [−30, 30]).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from . import backend
from . import functional as F
from .random import get_rng
from .tensor import Tensor

LOGVAR_LIMIT = 20.0
_LOG_2PI = math.log(2 * math.pi)


def soft_clamp_logvar(logvar: Tensor) -> Tensor:
    """L·tanh(ℓ/L) with L = LOGVAR_LIMIT."""
    return LOGVAR_LIMIT * F.tanh(logvar / LOGVAR_LIMIT)


def standard_normal_like(t: Tensor, rng: Optional[np.random.Generator] = None) -> Tensor:
    """ε ~ N(0, I) with t's shape, dtype and device, from a seeded NumPy generator."""
    eps = get_rng(rng).standard_normal(t.shape).astype(t.dtype)
    return Tensor(backend.to_device(eps, t.device))


class Normal:
    """Diagonal Gaussian N(μ, exp(ℓ)) over the last axis."""

    def __init__(self, mu: Tensor, logvar: Tensor, clamp: bool = True):
        self.mu = mu
        self.logvar = soft_clamp_logvar(logvar) if clamp else logvar

    def rsample(self, eps: Optional[Tensor] = None, rng=None) -> Tensor:
        """z = μ + exp(½ℓ) ⊙ ε (reparameterisation; differentiable in μ and ℓ)."""
        return self.rsample_and_kl(eps, rng)[0]

    def rsample_and_kl(self, eps: Optional[Tensor] = None, rng=None, per_dim: bool = False) -> tuple:
        """(z, KL(q‖N(0, I))) from one pass of the fused kernel; KL summed over the last axis
        unless ``per_dim``."""
        if eps is None:
            eps = standard_normal_like(self.mu, rng)
        return F.reparameterize_kl(self.mu, self.logvar, eps, per_element=per_dim)

    def kl_standard(self, per_dim: bool = False) -> Tensor:
        """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_d (μ² + σ² − 1 − log σ²), closed form."""
        zeros = Tensor(backend.array_module(self.mu.data).zeros(self.mu.shape, self.mu.dtype))
        return F.reparameterize_kl(self.mu, self.logvar, zeros, per_element=per_dim)[1]

    def kl(self, other: "Normal") -> Tensor:
        """KL(self ‖ other) = ½ Σ_d (ℓ₂ − ℓ₁ + (e^ℓ₁ + (μ₁ − μ₂)²) e^−ℓ₂ − 1), per element summed
        over the last axis."""
        d = self.mu - other.mu
        per_dim = 0.5 * (other.logvar - self.logvar + (F.exp(self.logvar) + d * d) * F.exp(-other.logvar) - 1)
        return F.sum(per_dim, axis=-1)

    def log_prob(self, x) -> Tensor:
        """log N(x; μ, e^ℓ) = −½ (log 2π + ℓ + (x − μ)² e^−ℓ), elementwise."""
        return -F.gaussian_nll(x, self.mu, self.logvar, reduction="none")

    def entropy(self) -> Tensor:
        """½ Σ_d (1 + log 2π + ℓ), over the last axis."""
        return F.sum(0.5 * (1 + _LOG_2PI + self.logvar), axis=-1)


class Bernoulli:
    """Independent Bernoulli pixels with logits x: p = σ(x)."""

    def __init__(self, logits: Tensor):
        self.logits = logits

    def log_prob(self, x) -> Tensor:
        """t log σ(x) + (1 − t) log(1 − σ(x)), elementwise, stable for any logit."""
        return -F.binary_cross_entropy_with_logits(self.logits, x, reduction="none")

    @property
    def mean(self) -> Tensor:
        return F.sigmoid(self.logits)

    def sample(self, rng=None) -> np.ndarray:
        p = backend.to_device(self.mean.data, "cpu")
        return (get_rng(rng).random(p.shape) < p).astype(p.dtype)
