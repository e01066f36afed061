"""Probability distributions for VAEs. ``log_prob`` is elementwise (sum it over the event
axes yourself, as ``objectives`` does over pixels and latent dimensions).

KL divergences are looked up by the pair of types (``kl``, ``register_kl``): a closed form
where one is registered, else a one-sample Monte-Carlo estimate log q(z) − log p(z) at the
z given. ``sample_and_kl`` draws z ~ q by reparameterisation together with KL(q ‖ p); for a
diagonal Gaussian against N(0, I) both come from one pass of the fused kernel.

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

    def params(self) -> tuple:
        """The tensors the distribution is made of; ``q.rebuild(*q.params())`` makes it again
        (from recomputed tensors: the chunked IWAE bound's backward)."""
        return self.mu, self.logvar

    def rebuild(self, mu: Tensor, logvar: Tensor) -> "Normal":
        return Normal(mu, logvar, clamp=False)

    def rsample(self, eps: Optional[Tensor] = None, rng=None) -> Tensor:
        """z = μ + exp(½ℓ) ⊙ ε (reparameterisation; differentiable in μ and ℓ)."""
        return self.rsample_and_kl(eps, rng)[0]

    def rsample_and_log_prob(self, eps: Tensor) -> tuple:
        """(z = μ + exp(½ℓ) ⊙ ε, log q(z) per dimension) for noise ε of any leading shape."""
        z = self.mu + F.exp(0.5 * self.logvar) * eps
        return z, self.log_prob(z)

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
        """KL(self ‖ other) summed over the last axis (the closed form registered below)."""
        return F.sum(kl(self, other), axis=-1)

    def log_prob(self, x) -> Tensor:
        """log N(x; μ, e^ℓ) = −½ (log 2π + ℓ + (x − μ)² e^−ℓ), elementwise."""
        return -F.gaussian_nll(x, self.mu, self.logvar, reduction="none")

    def entropy(self) -> Tensor:
        """½ Σ_d (1 + log 2π + ℓ), over the last axis."""
        return F.sum(0.5 * (1 + _LOG_2PI + self.logvar), axis=-1)


class FullNormal:
    """Gaussian N(μ, LLᵀ) over the last axis with a full covariance (textbook 21.2.5.2): L
    [..., D, D] lower triangular with a positive diagonal (the Cholesky factor), z = μ + Lε."""

    def __init__(self, mu: Tensor, scale_tril: Tensor):
        self.mu, self.scale_tril = mu, scale_tril

    def params(self) -> tuple:
        return self.mu, self.scale_tril

    def rebuild(self, mu: Tensor, scale_tril: Tensor) -> "FullNormal":
        return FullNormal(mu, scale_tril)

    def _log_diag(self) -> Tensor:
        """log L_ii, [..., D]."""
        return F.log(F.diagonal(self.scale_tril, 0, -2, -1))

    def rsample(self, eps: Optional[Tensor] = None, rng=None) -> Tensor:
        if eps is None:
            eps = standard_normal_like(self.mu, rng)
        return self.rsample_and_log_prob(eps)[0]

    def rsample_and_log_prob(self, eps: Tensor) -> tuple:
        """(z = μ + Lε, log q(z)'s terms per dimension: −½(ε_i² + log 2π) − log L_ii), for
        noise ε [..., N, D] of any leading shape (log|det L| = Σ_i log L_ii)."""
        z = self.mu + F.matmul(self.scale_tril, eps[..., None])[..., 0]
        return z, -0.5 * (eps * eps + _LOG_2PI) - self._log_diag()

    def log_prob(self, z) -> Tensor:
        """log N(z; μ, LLᵀ)'s terms per dimension, through the triangular solve u = L⁻¹(z − μ)
        (forward substitution, row by row): −½(u_i² + log 2π) − log L_ii."""
        d, rows = z - self.mu, []
        for i in range(self.mu.shape[-1]):
            done = F.sum(self.scale_tril[..., i, :i] * F.stack(rows, axis=-1), axis=-1) if rows else 0.0
            rows.append((d[..., i] - done) / self.scale_tril[..., i, i])
        u = F.stack(rows, axis=-1)
        return -0.5 * (u * u + _LOG_2PI) - self._log_diag()


class IAFNormal:
    """The inverse autoregressive flow posterior (Kingma et al. 2016; textbook 21.2.5.3):
    z_0 = μ + σ ⊙ ε, then for each step t, with [m_t, s_t] = MADE_t(z_{t−1}, h) (h: a context
    from the encoder) and the gate g_t = sigmoid(s_t + 1) (the +1 keeps early steps near the
    identity),

      z_t = g_t ⊙ z_{t−1} + (1 − g_t) ⊙ m_t,   log q(z_T) = log N(ε; 0, I) − Σ_i log σ_i − Σ_t Σ_i log g_t,i

    (each step's Jacobian is triangular with diagonal g_t, so its log-determinant is Σ log g).
    ``steps``: the MADE modules, their orderings alternating. No closed-form KL: the ELBO's
    KL is the one-sample log q(z) − log p(z)."""

    def __init__(self, loc: Tensor, logvar: Tensor, context: Tensor, steps, clamp: bool = True):
        self.loc, self.context, self.steps = loc, context, steps
        self.logvar = soft_clamp_logvar(logvar) if clamp else logvar
        self._mu = None

    def params(self) -> tuple:
        return self.loc, self.logvar, self.context

    def rebuild(self, loc: Tensor, logvar: Tensor, context: Tensor) -> "IAFNormal":
        return IAFNormal(loc, logvar, context, self.steps, clamp=False)

    @property
    def mu(self) -> Tensor:
        """The flow's image of μ (ε = 0): the posterior's centre, what ``encode`` reports."""
        if self._mu is None:
            zeros = Tensor(backend.array_module(self.loc.data).zeros(self.loc.shape, self.loc.dtype))
            self._mu = self.rsample_and_log_prob(zeros)[0]
        return self._mu

    def rsample(self, eps: Optional[Tensor] = None, rng=None) -> Tensor:
        if eps is None:
            eps = standard_normal_like(self.loc, rng)
        return self.rsample_and_log_prob(eps)[0]

    def rsample_and_log_prob(self, eps: Tensor) -> tuple:
        """(z_T, log q(z_T)'s terms per dimension) for noise ε [..., N, D]."""
        z = self.loc + F.exp(0.5 * self.logvar) * eps
        log_q = -0.5 * (eps * eps + _LOG_2PI) - 0.5 * self.logvar
        lead, d = z.shape[:-1], z.shape[-1]
        context = F.reshape(F.broadcast_to(self.context, *lead, self.context.shape[-1]), -1, self.context.shape[-1])
        for step in self.steps:
            m, s = step(F.reshape(z, -1, d), context)
            s = F.reshape(s, *lead, d) + 1.0
            gate = F.sigmoid(s)
            z = gate * z + (1 - gate) * F.reshape(m, *lead, d)
            log_q = log_q - F.log_sigmoid(s)
        return z, log_q


class StandardNormal:
    """N(0, I), the VAE's prior, over vectors of ``dim`` numbers."""

    def __init__(self, dim: int):
        self.dim = dim

    def log_prob(self, z) -> Tensor:
        """−½ (z² + log 2π), elementwise."""
        return -0.5 * (z * z + _LOG_2PI)


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


def gumbel_like(t: Tensor, rng: Optional[np.random.Generator] = None) -> Tensor:
    """g ~ Gumbel(0, 1) with t's shape, dtype and device: g = −log E, E ~ Exp(1) (the same as
    −log(−log U), U ~ U(0, 1)), from a seeded NumPy generator; E is kept ≥ the smallest normal
    number so g stays finite."""
    e = np.maximum(get_rng(rng).standard_exponential(t.shape), np.finfo(np.float64).tiny)
    return Tensor(backend.to_device((-np.log(e)).astype(t.dtype), t.device))


class Categorical:
    """Independent categorical variables [..., V] over C classes, from logits [..., V, C];
    values are one-hot vectors [..., V, C]."""

    def __init__(self, logits: Tensor):
        self.logits = logits
        self.log_probs = F.log_softmax(logits, axis=-1)

    @property
    def probs(self) -> Tensor:
        return F.exp(self.log_probs)

    def log_prob(self, one_hot) -> Tensor:
        """log q(z_v) for each variable: Σ_c z_vc log q_vc, [..., V]."""
        return F.sum(one_hot * self.log_probs, axis=-1)

    def rsample(self, tau: float, hard: bool = False, rng=None) -> Tensor:
        """The Gumbel-softmax (concrete) relaxation y = softmax((log q + g) / τ), g ~ Gumbel
        (Jang et al. 2017, eq. 1; Maddison et al. 2017), differentiable in the logits; with
        ``hard``, the one-hot of its argmax forward and y's gradient backward (straight-through)."""
        y = F.softmax((self.log_probs + gumbel_like(self.log_probs, rng)) / tau, axis=-1)
        return F.one_hot_straight_through(y) if hard else y

    def sample(self, rng=None, shape: tuple = ()) -> Tensor:
        """Exact one-hot draws [*shape, ..., V, C] (the Gumbel-max trick: argmax of log q + g)."""
        log_probs = F.broadcast_to(self.log_probs.detach(), *shape, *self.log_probs.shape)
        return F.one_hot_straight_through(log_probs + gumbel_like(log_probs, rng)).detach()


class UniformCategorical:
    """The uniform prior over C classes for each of V variables."""

    def __init__(self, variables: int, classes: int):
        self.variables, self.classes = variables, classes

    def log_prob(self, one_hot) -> Tensor:
        """−log C for each variable [..., V], whatever the value."""
        return Tensor(backend.array_module(one_hot.data).full(one_hot.shape[:-1], -math.log(self.classes),
                                                              one_hot.dtype))


# ---- KL divergences by the pair of types ----------------------------------------------------

_KL: dict = {}


def register_kl(q_type: type, p_type: type):
    """Decorator: ``fn(q, p)`` is the closed-form KL(q ‖ p) per dimension [..., D]."""
    def add(fn):
        _KL[(q_type, p_type)] = fn
        return fn
    return add


@register_kl(Normal, StandardNormal)
def _kl_normal_standard(q: Normal, p: StandardNormal) -> Tensor:
    return q.kl_standard(per_dim=True)


@register_kl(Normal, Normal)
def _kl_normal_normal(q: Normal, p: Normal) -> Tensor:
    """½ (ℓ₂ − ℓ₁ + (e^ℓ₁ + (μ₁ − μ₂)²) e^−ℓ₂ − 1) per dimension."""
    d = q.mu - p.mu
    return 0.5 * (p.logvar - q.logvar + (F.exp(q.logvar) + d * d) * F.exp(-p.logvar) - 1)


@register_kl(Categorical, UniformCategorical)
def _kl_categorical_uniform(q: Categorical, p: UniformCategorical) -> Tensor:
    """Σ_c q_c (log q_c + log C) per variable [..., V] (Jang et al. 2017, §3.2)."""
    return F.sum(q.probs * (q.log_probs + math.log(p.classes)), axis=-1)


@register_kl(FullNormal, StandardNormal)
def _kl_full_standard(q: FullNormal, p: StandardNormal) -> Tensor:
    """KL(N(μ, LLᵀ) ‖ N(0, I)) = ½ (tr LLᵀ + μᵀμ − D − log det LLᵀ) in closed form,
    split into one term per row i: ½ (Σ_j L_ij² + μ_i² − 1 − 2 log L_ii), which sum to it."""
    return 0.5 * (F.sum(q.scale_tril * q.scale_tril, axis=-1) + q.mu * q.mu - 1) - q._log_diag()


def kl(q, p, z: Optional[Tensor] = None) -> Tensor:
    """KL(q ‖ p) per dimension: the registered closed form for (type(q), type(p)), else the
    one-sample estimate log q(z) − log p(z) at ``z`` (a sample of q; needed then)."""
    closed = _KL.get((type(q), type(p)))
    if closed is not None:
        return closed(q, p)
    if z is None:
        raise TypeError(f"no closed-form KL({type(q).__name__} ‖ {type(p).__name__}); pass a sample z of q "
                        f"for a Monte-Carlo estimate")
    return q.log_prob(z) - p.log_prob(z)


def sample_and_kl(q, p, rng=None) -> tuple:
    """(z ~ q by reparameterisation, KL(q ‖ p) per dimension). A diagonal Gaussian against
    N(0, I) takes both from one pass of the fused kernel (kernels/reparam_kl.py); a pair with
    no closed form (a flow) gives the one-sample estimate log q(z) − log p(z), its terms per
    dimension."""
    if type(q) is Normal and type(p) is StandardNormal:
        return q.rsample_and_kl(rng=rng, per_dim=True)
    if (type(q), type(p)) in _KL:
        z = q.rsample(rng=rng)
        return z, kl(q, p, z)
    z, log_q = q.rsample_and_log_prob(standard_normal_like(q.params()[0], rng))   # a flow: one-sample KL
    return z, log_q - p.log_prob(z)
