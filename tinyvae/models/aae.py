"""The adversarial autoencoder (textbook 21.3.2.3; Makhzani et al. 2016): the autoencoder's
networks, z = μ(x), and a discriminator D on codes that tells prior samples z' ~ N(0, I) from
the codes of data; the encoder learns to fool it, which matches the aggregate posterior
q(z) = E_x q(z|x) to the prior (the adversarial special case of InfoVAE's divergence term).
Two parameter groups, each stepped on its own loss (non-saturating GAN losses, ς = softplus):

  model          −log p(x|z) + λ · ς(−D(z))                   (−log σ(D(z)))
  discriminator  ς(−D(z')) + ς(D(sg(z)))                        (−log σ(D(z')) − log(1 − σ(D(z))))

Since q(z) then looks like the prior, decoding prior samples gives images (``sample``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from .. import nn
from ..distributions import standard_normal_like
from ..options import option
from .ae import AE
from .base import StepContext
from .latent import NetworkOptions
from .registry import register


@dataclass
class AAEOptions(NetworkOptions):
    adversarial_weight: float = option(1.0, "λ of the encoder's adversarial term", minimum=0.0)
    disc_hidden: int = option(200, "hidden units of the code discriminator's two ReLU layers", minimum=1)


@register
class AAE(AE):
    name = "aae"
    description = "adversarial autoencoder: a discriminator on codes matches q(z) to N(0, I)"
    section = "21.3.2.3"
    Options = AAEOptions

    def __init__(self, options: AAEOptions, spec, rng=None):
        super().__init__(options, spec, rng)
        h = options.disc_hidden
        self.discriminator = nn.Sequential(nn.Linear(self.latent_dim, h, rng=rng), nn.ReLU(),
                                           nn.Linear(h, h, rng=rng), nn.ReLU(), nn.Linear(h, 1, rng=rng))

    def param_groups(self) -> dict:
        return self.groups_apart(discriminator=self.discriminator)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        recon, z = self._recon(batch["x"])
        fooled = F.softplus(-self.discriminator(z))[:, 0]                         # −log σ(D(z))
        prior = standard_normal_like(z, ctx.rng)
        d_loss = F.mean(F.softplus(-self.discriminator(prior))) + F.mean(F.softplus(self.discriminator(z.detach())))
        return {"loss": {"model": F.mean(self.options.adversarial_weight * fooled - recon), "discriminator": d_loss},
                "recon": recon, "adversarial": fooled}

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Pixel means of p(x|z) for z ~ N(0, I), [n, *spec.shape]."""
        return self.decode(rng.standard_normal((n, self.latent_dim)))
