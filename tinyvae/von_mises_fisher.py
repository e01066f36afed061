"""The von Mises–Fisher distribution on the unit sphere S^{D−1} ⊂ R^D with a fixed concentration
κ, and the uniform distribution on the sphere: the hyperspherical VAE's posterior and prior
(textbook 21.4.2; Xu & Durrett 2018, Davidson et al. 2018).

  vMF(z; μ, κ) = C_D(κ) exp(κ μᵀz),   C_D(κ) = κ^{D/2−1} / ((2π)^{D/2} I_{D/2−1}(κ))

KL(vMF(μ, κ) ‖ U(S^{D−1})) = κ A_D(κ) + log C_D(κ) + log |S^{D−1}| with A_D = I_{D/2}/I_{D/2−1}
(the mean resultant length E[μᵀz]) depends on κ and D only: with κ fixed the rate is a constant
the optimiser cannot push to zero, which is the point (the latent cannot collapse).

Sampling (Wood 1994): w = μᵀz is drawn by rejection from its density ∝ e^{κw}(1 − w²)^{(D−3)/2},
a direction v uniformly on the sphere orthogonal to e₁, z' = (w, √(1 − w²) v) is then a draw
of vMF(e₁, κ), and the Householder reflection H that maps e₁ to μ gives z = H z'. With κ fixed,
w's law does not depend on any parameter, so the rejection step needs no gradient correction
(Davidson et al.'s correction term is for a learned κ) and ∂z/∂μ flows through H alone: z' is the
noise, as ε is for a Gaussian.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from .distributions import Reparameterized, like, register_kl
from .random import get_rng
from .tensor import Tensor


def log_bessel_iv(order: float, x: float) -> float:
    """log I_ν(x) for ν ≥ 0, x > 0, from the series I_ν(x) = Σ_k (x/2)^{2k+ν} / (k! Γ(k+ν+1))
    summed in log space, so it neither overflows for large x nor underflows for large ν (a
    hyperspherical latent of hundreds of dimensions). The terms rise to a peak near
    k ≈ x/2 and then fall faster than geometrically; the sum stops once they are e^−40 below it."""
    log_half = math.log(x / 2)
    terms, k, peak = [], 0, -math.inf
    while True:
        term = (2 * k + order) * log_half - math.lgamma(k + 1) - math.lgamma(k + order + 1)
        terms.append(term)
        peak = max(peak, term)
        if term < peak - 40 and k > x:
            break
        k += 1
    terms = np.array(terms)
    return float(peak + math.log(np.exp(terms - peak).sum()))


def mean_resultant_length(dim: int, kappa: float) -> float:
    """A_D(κ) = E[μᵀz] = I_{D/2}(κ) / I_{D/2−1}(κ)."""
    return math.exp(log_bessel_iv(dim / 2, kappa) - log_bessel_iv(dim / 2 - 1, kappa))


def log_sphere_area(dim: int) -> float:
    """log |S^{D−1}| = log(2 π^{D/2} / Γ(D/2))."""
    return math.log(2) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)


def log_normalizer(dim: int, kappa: float) -> float:
    """log C_D(κ) = (D/2 − 1) log κ − (D/2) log 2π − log I_{D/2−1}(κ)."""
    return (dim / 2 - 1) * math.log(kappa) - dim / 2 * math.log(2 * math.pi) - log_bessel_iv(dim / 2 - 1, kappa)


def kl_to_uniform(dim: int, kappa: float) -> float:
    """KL(vMF(μ, κ) ‖ U(S^{D−1})) = κ A_D(κ) + log C_D(κ) + log |S^{D−1}| (the same for every μ)."""
    return kappa * mean_resultant_length(dim, kappa) + log_normalizer(dim, kappa) + log_sphere_area(dim)


def sample_w(n: int, dim: int, kappa: float, rng=None) -> np.ndarray:
    """n draws of w = μᵀz by Wood's (1994) rejection sampler, float64 [n]. With
    b = (D − 1) / (2κ + √(4κ² + (D − 1)²)), x₀ = (1 − b)/(1 + b), c = κx₀ + (D − 1) log(1 − x₀²):
    propose w = (1 − (1 + b)ε) / (1 − (1 − b)ε), ε ~ Beta((D−1)/2, (D−1)/2), and accept when
    κw + (D − 1) log(1 − x₀w) − c ≥ log u, u ~ U(0, 1). Every pending draw is proposed at once."""
    rng = get_rng(rng)
    m = dim - 1
    b = m / (2 * kappa + math.sqrt(4 * kappa ** 2 + m ** 2))
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + m * math.log(1 - x0 ** 2)
    w, pending = np.empty(n), np.arange(n)
    while pending.size:
        eps = rng.beta(m / 2, m / 2, pending.size)
        proposal = (1 - (1 + b) * eps) / (1 - (1 - b) * eps)
        accept = kappa * proposal + m * np.log(1 - x0 * proposal) - c >= np.log(rng.random(pending.size))
        w[pending[accept]] = proposal[accept]
        pending = pending[~accept]
    return w


class VonMisesFisher(Reparameterized):
    """vMF(μ, κ) over the last axis: μ [..., D] unit vectors, κ > 0 a fixed number."""

    def __init__(self, mu: Tensor, kappa: float):
        self.mu, self.kappa = mu, kappa
        self.dim = mu.shape[-1]

    def params(self) -> tuple:
        return (self.mu,)

    def rebuild(self, mu: Tensor) -> "VonMisesFisher":
        return VonMisesFisher(mu, self.kappa)

    def noise(self, lead: tuple = (), rng=None) -> Tensor:
        """z' ~ vMF(e₁, κ), [*lead, ..., D]: w on the first axis, √(1 − w²)·v on the others,
        v uniform on S^{D−2}."""
        rng = get_rng(rng)
        shape = (*lead, *self.mu.shape)
        w = sample_w(int(np.prod(shape[:-1])), self.dim, self.kappa, rng).reshape(*shape[:-1], 1)
        v = rng.standard_normal((*shape[:-1], self.dim - 1))
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
        return like(np.concatenate([w, np.sqrt(np.maximum(1 - w * w, 0.0)) * v], axis=-1), self.mu)

    def rsample_and_log_prob(self, eps: Tensor) -> tuple:
        """(z = H z' with H = I − 2uuᵀ, u = (e₁ − μ)/‖e₁ − μ‖ the reflection taking e₁ to μ;
        log q(z) [..., 1]). μ = e₁ gives u = 0 and H = I, as it should."""
        e1 = np.zeros(self.dim, self.mu.dtype)
        e1[0] = 1
        u = like(e1, self.mu) - self.mu
        u = u / (F.sqrt(F.sum(u * u, axis=-1, keepdims=True)) + 1e-12)
        z = eps - 2 * u * F.sum(u * eps, axis=-1, keepdims=True)
        return z, self.log_prob(z)

    def log_prob(self, z) -> Tensor:
        """log C_D(κ) + κ μᵀz, [..., 1] (the density does not split into dimensions)."""
        return log_normalizer(self.dim, self.kappa) + self.kappa * F.sum(self.mu * z, axis=-1, keepdims=True)


class UniformSphere:
    """The uniform distribution on S^{D−1}: the hyperspherical VAE's prior."""

    def __init__(self, dim: int):
        self.dim = dim

    def log_prob(self, z) -> Tensor:
        """−log |S^{D−1}|, [..., 1], whatever the point."""
        return like(np.full((*z.shape[:-1], 1), -log_sphere_area(self.dim)), z)

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n points, float64 [n, D]: normalised standard normal draws."""
        g = get_rng(rng).standard_normal((n, self.dim))
        return g / np.linalg.norm(g, axis=-1, keepdims=True)


@register_kl(VonMisesFisher, UniformSphere)
def _kl_vmf_uniform(q: VonMisesFisher, p: UniformSphere) -> Tensor:
    """The closed form (module docstring) for each example, [..., 1]: a constant, no gradient."""
    return like(np.full((*q.mu.shape[:-1], 1), kl_to_uniform(q.dim, q.kappa)), q.mu)
