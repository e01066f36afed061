"""What the VAE and the autoencoder share: an encoder to a diagonal Gaussian's (μ, ℓ), a
decoder to Bernoulli pixel logits, and the capabilities that need nothing more (``encode``,
``decode``, ``reconstruct``). The families add their losses and what else they can do."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .. import backend, objectives
from ..autograd import no_grad
from ..distributions import Bernoulli, Normal
from ..tensor import Tensor
from ..options import option
from .. import nn
from . import nets
from .base import Model


@dataclass
class NetworkOptions:
    """The options of the shared networks (the families' Options extend them)."""
    arch: str = option("mlp", "network: mlp (784-200-200 tanh) or conv (two stride-2 convolutions)",
                       choices=nets.ARCHS)
    latent_dim: Optional[int] = option(None, "latent dimensions (default: 50 for mlp, 16 for conv)", minimum=1)


class EncoderDecoder(Model):
    """Examples come in flattened, [N, size] in [0, 1]."""

    def __init__(self, options, spec, rng=None):
        if options.latent_dim is None:
            options = replace(options, latent_dim=nets.DEFAULT_LATENT.get(options.arch))
        super().__init__(options, spec)
        self.latent_dim = options.latent_dim
        self.encoder = nets.ENCODERS[options.arch](spec, self._posterior_size(), rng)
        self.decoder = self._decoder(rng)

    def _posterior_size(self) -> int:
        """The encoder's outputs per example: μ and ℓ, 2·latent_dim."""
        return 2 * self.latent_dim

    def _decoder(self, rng) -> nn.Module:
        """latent → pixel logits [N, size]; the architecture's (a family may give its own)."""
        return nets.DECODERS[self.options.arch](self.spec, self.latent_dim, rng)

    def posterior(self, x: Tensor) -> Normal:
        """q(z|x): the encoder's output split into μ and ℓ = log σ² (soft-clamped)."""
        h = self.encoder(x)
        return Normal(h[:, :self.latent_dim], h[:, self.latent_dim:])

    def likelihood(self, z: Tensor) -> Bernoulli:
        """p(x|z): independent Bernoulli pixels."""
        return Bernoulli(self.decoder(z))

    def eval_summary(self, kept: dict) -> dict:
        """Active units (Burda et al. 2016) from the posterior means ``eval_batch`` kept."""
        return {"active_units": objectives.active_units(kept["mu"])}

    # ---- capabilities: NumPy in, NumPy out --------------------------------------------------

    @no_grad()
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Posterior means μ(x) [N, latent_dim]."""
        return backend.to_device(self.posterior(self.as_input(x)).mu.data, "cpu")

    @no_grad()
    def decode(self, z: np.ndarray) -> np.ndarray:
        """Pixel means of p(x|z), [N, *spec.shape]."""
        means = self.likelihood(self.as_input(z)).mean
        return backend.to_device(means.data, "cpu").reshape(-1, *self.spec.shape)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))
