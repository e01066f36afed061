"""The skip-VAE (textbook 21.4.4; Dieng et al. 2019, "Avoiding latent variable collapse with
generative skip models"): the VAE with a decoder in which z reaches every layer,

  h_1 = f(W_1 z),   h_{l+1} = f(W_{l+1} h_l + U_{l+1} z),   logits = W_L h_{L−1} + U_L z

so no layer can lose it and the decoder cannot model x while ignoring z as easily: the KL
(the mutual information between x and z it bounds) stays higher at the same ELBO. Every
option of ``vae`` (β, KL annealing, free bits, IWAE training) applies; the encoder is the
same. In the conv decoder z enters each transposed convolution's output as a per-channel
bias (U z broadcast over the grid).
"""
from __future__ import annotations

from .. import nn
from ..tensor import Tensor
from .registry import register
from .vae import VAE


class SkipMLP(nn.Module):
    """latent → 200 → 200 → size with tanh, z added into every layer after the first."""

    def __init__(self, latent: int, size: int, rng=None):
        super().__init__()
        self.first = nn.Linear(latent, 200, rng=rng)
        self.layers = nn.ModuleList([nn.Linear(200, 200, rng=rng), nn.Linear(200, size, rng=rng)])
        self.skips = nn.ModuleList([nn.Linear(latent, 200, bias=False, rng=rng),
                                    nn.Linear(latent, size, bias=False, rng=rng)])

    def forward(self, z: Tensor) -> Tensor:
        h = self.first(z).tanh()
        h = (self.layers[0](h) + self.skips[0](z)).tanh()
        return self.layers[1](h) + self.skips[1](z)


class SkipConv(nn.Module):
    """The conv decoder (Linear → 64×h/4×w/4, two transposed convolutions) with U_l z added to
    each transposed convolution's output channels."""

    def __init__(self, latent: int, shape: tuple, rng=None):
        super().__init__()
        c, h, w = shape
        self.start = nn.Sequential(nn.Linear(latent, 64 * (h // 4) * (w // 4), rng=rng), nn.ReLU(),
                                   nn.Unflatten(1, (64, h // 4, w // 4)))
        self.ups = nn.ModuleList([nn.ConvTranspose2d(64, 32, 4, 2, 1, rng=rng), nn.ConvTranspose2d(32, c, 4, 2, 1, rng=rng)])
        self.skips = nn.ModuleList([nn.Linear(latent, 32, bias=False, rng=rng), nn.Linear(latent, c, bias=False, rng=rng)])

    def forward(self, z: Tensor) -> Tensor:
        h = self.start(z)
        h = (self.ups[0](h) + self.skips[0](z).reshape(-1, 32, 1, 1)).relu()
        out = self.ups[1](h) + self.skips[1](z).reshape(z.shape[0], -1, 1, 1)
        return out.reshape(z.shape[0], -1)


@register
class SkipVAE(VAE):
    name = "skip-vae"
    description = "VAE whose decoder takes z at every layer (generative skip connections) against collapse"
    section = "21.4.4"

    def _decoder(self, rng) -> nn.Module:
        if self.options.arch == "mlp":
            return SkipMLP(self.latent_dim, self.spec.size, rng)
        return SkipConv(self.latent_dim, self.spec.shape, rng)
