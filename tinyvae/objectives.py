"""VAE objectives, per example, summed over pixels and latent dimensions, in nats.

  ELBO(x)     = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z))                     (analytic KL)
  MC ELBO(x)  = 1/S Σ_s [log p(x|z_s) + log p(z_s) − log q(z_s|x)]
  IWAE_K(x)   = log 1/K Σ_k w_k,  w_k = p(x, z_k) / q(z_k|x)             (Burda et al. 2016)

IWAE_K ≥ ELBO, increases with K, and → log p(x); with K = 5000 it is the literature's
estimate of test log-likelihood (NLL = −IWAE_5000).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from . import functional as F
from .distributions import sample_and_kl
from .tensor import Tensor


def per_example(t: Tensor) -> Tensor:
    """Sum every axis but the first (pixels, latent dimensions) → [N]."""
    return F.sum(t, axis=tuple(range(1, t.ndim))) if t.ndim > 1 else t


def elbo_terms(model, x: Tensor, rng=None, observed: Optional[Tensor] = None) -> dict:
    """One-sample reconstruction log p(x|z) and KL(q(z|x) ‖ p(z)), per example [N], plus the
    per-dimension KL [N, latent] (for free bits), the posterior q (its ``mu`` for active
    units: a flow's costs a pass, so it is only computed when asked for) and the sample z.
    ``model`` gives the three distributions: ``posterior(x)``, ``prior()`` and
    ``likelihood(z)``; the KL is the pair's registered closed form (distributions.kl).
    ``observed`` (0/1, x's shape): the reconstruction counts those entries of x only,
    log p(x_obs|z) (Mattei & Frellsen 2019; the model sees x with the others zeroed)."""
    q = model.posterior(x)
    z, kl_dims = sample_and_kl(q, model.prior(), rng)
    recon = per_example(_observed(model.likelihood(z).log_prob(x), observed))
    kl = F.sum(kl_dims, axis=-1)
    return {"recon": recon, "kl": kl, "kl_dims": kl_dims, "elbo": recon - kl, "z": z, "q": q}


def training_loss(terms: dict, beta: float = 1.0, free_bits: float = 0.0) -> Tensor:
    """Mean over the batch of −(log p(x|z) − β·KL), with free bits (Kingma et al. 2016) as a
    per-dimension hinge on the batch-averaged KL: Σ_i max(λ, E_batch KL_i)."""
    recon = F.mean(terms["recon"])
    if free_bits > 0:
        kl = F.sum(F.maximum(F.mean(terms["kl_dims"], axis=0), free_bits))
    else:
        kl = F.mean(terms["kl"])
    return -(recon - beta * kl)


def _observed(log_p: Tensor, observed: Optional[Tensor]) -> Tensor:
    """log p of the observed entries only (every entry when ``observed`` is None)."""
    return log_p if observed is None else log_p * observed


def importance_samples(model, x: Tensor, k: int, rng=None, q=None, observed: Optional[Tensor] = None) -> tuple:
    """(log w [k, N], p(x|z) of the k·N samples) with log w = log p(x|z) + log p(z) − log q(z|x)
    for k samples per example (``q``: the posterior q(z|x), if already computed; ``observed``:
    as in ``elbo_terms``). The k·N samples are decoded together, as rows ordered sample-major
    (the noise is the same as k draws of [N, D] one after another), which is the order of the
    likelihood's rows."""
    q, prior = q if q is not None else model.posterior(x), model.prior()
    n = x.shape[0]
    z, log_q = q.rsample_and_log_prob(q.noise((k,), rng))                   # [k, N, D]
    log_q = F.sum(log_q, axis=-1)
    log_p_z = F.sum(prior.log_prob(z), axis=-1)
    rows = F.reshape(z, k * n, z.shape[-1])

    def tiled(t: Tensor) -> Tensor:
        return F.reshape(F.broadcast_to(t, k, *t.shape), k * n, *t.shape[1:])
    likelihood = model.likelihood(rows)
    log_p_x = per_example(_observed(likelihood.log_prob(tiled(x)), None if observed is None else tiled(observed)))
    return F.reshape(log_p_x, k, n) + log_p_z - log_q, likelihood


def log_weights(model, x: Tensor, k: int, rng=None, q=None, observed: Optional[Tensor] = None) -> Tensor:
    """log w = log p(x|z) + log p(z) − log q(z|x) for k samples per example: [k, N]
    (``importance_samples``)."""
    return importance_samples(model, x, k, rng, q, observed)[0]


def mc_elbo(model, x: Tensor, samples: int = 1, rng=None) -> Tensor:
    """Monte-Carlo ELBO per example [N]: the mean of the log weights."""
    return F.mean(log_weights(model, x, samples, rng), axis=0)


def iwae_bound(model, x: Tensor, k: int, rng=None, chunk: int = 100, observed: Optional[Tensor] = None) -> Tensor:
    """IWAE_k per example [N], differentiable (the IWAE training objective), in memory
    O(chunk · N) whatever k is: logsumexp over k in chunks of ``chunk`` samples, and with more
    than one chunk each chunk's graph is recomputed in backward rather than kept (F.recompute),
    so training with k = 5000 needs the memory of k = ``chunk``. The gradient is the full
    graph's, Σ_k w̃_k ∇ log w_k with w̃ = softmax_k(log w). ``observed``: as in ``elbo_terms``
    (the MIWAE bound)."""
    q = model.posterior(x)

    def chunk_bound(*q_params: Tensor, take: int) -> Tensor:
        return F.logsumexp(log_weights(model, x, take, rng, q.rebuild(*q_params), observed), axis=0)

    takes = [min(chunk, k - done) for done in range(0, k, chunk)]
    if len(takes) == 1:
        total = chunk_bound(*q.params(), take=k)
    else:
        params = list(model.parameters())
        parts = [F.recompute(lambda *q_params, take=take: chunk_bound(*q_params, take=take), q.params(),
                             params, rng) for take in takes]
        total = F.logsumexp(F.stack(parts, axis=0), axis=0)
    return total - math.log(k)


MMD_KERNELS = ("imq", "rbf")


def mmd(a: Tensor, b: Tensor, kernel: str = "imq", scale: Optional[float] = None) -> Tensor:
    """The unbiased estimate of MMD²(P, Q) from samples a [n, d] ~ P and b [m, d] ~ Q (Gretton
    et al. 2012, eq. 3):

      1/(n(n−1)) Σ_{i≠j} k(a_i, a_j) + 1/(m(m−1)) Σ_{i≠j} k(b_i, b_j) − 2/(nm) Σ_ij k(a_i, b_j)

    with k the inverse multiquadric C / (C + ‖u − v‖²) or the RBF exp(−‖u − v‖² / C), C = 2d
    by default (Zhao et al.'s InfoVAE, and Tolstikhin et al. 2018 for a unit Gaussian prior)."""
    if kernel not in MMD_KERNELS:
        raise ValueError(f"unknown MMD kernel {kernel!r}; expected {', '.join(MMD_KERNELS)}")
    c = scale if scale is not None else 2.0 * a.shape[1]

    def gram(u: Tensor, v: Tensor) -> Tensor:
        d2 = F.sum(u * u, axis=1, keepdims=True) + F.sum(v * v, axis=1)[None] - 2.0 * F.matmul(u, v.T)
        d2 = F.maximum(d2, 0.0)                                      # rounding can dip below 0
        return c / (c + d2) if kernel == "imq" else F.exp(-d2 / c)

    def within(u: Tensor) -> Tensor:
        n = u.shape[0]
        k = gram(u, u)
        return (F.sum(k) - F.sum(F.diagonal(k))) / (n * (n - 1))
    return within(a) + within(b) - 2.0 * F.mean(gram(a, b))


def active_units(mus: np.ndarray, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z_d]) > 0.01
    (Burda et al. 2016)."""
    return int((np.var(mus, axis=0) > threshold).sum())


def total_correlation(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray, batch: int = 500,
                      rows: int = 20) -> float:
    """TC(z) = KL(q(z) ‖ Π_k q(z_k)) = E_q(z)[log q(z) − Σ_k log q(z_k)] of the aggregate posterior
    q(z) = 1/N Σ_n q(z|x_n) of N examples with diagonal Gaussian posteriors N(μ_n, e^ℓ_n) and
    one sample z_n of each, float64 arrays [N, D] (textbook 21.3.1.2; Chen et al. 2018).

    Minibatch-weighted sampling (Chen et al. 2018, App. C): the examples are split into
    minibatches of about ``batch``, and within one of M examples each density is the weighted
    mixture of the batch's posteriors, log q(z_i) ≈ log Σ_j w_ij q(z_i|x_j) (and so for each
    marginal q(z_ik)), with the stratified weights w_ii = 1/N for z_i's own posterior and
    w_ij = (N − 1)/(N(M − 1)) for the others, which make the estimate of q(z_i) unbiased (and
    exact when the batch is all N). The mean over i of log q(z_i) − Σ_k log q(z_ik), in nats;
    ``rows`` of z at a time bound the memory to rows·M·D numbers."""
    n = len(z)
    total = 0.0
    for part in np.array_split(np.arange(n), max(1, round(n / batch))):
        m = len(part)                       # 1 only when N = 1: q(z) is then q(z|x_1), TC = 0
        log_w = np.full((m, m), math.log((n - 1) / (n * (m - 1))) if m > 1 else 0.0)
        np.fill_diagonal(log_w, -math.log(n))
        zb, mb = z[part], mu[part]
        half_precision, log_norm = 0.5 * np.exp(-logvar[part]), -0.5 * (math.log(2 * math.pi) + logvar[part])
        for start in range(0, m, rows):
            d = zb[start:start + rows, None, :] - mb[None]                            # [r, M, D]
            log_q = log_norm - d * d * half_precision
            w = log_w[start:start + rows]
            joint = _logsumexp(log_q.sum(axis=2) + w, axis=1)
            marginals = _logsumexp(log_q + w[:, :, None], axis=1).sum(axis=1)
            total += float((joint - marginals).sum())
    return total / n


def mutual_information(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray, rows: int = 100) -> float:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) − log q(z)] with q(z) = 1/N Σ_j q(z|x_j), the
    aggregate posterior of N examples with diagonal Gaussian posteriors N(μ_j, e^ℓ_j), from one
    sample z_i of each (float64 [N, D]); the estimate He et al. 2019 watch to stop aggressive
    training (textbook 21.4.5). Between 0 (every posterior alike) and log N (none overlapping)."""
    n, d = mu.shape
    half_precision, log_norm = 0.5 * np.exp(-logvar), -0.5 * (math.log(2 * math.pi) + logvar)
    own = (log_norm - (z - mu) ** 2 * half_precision).sum(axis=1)
    mixture = np.concatenate([
        _logsumexp((log_norm[None] - (z[start:start + rows, None, :] - mu[None]) ** 2 * half_precision[None])
                   .sum(axis=2), axis=1)
        for start in range(0, n, rows)]) - math.log(n)
    return float(np.mean(own - mixture))


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


# ---- KL weight schedules: step → β multiplier ------------------------------------------------

KL_SCHEDULES = ("none", "linear", "cyclical")


def kl_weight(schedule: str, step: int, beta: float = 1.0, warmup_steps: int = 10000,
              cycle_steps: Optional[int] = None, ramp_fraction: float = 0.5) -> float:
    """'none': β.  'linear': β·min(1, step / warmup_steps).  'cyclical' (Fu et al. 2019): each
    cycle of ``cycle_steps`` ramps linearly from 0 to β over its first ``ramp_fraction``, then holds β."""
    if schedule == "none":
        return beta
    if schedule == "linear":
        return beta * min(1.0, step / max(warmup_steps, 1))
    if schedule == "cyclical":
        cycle = cycle_steps or warmup_steps
        position = (step % cycle) / cycle
        return beta * min(1.0, position / ramp_fraction)
    raise ValueError(f"unknown KL schedule {schedule!r}; expected {', '.join(KL_SCHEDULES)}")
