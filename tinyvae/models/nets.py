"""The encoder and decoder networks the VAE-family models share, by architecture name.

  mlp   the IWAE paper's (Burda et al. 2016): size-200-200 tanh → 2·latent outputs; mirrored
        decoder latent-200-200-size
  conv  Conv2d C→32 k4 s2 p1, Conv2d 32→64 k4 s2 p1 (ReLU), Linear → 2·latent; mirrored with
        Linear and ConvTranspose2d 64→32, 32→C (images whose sides are multiples of 4)

Both take and return flattened examples [N, size]. Weights are drawn in construction order
(encoder first) from ``rng``, so a seed fixes them.
"""
from __future__ import annotations

from .. import nn
from ..data import DataSpec

ARCHS = ("mlp", "conv")
DEFAULT_LATENT = {"mlp": 50, "conv": 16}


def mlp_encoder(spec: DataSpec, outputs: int, rng):
    return nn.Sequential(nn.Linear(spec.size, 200, rng=rng), nn.Tanh(), nn.Linear(200, 200, rng=rng), nn.Tanh(),
                         nn.Linear(200, outputs, rng=rng))


def mlp_decoder(spec: DataSpec, latent: int, rng):
    return nn.Sequential(nn.Linear(latent, 200, rng=rng), nn.Tanh(), nn.Linear(200, 200, rng=rng), nn.Tanh(),
                         nn.Linear(200, spec.size, rng=rng))


def conv_encoder(spec: DataSpec, outputs: int, rng):
    c, h, w = spec.shape
    if h % 4 or w % 4:
        raise ValueError(f"--arch conv needs image sides that are multiples of 4, got {h}x{w}")
    return nn.Sequential(
        nn.Unflatten(1, (c, h, w)),
        nn.Conv2d(c, 32, 4, 2, 1, rng=rng), nn.ReLU(),            # h → h/2
        nn.Conv2d(32, 64, 4, 2, 1, rng=rng), nn.ReLU(),           # h/2 → h/4
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), outputs, rng=rng))


def conv_decoder(spec: DataSpec, latent: int, rng):
    c, h, w = spec.shape
    return nn.Sequential(
        nn.Linear(latent, 64 * (h // 4) * (w // 4), rng=rng), nn.ReLU(), nn.Unflatten(1, (64, h // 4, w // 4)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1, rng=rng), nn.ReLU(),  # h/4 → h/2
        nn.ConvTranspose2d(32, c, 4, 2, 1, rng=rng),              # h/2 → h
        nn.Flatten())


ENCODERS = {"mlp": mlp_encoder, "conv": conv_encoder}
DECODERS = {"mlp": mlp_decoder, "conv": conv_decoder}


def build(arch: str, spec: DataSpec, outputs: int, latent: int, rng):
    """(encoder, decoder) of architecture ``arch``: encoder size → outputs, decoder latent → size
    (the encoder's weights drawn first)."""
    encoder = ENCODERS[arch](spec, outputs, rng)
    return encoder, DECODERS[arch](spec, latent, rng)
