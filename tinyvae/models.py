"""VAE models. A VAE is an encoder q(z|x) = N(μ(x), exp(ℓ(x))) and a decoder p(x|z)
(Bernoulli pixels by default); the prior is p(z) = N(0, I).

Presets:
  mlp   the IWAE paper's architecture (Burda et al. 2016): 784-200-200 tanh → 50-d latent,
        mirrored decoder 50-200-200-784
  conv  Conv2d 1→32 k4 s2 p1, Conv2d 32→64 k4 s2 p1 (ReLU), Linear → 16-d latent; mirrored
        with Linear and ConvTranspose2d 64→32, 32→1
An ``AE`` is the same network with z = μ and no KL (β = 0).
"""
from __future__ import annotations

from typing import Optional

from . import nn
from .distributions import Bernoulli, Normal
from .tensor import Tensor

PRESETS = ("mlp", "conv")
DEFAULT_LATENT = {"mlp": 50, "conv": 16}


def _mlp(latent: int, rng):
    encoder = nn.Sequential(nn.Linear(784, 200, rng=rng), nn.Tanh(), nn.Linear(200, 200, rng=rng), nn.Tanh(),
                            nn.Linear(200, 2 * latent, rng=rng))
    decoder = nn.Sequential(nn.Linear(latent, 200, rng=rng), nn.Tanh(), nn.Linear(200, 200, rng=rng), nn.Tanh(),
                            nn.Linear(200, 784, rng=rng))
    return encoder, decoder


def _conv(latent: int, rng):
    encoder = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 4, 2, 1, rng=rng), nn.ReLU(),          # 28 → 14
        nn.Conv2d(32, 64, 4, 2, 1, rng=rng), nn.ReLU(),         # 14 → 7
        nn.Flatten(), nn.Linear(64 * 7 * 7, 2 * latent, rng=rng))
    decoder = nn.Sequential(
        nn.Linear(latent, 64 * 7 * 7, rng=rng), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, rng=rng), nn.ReLU(),  # 7 → 14
        nn.ConvTranspose2d(32, 1, 4, 2, 1, rng=rng),              # 14 → 28
        nn.Flatten())
    return encoder, decoder


class VAE(nn.Module):
    """Images come in flattened, [N, 784] in [0, 1]; ``decode`` returns Bernoulli pixel logits.
    Weights are drawn with PyTorch's default scheme from ``rng`` (a NumPy Generator; the
    default generator of ``tinyvae.random`` if None), layer by layer in construction order."""
    deterministic = False

    def __init__(self, preset: str = "mlp", latent_dim: Optional[int] = None, rng=None):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; expected one of {', '.join(PRESETS)}")
        self.preset = preset
        self.latent_dim = latent_dim or DEFAULT_LATENT[preset]
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be positive, got {self.latent_dim}")
        self.encoder, self.decoder = (_mlp if preset == "mlp" else _conv)(self.latent_dim, rng)

    def encode(self, x: Tensor) -> Normal:
        """q(z|x): the encoder's output split into μ and ℓ = log σ² (soft-clamped)."""
        h = self.encoder(x)
        mu, logvar = h[:, :self.latent_dim], h[:, self.latent_dim:]
        return Normal(mu, logvar)

    def decode(self, z: Tensor) -> Bernoulli:
        """p(x|z): independent Bernoulli pixels."""
        return Bernoulli(self.decoder(z))

    def config(self) -> dict:
        return {"kind": type(self).__name__, "preset": self.preset, "latent_dim": self.latent_dim}


class AE(VAE):
    """Deterministic autoencoder: the VAE's networks with z = μ(x) and no KL term."""
    deterministic = True


def build(config: dict) -> VAE:
    kinds = {"VAE": VAE, "AE": AE}
    if config.get("kind") not in kinds:
        raise ValueError(f"unknown model kind {config.get('kind')!r}")
    return kinds[config["kind"]](config["preset"], config["latent_dim"])
