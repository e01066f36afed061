"""InfoVAE (textbook 21.3.2; Zhao et al. 2019): the VAE's networks, prior and posterior, trained
on the ELBO with the KL down-weighted and a divergence between the aggregate posterior q(z)
and the prior added, here the maximum mean discrepancy (their MMD-VAE):

  loss(x) = −E_q[log p(x|z)] + (1 − α) KL(q(z|x) ‖ p(z)) + (α + λ − 1) MMD²(q(z), p(z))

MMD² is the unbiased estimate (objectives.mmd) between the batch's posterior samples z and as
many prior samples, with an inverse-multiquadric or RBF kernel. α = 1 drops the per-example
KL, which pushes every q(z|x) toward the prior and so toward ignoring x; the MMD term only
asks the codes as a whole to look like prior samples. Evaluation is the VAE's (the ELBO, the
IWAE bound, active units).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import objectives
from .. import functional as F
from ..distributions import like
from ..options import option
from .base import StepContext
from .latent import NetworkOptions
from .registry import register
from .vae import GaussianVAE, PosteriorOptions


@dataclass
class InfoVAEOptions(NetworkOptions, PosteriorOptions):
    alpha: float = option(1.0, "α: the per-example KL is weighted by 1 − α (1: the MMD-VAE)", maximum=1.0)
    lam: float = option(1000.0, "λ: the MMD term is weighted by α + λ − 1", minimum=0.0)
    kernel: str = option("imq", "MMD kernel: imq (inverse multiquadric) or rbf, scale 2·latent_dim",
                         choices=objectives.MMD_KERNELS)


@register
class InfoVAE(GaussianVAE):
    name = "info-vae"
    description = "InfoVAE / MMD-VAE: (1 − α)·KL plus (α + λ − 1)·MMD between q(z) and p(z)"
    section = "21.3.2"
    Options = InfoVAEOptions

    def __init__(self, options: InfoVAEOptions, spec, rng=None):
        if options.alpha + options.lam - 1 < 0:
            raise ValueError(f"--alpha + --lam − 1 must be ≥ 0 (the MMD term's weight), got "
                             f"{options.alpha} + {options.lam} − 1")
        super().__init__(options, spec, rng)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o = self.options
        terms = objectives.elbo_terms(self, batch["x"], ctx.rng)
        z = terms["z"]
        mmd = objectives.mmd(z, like(self.prior().sample(z.shape[0], ctx.rng), z), o.kernel)
        loss = F.mean((1 - o.alpha) * terms["kl"] - terms["recon"]) + (o.alpha + o.lam - 1) * mmd
        return {"loss": loss, "recon": terms["recon"], "kl": terms["kl"], "mmd": float(mmd.item())}
