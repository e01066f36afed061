"""The deterministic autoencoder (textbook 21.1): z = μ(x), trained on the reconstruction
log-likelihood with a penalty on the codes,

    loss(x) = −log p(x | z) + λ·½‖z‖²,   z = μ(x)

the L2 code penalty of the regularised autoencoder (Ghosh et al. 2020, "From variational to
deterministic autoencoders"). Why it is on by default (λ = 1): without it, nothing bounds
the codes; they grow within the first epoch until the decoder's first tanh layer saturates,
and the plain AE stalls (test reconstruction −199.5 nats after 2 epochs on MNIST with 0
active units, where the VAE with the same networks reaches −135.0; with λ = 1, −100.6). The
VAE's KL bounds its codes the same way, through its ½μ² term. No prior: the AE reconstructs,
but it has no samples and no likelihood bound to report."""
from __future__ import annotations

from dataclasses import dataclass

from .. import objectives
from .. import functional as F
from ..options import option
from .base import StepContext
from .latent import EncoderDecoder, NetworkOptions
from .registry import register


@dataclass
class AEOptions(NetworkOptions):
    code_penalty: float = option(1.0, "λ of the code penalty λ·½‖z‖² (0: the plain AE, which stalls)", minimum=0.0)


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
        recon, z = self._recon(batch["x"])
        terms = {"loss": -F.mean(recon), "recon": recon}
        if self.options.code_penalty:
            terms["code_l2"] = 0.5 * F.sum(z * z, axis=1)
            terms["loss"] = terms["loss"] + self.options.code_penalty * F.mean(terms["code_l2"])
        return terms

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        recon, mu = self._recon(batch["x"])
        return {"recon": recon}, {"mu": mu}
