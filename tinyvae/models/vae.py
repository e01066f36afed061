"""The variational autoencoder (textbook 21.2; Kingma & Welling 2014): q(z|x) = N(μ(x), e^ℓ(x)),
or with ``--posterior full`` N(μ(x), L(x)L(x)ᵀ) (21.2.5.2), with ``iaf`` that Gaussian through
inverse autoregressive flow steps (21.2.5.3), p(z) = N(0, I); or with ``vmf`` a von Mises–Fisher
posterior vMF(μ(x), κ) and the uniform prior on the unit sphere (21.4.2); Bernoulli pixels
p(x|z), trained on

  ELBO(x) = E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z))        (21.3.1 for β ≠ 1)

with the KL weight annealed (linear warm-up or cyclical, Fu et al. 2019) and free bits
(Kingma et al. 2016) if asked, or on the IWAE bound with K samples (Burda et al. 2016).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import objectives
from .. import functional as F
from .. import nn
from ..distributions import FullNormal, IAFNormal, Normal, StandardNormal
from ..options import option
from ..tensor import Tensor
from ..von_mises_fisher import UniformSphere, VonMisesFisher
from .base import StepContext
from .latent import EncoderDecoder, NetworkOptions
from .registry import register


POSTERIORS = ("diagonal", "full", "iaf", "vmf")


@dataclass
class PosteriorOptions:
    posterior: str = option("diagonal", "q(z|x): diagonal Gaussian, full (a full covariance LLᵀ, its "
                            "Cholesky factor from the encoder), or iaf (a diagonal Gaussian through "
                            "inverse autoregressive flow steps), or vmf (von Mises-Fisher on the unit "
                            "sphere, fixed concentration --kappa, uniform prior)", choices=POSTERIORS)
    iaf_steps: int = option(2, "flow steps of --posterior iaf (MADEs, orderings alternating)", minimum=1)
    iaf_hidden: int = option(200, "hidden units of each flow step's MADE", minimum=1)
    kappa: float = option(50.0, "concentration κ of --posterior vmf (fixed: the KL is a constant set by κ "
                          "and the latent dimension)", minimum=1e-3)


@dataclass
class VAEOptions(NetworkOptions, PosteriorOptions):
    beta: float = option(1.0, "weight β of the KL term (β-VAE)", minimum=0.0)
    kl_anneal: str = option("none", "KL weight schedule: none, linear warm-up, or cyclical",
                            choices=objectives.KL_SCHEDULES)
    warmup_steps: int = option(10000, "length of the linear KL warm-up, or of one annealing cycle, in steps",
                               minimum=1)
    free_bits: float = option(0.0, "free bits: λ in nats per latent dimension", minimum=0.0)
    iwae_k: int = option(1, "train on the IWAE bound with K samples (1: the ELBO)", minimum=1)


class GaussianVAE(EncoderDecoder):
    """What every family with the N(0, I) prior and a Gaussian posterior (``--posterior``)
    shares (``vae``, ``info-vae``, ``skip-vae``): the posterior, the test ELBO and IWAE bound,
    the prior, sampling. ``kl_per_dim`` is the KL of each latent dimension; with a full
    covariance, the KL's term of each row of L (they sum to the KL); with vMF, one number.
    ``total_correlation`` of the test set's aggregate posterior, with the diagonal posterior
    (whose marginals q(z_k|x) are its factors)."""
    eval_keys = ("test_elbo", "test_recon", "test_kl", "test_nll_iwae", "iwae_k", "active_units", "kl_per_dim",
                 "total_correlation")

    def __init__(self, options, spec, rng=None):
        super().__init__(options, spec, rng)
        if options.posterior != "diagonal":
            self.eval_keys = tuple(key for key in self.eval_keys if key != "total_correlation")
        if options.posterior == "iaf":
            d = self.latent_dim
            self.flows = nn.ModuleList([nn.MADE(d, options.iaf_hidden, context=d, reverse=t % 2 == 1, rng=rng)
                                        for t in range(options.iaf_steps)])

    def _posterior_size(self) -> int:
        """μ and ℓ (the log of L's diagonal squared), and with a full covariance L's
        D(D − 1)/2 entries below the diagonal, with IAF a context h of D numbers; vMF: the D
        numbers whose direction is μ."""
        d, posterior = self.latent_dim, self.options.posterior
        return {"diagonal": 2 * d, "full": 2 * d + d * (d - 1) // 2, "iaf": 3 * d, "vmf": d}[posterior]

    def posterior(self, x: Tensor):
        """q(z|x): N(μ, e^ℓ); N(μ, LLᵀ) with L_ii = exp(½ℓ_i) and L's lower entries from the
        encoder; or the
        flow of N(μ, e^ℓ) through the MADE steps, given the context h; or vMF(h/‖h‖, κ)."""
        if self.options.posterior == "diagonal":
            return super().posterior(x)
        h, d = self.encoder(x), self.latent_dim
        if self.options.posterior == "vmf":
            return VonMisesFisher(h / F.sqrt(F.sum(h * h, axis=-1, keepdims=True) + 1e-12), self.options.kappa)
        if self.options.posterior == "iaf":
            return IAFNormal(h[:, :d], h[:, d:2 * d], h[:, 2 * d:], list(self.flows))
        diagonal = F.exp(0.5 * Normal(h[:, :d], h[:, d:2 * d]).logvar)            # soft-clamped ℓ
        return FullNormal(h[:, :d], diagonal, h[:, 2 * d:])

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        terms = objectives.elbo_terms(self, x, ctx.rng)
        metrics = {key: terms[key] for key in ("elbo", "recon", "kl")}
        if iwae_k:
            metrics["nll_iwae"] = -objectives.iwae_bound(self, x, iwae_k, ctx.rng)
        kept = {"mu": terms["q"].mu, "kl_dims": terms["kl_dims"]}
        if "total_correlation" in self.eval_keys:
            kept.update(logvar=terms["q"].logvar, z=terms["z"])
        return metrics, kept

    def eval_summary(self, kept: dict) -> dict:
        """Active units, the test set's mean KL of each latent dimension (nats), and the
        total correlation of its aggregate posterior (objectives.total_correlation)."""
        summary = {**super().eval_summary(kept), "kl_per_dim": [float(v) for v in kept["kl_dims"].mean(axis=0)]}
        if "logvar" in kept:
            as64 = (kept[key].astype(np.float64) for key in ("z", "mu", "logvar"))
            summary["total_correlation"] = objectives.total_correlation(*as64)
        return summary

    def prior(self):
        """p(z) = N(0, I), or with the vMF posterior the uniform distribution on the sphere."""
        return UniformSphere(self.latent_dim) if self.options.posterior == "vmf" else StandardNormal(self.latent_dim)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Pixel means of p(x|z) for z ~ p(z), [n, *spec.shape]."""
        return self.decode(self.prior().sample(n, rng))

    def log_weights(self, x, k: int, rng=None):
        return objectives.log_weights(self, x, k, rng)


@register
class VAE(GaussianVAE):
    name = "vae"
    description = "Gaussian VAE with Bernoulli pixels; β, KL annealing, free bits, IWAE training"
    section = "21.2, 21.3.1"
    Options = VAEOptions

    def __init__(self, options: VAEOptions, spec, rng=None):
        if options.free_bits and options.posterior in ("full", "vmf"):
            raise ValueError(f"--free-bits is per latent dimension, and a {options.posterior} posterior's KL does not "
                             f"split into dimensions; drop --free-bits or use --posterior diagonal")
        if options.iwae_k > 1 and (options.beta != 1 or options.kl_anneal != "none" or options.free_bits):
            raise ValueError("--iwae-k > 1 trains the IWAE bound, which has no β, KL annealing or free bits; "
                             "drop --beta, --kl-anneal and --free-bits, or use --iwae-k 1")
        super().__init__(options, spec, rng)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o, x = self.options, batch["x"]
        weight = objectives.kl_weight(o.kl_anneal, ctx.step, o.beta, o.warmup_steps)
        if o.iwae_k > 1:
            loss = -objectives.iwae_bound(self, x, o.iwae_k, ctx.rng).mean()
            terms = objectives.elbo_terms(self, x, ctx.rng)                  # reported, not trained on
        else:
            terms = objectives.elbo_terms(self, x, ctx.rng)
            loss = objectives.training_loss(terms, weight, o.free_bits)
        return {"loss": loss, "recon": terms["recon"], "kl": terms["kl"], "kl_weight": weight}

    def notes(self, total_steps: int) -> list:
        o = self.options
        if o.kl_anneal == "linear" and o.warmup_steps > total_steps:
            end = objectives.kl_weight("linear", total_steps, o.beta, o.warmup_steps)
            return [f"--kl-anneal linear warms up over {o.warmup_steps} steps, but the run has {total_steps}: "
                    f"the KL weight will end at {end:.3g}, not {o.beta:g} (lower --warmup-steps or train longer)"]
        return []

