"""A gated PixelCNN prior over the codes of a trained VQ model (textbook 21.6.3; van den Oord
et al. 2017, §3.2, with the gated PixelCNN of van den Oord et al. 2016): a second stage,
``tinyvae train --model pixelcnn-prior --parent RUN``. The parent (a ``vqvae`` run) turns each
image into a grid of code indices c (its nearest-code search); the prior models

  p(c) = Π_{(i,j) in raster order} p(c_ij | c_<ij [, y])

with gated blocks (``nn.pixelcnn``: a type-A block, then type B), trained on the negative
log-likelihood in nats per image. Sampling draws the codes one position at a time and decodes
them with the parent's decoder, so the VQ-VAE gets samples. ``--conditional class`` adds a
class embedding to every block (class-conditional samples, one class per row of the picture).
The parent is fixed: its weights' SHA-256 is kept with the prior, and a prior whose parent run
has changed since is refused.
"""
from __future__ import annotations

import hashlib
import math
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
class PixelCNNPriorOptions:
    channels: int = option(64, "channels C of each stack", minimum=1)
    blocks: int = option(6, "gated blocks (the first of type A)", minimum=1)
    kernel: int = option(3, "kernel width of the masked convolutions (odd)", minimum=1)
    conditional: str = option("none", "none, or class: condition every block on the image's label",
                              choices=("none", "class"))


def parent_digest(parent) -> np.ndarray:
    """SHA-256 of the parent's weights and buffers, as 32 bytes."""
    h = hashlib.sha256()
    for name, array in sorted(parent.state_dict().items()):
        h.update(name.encode() + np.ascontiguousarray(array).tobytes())
    return np.frombuffer(h.digest(), np.uint8).copy()


@register
class PixelCNNPrior(Model):
    name = "pixelcnn-prior"
    description = "gated PixelCNN prior over a vqvae run's codes (--parent RUN); samples through its decoder"
    section = "21.6.3"
    Options = PixelCNNPriorOptions
    eval_keys = ("test_nll", "bits_per_code", "uniform_nll")
    needs_parent = True

    def __init__(self, options: PixelCNNPriorOptions, spec, rng=None, parent=None):
        super().__init__(options, spec, parent)
        if not (parent.can("codes") and parent.can("decode_codes")):
            raise ValueError(f"pixelcnn-prior needs a parent run with discrete codes (a vqvae run); "
                             f"the parent is a {parent.name!r}")
        if options.kernel % 2 == 0:
            raise ValueError(f"--kernel must be odd, got {options.kernel}")
        self.inputs = parent.inputs
        self.num_codes, c = parent.num_codes, options.channels
        self.grid = tuple(parent.codes(np.zeros((1, spec.size), np.float32)).shape[1:])
        self.embed = nn.Embedding(self.num_codes, c, rng=rng)
        self.blocks = nn.ModuleList([nn.GatedBlock(c, options.kernel, first=i == 0, rng=rng)
                                     for i in range(options.blocks)])
        self.condition = nn.Embedding(spec.classes, 2 * c, rng=rng) if options.conditional == "class" else None
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 1, rng=rng), nn.ReLU(),
                                  nn.Conv2d(c, self.num_codes, 1, rng=rng))
        self.register_buffer("parent_sha256", parent_digest(parent))

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """As Module's, refusing a state trained on a parent whose weights have since changed."""
        saved = state.get("parent_sha256")
        if saved is not None and not np.array_equal(np.asarray(saved), parent_digest(self.parent)):
            raise ValueError("the parent run has changed since this prior was trained on its codes "
                             "(its weights' SHA-256 differs); train the prior again")
        super().load_state_dict(state, strict)

    # ---- the model ---------------------------------------------------------------------------

    def logits(self, codes, labels=None) -> Tensor:
        """[N, K, H, W] logits of every position's code given the codes before it."""
        index = backend.to_device(np.asarray(codes, np.int64), next(self.parameters()).device)
        x = self.embed(index).permute(0, 3, 1, 2)
        cond = self.condition(backend.to_device(np.asarray(labels, np.int64), x.device)) \
            if self.condition is not None else None
        v = h = x
        for block in self.blocks:
            v, h = block(v, h, cond)
        return self.head(h)

    def _nll(self, batch: dict) -> Tensor:
        """−log p(codes of x) per image [N], in nats."""
        codes = self.parent.codes(backend.to_device(batch["x"].data, "cpu"))
        logits = self.logits(codes, batch["y"])
        n, k = logits.shape[:2]
        flat = logits.permute(0, 2, 3, 1).reshape(-1, k)
        per_code = F.cross_entropy(flat, codes.reshape(-1), reduction="none")
        return F.sum(per_code.reshape(n, -1), axis=1)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        nll = self._nll(batch)
        return {"loss": F.mean(nll), "nll": nll}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        nll = self._nll(batch)
        return {"nll": nll}, {"nll": nll}

    def eval_summary(self, kept: dict) -> dict:
        """Bits per code of the test set, and a uniform prior's NLL (H·W·ln K) to compare."""
        positions = int(np.prod(self.grid))
        return {"bits_per_code": float(kept["nll"].mean()) / positions / math.log(2),
                "uniform_nll": positions * math.log(self.num_codes)}

    # ---- capabilities --------------------------------------------------------------------------

    @no_grad()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Codes drawn position by position in raster order, decoded by the parent; with
        --conditional class, labels 0, 1, ... in turn (one class per row of an 8-wide grid)."""
        labels = (np.arange(n) // 8) % self.spec.classes if self.condition is not None else None
        codes = np.zeros((n, *self.grid), np.int64)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):
                logits = backend.to_device(self.logits(codes, labels).data[:, :, i, j], "cpu").astype(np.float64)
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                codes[:, i, j] = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        return self.parent.decode_codes(codes)


