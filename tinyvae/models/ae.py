"""The deterministic autoencoder (textbook 21.1): z = μ(x), trained on the reconstruction
log-likelihood log p(x|z) alone. No KL term and no prior: it reconstructs, but it has no
samples and no likelihood bound to report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import objectives
from .. import functional as F
from ..options import option
from .base import StepContext
from .latent import EncoderDecoder
from .nets import ARCHS
from .registry import register


@dataclass
class AEOptions:
    arch: str = option("mlp", "network: mlp (784-200-200 tanh) or conv (two stride-2 convolutions)", choices=ARCHS)
    latent_dim: Optional[int] = option(None, "latent dimensions (default: 50 for mlp, 16 for conv)", minimum=1)


@register
class AE(EncoderDecoder):
    name = "ae"
    description = "deterministic autoencoder (the VAE's networks, z = μ(x), no KL)"
    section = "21.1"
    Options = AEOptions
    eval_keys = ("test_recon", "active_units")

    def _recon(self, x):
        """log p(x | z = μ(x)) per example [N], and μ."""
        mu = self.posterior(x).mu
        return objectives.per_example(self.likelihood(mu).log_prob(x)), mu

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        recon, _ = self._recon(batch["x"])
        return {"loss": -F.mean(recon), "recon": recon}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        recon, mu = self._recon(batch["x"])
        return {"recon": recon}, {"mu": mu}
