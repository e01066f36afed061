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
        c, h, w = spec.shape
        if h % 4 or w % 4:
            raise ValueError(f"vqvae needs image sides that are multiples of 4, got {h}x{w}")
        k, self.num_codes = options.hidden, options.num_codes
        self.inputs = "binary" if options.likelihood == "bernoulli" else "continuous"
        self.encoder = nn.Sequential(
            nn.Unflatten(1, (c, h, w)),
            nn.Conv2d(c, k, 4, 2, 1, rng=rng), nn.ReLU(),                 # h → h/2
            nn.Conv2d(k, k, 4, 2, 1, rng=rng), nn.ReLU(),                 # h/2 → h/4
            nn.Conv2d(k, k, 3, 1, 1, rng=rng),
            ResidualBlock(k, rng), ResidualBlock(k, rng), nn.ReLU(),
            nn.Conv2d(k, options.code_dim, 1, rng=rng))
        self.quantizer = nn.VectorQuantizer(options.num_codes, options.code_dim, beta=options.beta,
                                            ema=options.codebook == "ema", decay=options.decay,
                                            dead_code_threshold=options.dead_code_steps or None, rng=rng)
        self.decoder = nn.Sequential(
            nn.Conv2d(options.code_dim, k, 3, 1, 1, rng=rng),
            ResidualBlock(k, rng), ResidualBlock(k, rng), nn.ReLU(),
            nn.ConvTranspose2d(k, k, 4, 2, 1, rng=rng), nn.ReLU(),        # h/4 → h/2
            nn.ConvTranspose2d(k, c, 4, 2, 1, rng=rng),                   # h/2 → h
            nn.Flatten())
        # 0 until the codebook has been set from data (k-means); saved, so a resumed run keeps it
        self.register_buffer("initialised", np.zeros(1, np.int64))

    # ---- training and evaluation ------------------------------------------------------------

    def _rec(self, logits_or_means: Tensor, x: Tensor) -> Tensor:
        """Per-pixel reconstruction loss, averaged over pixels: [N]."""
        if self.options.likelihood == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(logits_or_means, x, reduction="none")
        else:
            diff = logits_or_means - x
            per_pixel = diff * diff
        return F.mean(per_pixel, axis=1)

    def _forward(self, x: Tensor, rng=None):
        vq = self.quantizer(self.encoder(x), rng)
        return self.decoder(vq.quantized), vq

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        x = batch["x"]
        if self.options.codebook_init == "kmeans" and not int(backend.to_device(self.initialised, "cpu")[0]):
            self._kmeans_init(x, ctx.rng)
        out, vq = self._forward(x, ctx.rng)
        rec = self._rec(out, x)
        terms = {"loss": F.mean(rec) + vq.loss, "rec": rec, "batch_perplexity": vq.perplexity,
                 "batch_codes_used": vq.usage}
        if self.options.likelihood == "gaussian":
            terms["mse"] = rec
        return terms

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        out, vq = self._forward(x)
        means = F.sigmoid(out) if self.options.likelihood == "bernoulli" else out
        diff = means - x
        return {"mse": F.mean(diff * diff, axis=1), "rec": self._rec(out, x)}, \
            {"codes": Tensor(vq.indices.reshape(len(x), -1))}

    def eval_summary(self, kept: dict) -> dict:
        """Over the whole test set: the fraction of the codebook used, and the perplexity
        exp(H) of the codes' empirical distribution."""
        counts = np.bincount(kept["codes"].ravel(), minlength=self.options.num_codes)
        p = counts[counts > 0] / counts.sum()
        return {"codes_used": float((counts > 0).mean()), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}

    @no_grad()
    def _kmeans_init(self, x: Tensor, rng: np.random.Generator, iterations: int = 10) -> None:
        """Lloyd's k-means over the encoder outputs of ``x``, started from distinct random
        outputs; empty clusters keep their start. Sets the codebook (and the EMA sums)."""
        from kernels import vq as _vq
        z = self.encoder(x)
        flat = backend.to_device(z.permute(0, 2, 3, 1).reshape(-1, self.options.code_dim).data, "cpu")
        k = self.options.num_codes
        codes = flat[rng.choice(len(flat), k, replace=len(flat) < k)].copy()
        for _ in range(iterations):
            index, _ = _vq.nearest(flat, codes)
            counts, sums = _vq.ema_update(flat, index, k)
            filled = counts > 0
            codes[filled] = sums[filled] / counts[filled, None]
        self.quantizer.set_codebook(codes)
        self.initialised[...] = 1

    # ---- capabilities -------------------------------------------------------------------------

    @no_grad()
    def codes(self, x: np.ndarray) -> np.ndarray:
        """The code index of every grid cell, [N, h/4, w/4] (in eval mode: no EMA update)."""
        was = self.training
        self.eval()
        try:
            return backend.to_device(self.quantizer(self.encoder(self.as_input(x))).indices, "cpu")
        finally:
            self.train(was)

    @no_grad()
    def decode_codes(self, codes: np.ndarray) -> np.ndarray:
        """Images [N, *spec.shape] (pixel means) decoded from a grid of code indices [N, h', w']."""
        book = self.quantizer.codebook_array()
        index = backend.to_device(np.asarray(codes, np.int64), backend.device_of(book))
        z = Tensor(book[index]).permute(0, 3, 1, 2)
        out = self.decoder(z)
        means = F.sigmoid(out) if self.options.likelihood == "bernoulli" else F.clip(out, 0.0, 1.0)
        return backend.to_device(means.data, "cpu").reshape(-1, *self.spec.shape)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode_codes(self.codes(x))
