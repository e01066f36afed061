"""The vector-quantised VAE (textbook 21.6.2; van den Oord et al. 2017): a convolutional
encoder to a grid of vectors z_e, each replaced by its nearest codebook vector e (the search
kernel, never an N×K matrix), a decoder from the quantised grid, trained on

  loss(x) = rec(x, dec(z_q)) + ‖sg(z_e) − e‖² + β‖z_e − sg(e)‖²       (21.117)

with the straight-through gradient z_q = z_e + sg(e − z_e). ``--codebook ema`` replaces the
codebook term by exponential moving averages of the assigned encoder outputs (decay γ,
Laplace-smoothed counts; appendix A.1 of the paper). rec is the per-pixel mean squared error
(a Gaussian likelihood of fixed variance, the paper's choice) or, with ``--likelihood
bernoulli``, the per-pixel binary cross-entropy. Codes unused for ``--dead-code-steps`` steps
restart from encoder outputs of the batch; ``--codebook-init kmeans`` sets the codebook by
k-means over the first batch's encoder outputs.

Networks for 28×28 images: two stride-2 convolutions to a 7×7 grid and two residual blocks
(ReLU, 3×3 conv, ReLU, 1×1 conv, added back), then a 1×1 conv to the code dimension; the
decoder mirrors it with transposed convolutions.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from .. import functional as F
from ..autograd import no_grad
from ..options import option
from ..tensor import Tensor
from .base import Model, StepContext
from .registry import register


@dataclass
class VQVAEOptions:
    num_codes: int = option(512, "codebook size K", minimum=1)
    code_dim: int = option(16, "dimension D of each code vector", minimum=1)
    hidden: int = option(64, "channels of the convolutions and residual blocks", minimum=1)
    beta: float = option(0.25, "weight β of the commitment term", minimum=0.0)
    codebook: str = option("ema", "codebook rule: ema (moving averages, decay --decay) or loss (‖sg(z_e) − e‖²)",
                           choices=("ema", "loss"))
    decay: float = option(0.99, "decay γ of the EMA codebook", minimum=0.0)
    dead_code_steps: int = option(100, "restart a code unused for this many steps from an encoder output "
                                  "(0: never)", minimum=0)
    codebook_init: str = option("kmeans", "kmeans over the first batch's encoder outputs, or uniform",
                                choices=("kmeans", "uniform"))
    likelihood: str = option("gaussian", "pixel likelihood: gaussian (mean squared error) or bernoulli "
                             "(binary cross-entropy on binarized pixels)", choices=("gaussian", "bernoulli"))


class ResidualBlock(nn.Module):
    """x + conv1×1(relu(conv3×3(relu(x))))."""

    def __init__(self, channels: int, rng=None):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, 1, 1, rng=rng), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 1, rng=rng))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def conv_encoder(shape: tuple, k: int, out: int, rng) -> nn.Sequential:
    """Flattened images of ``shape`` (c, h, w) → [N, out, h/4, w/4]: two stride-2 4×4
    convolutions, a 3×3, two residual blocks, a 1×1 to ``out`` channels."""
    return nn.Sequential(
        nn.Unflatten(1, shape),
        nn.Conv2d(shape[0], k, 4, 2, 1, rng=rng), nn.ReLU(),           # h → h/2
        nn.Conv2d(k, k, 4, 2, 1, rng=rng), nn.ReLU(),                  # h/2 → h/4
        nn.Conv2d(k, k, 3, 1, 1, rng=rng),
        ResidualBlock(k, rng), ResidualBlock(k, rng), nn.ReLU(),
        nn.Conv2d(k, out, 1, rng=rng))


def conv_decoder(d: int, k: int, c: int, rng) -> nn.Sequential:
    """[N, d, h/4, w/4] → flattened images of c channels: the encoder mirrored."""
    return nn.Sequential(
        nn.Conv2d(d, k, 3, 1, 1, rng=rng),
        ResidualBlock(k, rng), ResidualBlock(k, rng), nn.ReLU(),
        nn.ConvTranspose2d(k, k, 4, 2, 1, rng=rng), nn.ReLU(),         # h/4 → h/2
        nn.ConvTranspose2d(k, c, 4, 2, 1, rng=rng),                    # h/2 → h
        nn.Flatten())


@register
class VQVAE(Model):
    name = "vqvae"
    description = "VQ-VAE: convolutional encoder to a 7x7 grid of codes, EMA or loss codebook, residual blocks"
    section = "21.6.2"
    Options = VQVAEOptions
    eval_keys = ("test_mse", "test_rec", "codes_used", "perplexity")
    # z_q = z_e + sg(e − z_e): the encoder's gradient is copied past the nearest-code search,
    # and the codebook's comes from its own term only; neither is the loss's derivative
    straight_through = ("encoder.", "quantizer.")

    def __init__(self, options: VQVAEOptions, spec, rng=None):
        super().__init__(options, spec)
        h, w = spec.shape[1:]
        if h % 4 or w % 4:
            raise ValueError(f"{self.name} needs image sides that are multiples of 4, got {h}x{w}")
        self.num_codes = options.num_codes
        self.inputs = "binary" if options.likelihood == "bernoulli" else "continuous"
        self._networks(spec.shape[0], options.hidden, options.code_dim, rng)
        # 0 until the codebook has been set from data (k-means); saved, so a resumed run keeps it
        self.register_buffer("initialised", np.zeros(1, np.int64))

    def _networks(self, c: int, k: int, d: int, rng) -> None:
        """Encoder, quantizer and decoder for c image channels, k hidden channels, codes of d."""
        self.encoder = conv_encoder(self.spec.shape, k, d, rng)
        self.quantizer = self._quantizer(rng)
        self.decoder = conv_decoder(d, k, c, rng)

    def _quantizer(self, rng) -> nn.VectorQuantizer:
        o = self.options
        return nn.VectorQuantizer(o.num_codes, o.code_dim, beta=o.beta, ema=o.codebook == "ema", decay=o.decay,
                                  dead_code_threshold=o.dead_code_steps or None, rng=rng)

    # ---- the levels: one for the VQ-VAE, coarsest first for a hierarchy (models/vqvae2.py) ---

    levels: tuple = ("",)

    def _key(self, name: str, level: str) -> str:
        """A metric's name at one level: ``codes_used`` here, ``codes_used_top`` in a hierarchy."""
        return f"{name}_{level}" if level else name

    def _forward(self, x: Tensor, rng=None, kmeans: bool = False) -> tuple:
        """(decoder output [N, size], one VQOutput per level). ``kmeans``: set each codebook
        from its encoder outputs on the way (``_quantize``)."""
        vq = self._quantize(self.quantizer, self.encoder(x), rng, kmeans)
        return self.decoder(vq.quantized), [vq]

    def _quantize(self, quantizer: nn.VectorQuantizer, z_e: Tensor, rng, kmeans: bool):
        if kmeans:
            flat = backend.to_device(z_e.data.transpose(0, 2, 3, 1).reshape(-1, quantizer.dim), "cpu")
            quantizer.set_codebook(kmeans_codebook(flat, quantizer.num_codes, rng))
        return quantizer(z_e, rng)

    # ---- training and evaluation ------------------------------------------------------------

    def _rec(self, logits_or_means: Tensor, x: Tensor) -> Tensor:
        """Per-pixel reconstruction loss, averaged over pixels: [N]."""
        if self.options.likelihood == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(logits_or_means, x, reduction="none")
        else:
            diff = logits_or_means - x
            per_pixel = diff * diff
        return F.mean(per_pixel, axis=1)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        out, vqs, terms = self._terms(batch["x"], ctx)
        return {"loss": F.mean(terms["rec"]) + sum((vq.loss for vq in vqs[1:]), vqs[0].loss), **terms}

    def _terms(self, x: Tensor, ctx: StepContext) -> tuple:
        """(decoder output, one VQOutput per level, the per-example and batch terms to report);
        the first call sets the codebooks by k-means if asked."""
        kmeans = self.options.codebook_init == "kmeans" and not int(backend.to_device(self.initialised, "cpu")[0])
        out, vqs = self._forward(x, ctx.rng, kmeans)
        if kmeans:
            self.initialised[...] = 1
        terms = {"rec": self._rec(out, x)}
        for level, vq in zip(self.levels, vqs):
            terms[self._key("batch_perplexity", level)] = vq.perplexity
            terms[self._key("batch_codes_used", level)] = vq.usage
        if self.options.likelihood == "gaussian":
            terms["mse"] = terms["rec"]
        return out, vqs, terms

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        out, vqs = self._forward(x)
        means = F.sigmoid(out) if self.options.likelihood == "bernoulli" else out
        diff = means - x
        return {"mse": F.mean(diff * diff, axis=1), "rec": self._rec(out, x)}, \
            {self._key("codes", level): Tensor(vq.indices.reshape(len(x), -1)) for level, vq in zip(self.levels, vqs)}

    def eval_summary(self, kept: dict) -> dict:
        """Over the whole test set, per level: the fraction of the codebook used, and the
        perplexity exp(H) of the codes' empirical distribution."""
        out = {}
        for level in self.levels:
            counts = np.bincount(kept[self._key("codes", level)].ravel(), minlength=self.num_codes)
            p = counts[counts > 0] / counts.sum()
            out[self._key("codes_used", level)] = float((counts > 0).mean())
            out[self._key("perplexity", level)] = float(np.exp(-(p * np.log(p)).sum()))
        return out

    # ---- capabilities -------------------------------------------------------------------------

    @no_grad()
    def codes(self, x: np.ndarray) -> list:
        """The code index of every grid cell, one grid [N, h_l, w_l] per level, coarsest first
        (in eval mode: no EMA update)."""
        was = self.training
        self.eval()
        try:
            return [backend.to_device(vq.indices, "cpu") for vq in self._forward(self.as_input(x))[1]]
        finally:
            self.train(was)

    @no_grad()
    def decode_codes(self, codes: list) -> np.ndarray:
        """Images [N, *spec.shape] (pixel means) decoded from one grid of code indices per
        level, coarsest first (as ``codes`` gives them)."""
        out = self.decoder(self._embed_codes(codes))
        means = F.sigmoid(out) if self.options.likelihood == "bernoulli" else F.clip(out, 0.0, 1.0)
        return backend.to_device(means.data, "cpu").reshape(-1, *self.spec.shape)

    def _embed_codes(self, codes: list) -> Tensor:
        """The decoder's input for given codes: here the code vectors [N, D, h', w']."""
        (grid,) = codes
        return self._lookup(self.quantizer, grid)

    @staticmethod
    def _lookup(quantizer: nn.VectorQuantizer, grid) -> Tensor:
        """The code vectors of a grid of indices [N, h, w]: [N, D, h, w]."""
        book = quantizer.codebook_array()
        index = backend.to_device(np.asarray(grid, np.int64), backend.device_of(book))
        return Tensor(book[index]).permute(0, 3, 1, 2)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode_codes(self.codes(x))


def kmeans_codebook(flat: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 10) -> np.ndarray:
    """Lloyd's k-means [k, D] of the rows of ``flat`` [M, D] (the nearest-code search kernel
    assigns), started from distinct random rows; an empty cluster keeps its start."""
    from kernels import vq as _vq
    codes = flat[rng.choice(len(flat), k, replace=len(flat) < k)].copy()
    for _ in range(iterations):
        index, _ = _vq.nearest(flat, codes)
        counts, sums = _vq.ema_update(flat, index, k)
        filled = counts > 0
        codes[filled] = sums[filled] / counts[filled, None]
    return codes
