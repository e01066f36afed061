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


def like(array: np.ndarray, t: Tensor) -> Tensor:
    """A NumPy array (noise drawn on the host) as a constant tensor with t's dtype and device."""
    return Tensor(backend.to_device(np.asarray(array).astype(t.dtype), t.device))


def one_hot_like(labels: np.ndarray, classes: int, t: Tensor) -> Tensor:
    """Labels [N] (NumPy ints) as constant one-hot rows [N, classes] with t's dtype and device."""
    return like(np.eye(classes)[np.asarray(labels)], t)


def standard_normal_like(t: Tensor, rng: Optional[np.random.Generator] = None) -> Tensor:
    """ε ~ N(0, I) with t's shape, dtype and device, from a seeded NumPy generator."""
    return like(get_rng(rng).standard_normal(t.shape), t)


class Reparameterized:
    """A posterior z = T(ε) of standard normal noise ε (the Gaussians and the flow):
    ``noise(lead)`` draws ε [*lead, ..., D] for ``rsample_and_log_prob``, which gives z and
    log q(z); the von Mises–Fisher posterior has the same two methods with its own noise."""

    def noise(self, lead: tuple = (), rng=None) -> Tensor:
        location = self.params()[0]
        return like(get_rng(rng).standard_normal((*lead, *location.shape)), location)

    def rsample(self, eps: Optional[Tensor] = None, rng=None) -> Tensor:
        return self.rsample_and_log_prob(self.noise(rng=rng) if eps is None else eps)[0]


class Normal(Reparameterized):
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


def product_of_experts(experts: list) -> Normal:
    """The normalised product of diagonal Gaussian experts, Π_i N(μ_i, σ_i²) ∝ N(μ, σ²) with
    precision 1/σ² = Σ_i 1/σ_i² and mean μ = σ² Σ_i μ_i/σ_i² per dimension (textbook 21.3.3,
    Wu & Goodman 2018), computed as ℓ = −logsumexp_i(−ℓ_i) and μ = Σ_i softmax_i(−ℓ_i) μ_i,
    which no ℓ can overflow. The experts' shapes must agree (a prior expert included)."""
    precisions = F.stack([-e.logvar for e in experts], axis=0)
    means = F.stack([e.mu for e in experts], axis=0)
    return Normal(F.sum(F.softmax(precisions, axis=0) * means, axis=0), -F.logsumexp(precisions, axis=0), clamp=False)


class FullNormal(Reparameterized):
    """Gaussian N(μ, LLᵀ) over the last axis with a full covariance (textbook 21.2.5.2): L
    lower triangular with a positive diagonal (the Cholesky factor), z = μ + Lε. L is held as
    its ``diagonal`` [..., D] and its ``lower`` triangle [..., D(D − 1)/2] row by row (L_21,
    L_31, L_32, L_41, ...), which is what an encoder outputs; the products with L are taken
    from these, never forming the D×D matrix (``scale_tril`` forms it, for those who ask)."""

    def __init__(self, mu: Tensor, diagonal: Tensor, lower: Tensor):
        self.mu, self.diagonal, self.lower = mu, diagonal, lower
        self.dim = mu.shape[-1]

    @classmethod
    def from_scale_tril(cls, mu: Tensor, scale_tril: Tensor) -> "FullNormal":
        """From L itself [..., D, D] (its entries above the diagonal are ignored)."""
        d = mu.shape[-1]
        rows, cols = np.tril_indices(d, -1)
        flat = F.reshape(scale_tril, *scale_tril.shape[:-2], d * d)
        return cls(mu, F.diagonal(scale_tril, 0, -2, -1), flat[..., rows * d + cols])

    def params(self) -> tuple:
        return self.mu, self.diagonal, self.lower

    def rebuild(self, mu: Tensor, diagonal: Tensor, lower: Tensor) -> "FullNormal":
        return FullNormal(mu, diagonal, lower)

    @property
    def scale_tril(self) -> Tensor:
        """L [..., D, D]: zeros, diagonal and lower entries gathered into place by one index
        that is a permutation (so its backward is an assignment)."""
        d, lead = self.dim, self.lower.shape[:-1]
        zeros = like(np.zeros((*lead, d * (d - 1) // 2)), self.lower)
        entries = F.concat([zeros, self.diagonal, self.lower], axis=-1)
        index = np.zeros((d, d), np.int64)
        index[np.triu_indices(d, 1)] = np.arange(d * (d - 1) // 2)
        index[np.diag_indices(d)] = d * (d - 1) // 2 + np.arange(d)
        index[np.tril_indices(d, -1)] = d * (d + 1) // 2 + np.arange(d * (d - 1) // 2)
        return F.reshape(entries[..., index.reshape(-1)], *lead, d, d)

    def _row_sums(self, entries: Tensor) -> Tensor:
        """Σ_{j<i} of lower-triangle values [..., D(D − 1)/2] over each row i: [..., D] (a product
        with the constant 0/1 matrix that says which row each entry is in)."""
        rows = np.tril_indices(self.dim, -1)[0]
        return F.matmul(entries, like(np.eye(self.dim)[rows], entries))

    def _log_diag(self) -> Tensor:
        """log L_ii, [..., D]."""
        return F.log(self.diagonal)

    def rsample_and_log_prob(self, eps: Tensor) -> tuple:
        """(z = μ + Lε: μ_i + L_ii ε_i + Σ_{j<i} L_ij ε_j; log q(z)'s terms per dimension:
        −½(ε_i² + log 2π) − log L_ii), for noise ε [..., N, D] of any leading shape (log|det L|
        = Σ_i log L_ii)."""
        cols = np.tril_indices(self.dim, -1)[1]
        z = self.mu + self.diagonal * eps + self._row_sums(self.lower * eps[..., cols])
        return z, -0.5 * (eps * eps + _LOG_2PI) - self._log_diag()

    def log_prob(self, z) -> Tensor:
        """log N(z; μ, LLᵀ)'s terms per dimension, through the triangular solve u = L⁻¹(z − μ)
        (forward substitution, row by row; row i's lower entries start at i(i − 1)/2):
        −½(u_i² + log 2π) − log L_ii."""
        d, rows = z - self.mu, []
        for i in range(self.dim):
            start = i * (i - 1) // 2
            done = F.sum(self.lower[..., start:start + i] * F.stack(rows, axis=-1), axis=-1) if rows else 0.0
            rows.append((d[..., i] - done) / self.diagonal[..., i])
        u = F.stack(rows, axis=-1)
        return -0.5 * (u * u + _LOG_2PI) - self._log_diag()


class IAFNormal(Reparameterized):
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

    def sample(self, n: int, rng=None) -> np.ndarray:
        """n draws, float64 [n, dim]."""
        return get_rng(rng).standard_normal((n, self.dim))


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
    return like(-np.log(e), t)


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
    squares = q.diagonal * q.diagonal + q._row_sums(q.lower * q.lower)
    return 0.5 * (squares + q.mu * q.mu - 1) - q._log_diag()


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
    z, log_q = q.rsample_and_log_prob(q.noise(rng=rng))                  # a flow: one-sample KL
    return z, log_q - p.log_prob(z)
