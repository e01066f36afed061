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
from .distributions import Normal, sample_and_kl, standard_normal_like
from .tensor import Tensor


def per_example(t: Tensor) -> Tensor:
    """Sum every axis but the first (pixels, latent dimensions) → [N]."""
    return F.sum(t, axis=tuple(range(1, t.ndim))) if t.ndim > 1 else t


def elbo_terms(model, x: Tensor, rng=None) -> dict:
    """One-sample reconstruction log p(x|z) and KL(q(z|x) ‖ p(z)), per example [N], plus the
    per-dimension KL [N, latent] (for free bits) and the posterior means (for active units).
    ``model`` gives the three distributions: ``posterior(x)``, ``prior()`` and
    ``likelihood(z)``; the KL is the pair's registered closed form (distributions.kl)."""
    q = model.posterior(x)
    z, kl_dims = sample_and_kl(q, model.prior(), rng)
    recon = per_example(model.likelihood(z).log_prob(x))
    kl = F.sum(kl_dims, axis=-1)
    return {"recon": recon, "kl": kl, "kl_dims": kl_dims, "elbo": recon - kl, "mu": q.mu}


def training_loss(terms: dict, beta: float = 1.0, free_bits: float = 0.0) -> Tensor:
    """Mean over the batch of −(log p(x|z) − β·KL), with free bits (Kingma et al. 2016) as a
    per-dimension hinge on the batch-averaged KL: Σ_i max(λ, E_batch KL_i)."""
    recon = F.mean(terms["recon"])
    if free_bits > 0:
        kl = F.sum(F.maximum(F.mean(terms["kl_dims"], axis=0), free_bits))
    else:
        kl = F.mean(terms["kl"])
    return -(recon - beta * kl)


def log_weights(model, x: Tensor, k: int, rng=None) -> Tensor:
    """log w = log p(x|z) + log p(z) − log q(z|x) for k samples per example: [k, N]."""
    q, prior = model.posterior(x), model.prior()
    rows = []
    for _ in range(k):
        eps = standard_normal_like(q.mu, rng)
        z = q.rsample(eps)
        log_q = per_example(Normal(q.mu, q.logvar, clamp=False).log_prob(z))
        log_p_z = per_example(prior.log_prob(z))
        rows.append(per_example(model.likelihood(z).log_prob(x)) + log_p_z - log_q)
    return F.stack(rows, axis=0)


def mc_elbo(model, x: Tensor, samples: int = 1, rng=None) -> Tensor:
    """Monte-Carlo ELBO per example [N]: the mean of the log weights."""
    return F.mean(log_weights(model, x, samples, rng), axis=0)


def iwae_bound(model, x: Tensor, k: int, rng=None, chunk: int = 100) -> Tensor:
    """IWAE_k per example [N], logsumexp over k in chunks of ``chunk`` samples, so memory is
    O(chunk · N) whatever k is. Differentiable (the IWAE training objective) when k ≤ chunk."""
    parts = []
    done = 0
    while done < k:
        take = min(chunk, k - done)
        parts.append(F.logsumexp(log_weights(model, x, take, rng), axis=0))
        done += take
    total = parts[0] if len(parts) == 1 else F.logsumexp(F.stack(parts, axis=0), axis=0)
    return total - math.log(k)


def active_units(mus: np.ndarray, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across the data: Cov_x(E_q[z_d]) > 0.01
    (Burda et al. 2016)."""
    return int((np.var(mus, axis=0) > threshold).sum())


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
