"""VQ-VAE-2 (textbook 21.6.4; Razavi et al. 2019): the VQ-VAE with two levels of codes, a
coarse top grid for global structure and a finer bottom grid for detail, the bottom's
encoder conditioned on the top's codes. For 28×28 images:

  h_b = enc_b(x)                      [k, h/2, w/2]   (one stride-2 convolution)
  z_t = VQ(enc_t(h_b))                [D, h/4, w/4]   (one more)
  z_b = VQ(conv1×1[h_b, dec_t(z_t)])  [D, h/2, w/2]   (the bottom sees what the top says)
  x̂  = dec([z_b, up(z_t)])

and the loss is the VQ-VAE's with one codebook (and commitment) term per level:

  loss(x) = rec(x, x̂) + Σ_{l ∈ {top, bottom}} ‖sg(z_e,l) − e_l‖² + β‖z_e,l − sg(e_l)‖²

Everything else (codebook rules, restarts, k-means initialisation, pixel likelihoods) is the
VQ-VAE's (models/vqvae.py), per level. ``codes`` gives [top, bottom]; a ``pixelcnn-prior``
on a vqvae2 run learns p(top) and p(bottom | top) and samples top then bottom.
"""
from __future__ import annotations

from .. import functional as F
from .. import nn
from ..tensor import Tensor
from .registry import register
from .vqvae import VQVAE, ResidualBlock, VQVAEOptions


@register
class VQVAE2(VQVAE):
    name = "vqvae2"
    description = "VQ-VAE-2: a 7x7 top grid and a 14x14 bottom grid of codes, the bottom conditioned on the top"
    section = "21.6.4"
    Options = VQVAEOptions               # the same options, for both levels
    eval_keys = ("test_mse", "test_rec", "codes_used_top", "codes_used_bottom", "perplexity_top", "perplexity_bottom")
    # the VQ-VAE's estimates at both levels; decoder_top reaches the loss only through the
    # bottom's encoder output, so its gradient is copied past the bottom's search too
    straight_through = ("encoder", "decoder_top.", "quantizer")
    levels = ("top", "bottom")

    def _networks(self, c: int, k: int, d: int, rng) -> None:
        self.encoder = nn.Sequential(                                   # x → h_b, h → h/2
            nn.Unflatten(1, self.spec.shape), nn.Conv2d(c, k, 4, 2, 1, rng=rng), nn.ReLU(),
            nn.Conv2d(k, k, 3, 1, 1, rng=rng), ResidualBlock(k, rng), ResidualBlock(k, rng), nn.ReLU())
        self.encoder_top = nn.Sequential(                               # h_b → z_e,top, h/2 → h/4
            nn.Conv2d(k, k, 4, 2, 1, rng=rng), nn.ReLU(), nn.Conv2d(k, k, 3, 1, 1, rng=rng),
            ResidualBlock(k, rng), nn.ReLU(), nn.Conv2d(k, d, 1, rng=rng))
        self.quantizer_top = self._quantizer(rng)
        self.decoder_top = nn.Sequential(                               # z_top → the bottom's grid
            nn.Conv2d(d, k, 3, 1, 1, rng=rng), ResidualBlock(k, rng), nn.ReLU(),
            nn.ConvTranspose2d(k, d, 4, 2, 1, rng=rng))
        self.encoder_bottom = nn.Conv2d(k + d, d, 1, rng=rng)           # [h_b, dec_t(z_top)] → z_e,bottom
        self.quantizer_bottom = self._quantizer(rng)
        self.upsample_top = nn.ConvTranspose2d(d, d, 4, 2, 1, rng=rng)  # z_top onto the bottom's grid
        self.decoder = nn.Sequential(
            nn.Conv2d(2 * d, k, 3, 1, 1, rng=rng), ResidualBlock(k, rng), ResidualBlock(k, rng), nn.ReLU(),
            nn.ConvTranspose2d(k, c, 4, 2, 1, rng=rng), nn.Flatten())

    def _forward(self, x: Tensor, rng=None, kmeans: bool = False) -> tuple:
        h_b = self.encoder(x)
        top = self._quantize(self.quantizer_top, self.encoder_top(h_b), rng, kmeans)
        z_e = self.encoder_bottom(F.concat([h_b, self.decoder_top(top.quantized)], axis=1))
        bottom = self._quantize(self.quantizer_bottom, z_e, rng, kmeans)
        return self.decoder(self._join(top.quantized, bottom.quantized)), [top, bottom]

    def _join(self, top: Tensor, bottom: Tensor) -> Tensor:
        """The decoder's input: the bottom codes beside the top's brought to the bottom grid."""
        return F.concat([bottom, self.upsample_top(top)], axis=1)

    def _embed_codes(self, codes: list) -> Tensor:
        top, bottom = codes
        return self._join(self._lookup(self.quantizer_top, top), self._lookup(self.quantizer_bottom, bottom))
