"""A gated PixelCNN prior over the codes of a trained VQ model (textbook 21.6.3; van den Oord
et al. 2017, §3.2, with the gated PixelCNN of van den Oord et al. 2016): a second stage,
``tinyvae train --model pixelcnn-prior --parent RUN``. The parent (a ``vqvae`` or ``vqvae2``
run) turns each image into one grid of code indices c_l per level l, coarsest first (its
nearest-code search); the prior models every level in raster order, each given the coarser
ones (Razavi et al. 2019, §3.2: the top unconditional, the bottom conditioned on the top):

  p(c_1, ..., c_L) = Π_l Π_{(i,j) in raster order} p(c_l,ij | c_l,<ij, c_<l [, y])

with one PixelCNN of gated blocks per level (``nn.pixelcnn``), the coarser codes reaching it
as a map over its grid (embedded, repeated up to its size, two 3×3 convolutions), trained on
the negative log-likelihood of all levels in nats per image. The codes of the data set are
computed once with the parent's search and kept in the run folder (``derived``). Sampling
draws the top codes, then the bottom's, one position at a time, and decodes them with the
parent's decoder, so the VQ-VAE gets samples. ``--conditional class`` adds a class
embedding to every block (one class per row of the picture). The parent is fixed: its
weights' SHA-256 is kept with the prior, and a prior whose parent run has changed since is
refused.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Optional

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
    description = "gated PixelCNN prior over every level of a VQ run's codes (--parent RUN); samples through its decoder"
    section = "21.6.3"
    Options = PixelCNNPriorOptions
    eval_keys = ("test_nll", "bits_per_code", "uniform_nll")
    needs_parent = True

    def __init__(self, options: PixelCNNPriorOptions, spec, rng=None, parent=None):
        super().__init__(options, spec, parent)
        if not (parent.can("codes") and parent.can("decode_codes")):
            raise ValueError(f"pixelcnn-prior needs a parent run with discrete codes (a vqvae, vqvae2, vqgan or dvae run); "
                             f"the parent is a {parent.name!r}")
        if options.kernel % 2 == 0:
            raise ValueError(f"--kernel must be odd, got {options.kernel}")
        self.inputs = parent.inputs
        self.num_codes, c = parent.num_codes, options.channels
        self.grids = [tuple(g.shape[1:]) for g in parent.codes(np.zeros((1, spec.size), np.float32))]
        self.levels = nn.ModuleList([nn.PixelCNN(self.num_codes, c, options.blocks, options.kernel, rng)
                                     for _ in self.grids])
        self.coarser = nn.ModuleList([CoarserCodes(self.num_codes, c, self.grids[:l], grid, rng)
                                      for l, grid in enumerate(self.grids) if l > 0])
        self.classes = nn.ModuleList([nn.Embedding(spec.classes, 2 * c, rng=rng) for _ in self.grids]) \
            if options.conditional == "class" else None
        self.register_buffer("parent_sha256", parent_digest(parent), constant=True)

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """As Module's, refusing a state trained on a parent whose weights have since changed."""
        saved = state.get("parent_sha256")
        if saved is not None and not np.array_equal(np.asarray(saved), parent_digest(self.parent)):
            raise ValueError("the parent run has changed since this prior was trained on its codes "
                             "(its weights' SHA-256 differs); train the prior again")
        super().load_state_dict(state, strict)

    def derived(self, split, rng: np.random.Generator) -> dict:
        """The parent's codes of every image, ``codes_<l>`` [N, h_l, w_l] per level (of the
        images binarized once, for a parent on binary pixels)."""
        x = split.binarized(rng).x if self.inputs == "binary" else split.x
        parts = [self.parent.codes(x[i:i + 1000]) for i in range(0, len(x), 1000)]
        return {f"codes_{l}": np.concatenate([p[l] for p in parts]) for l in range(len(self.grids))}

    # ---- the model ---------------------------------------------------------------------------

    def _condition(self, level: int, codes: list, labels) -> Optional[Tensor]:
        """What level ``level``'s blocks are conditioned on: the coarser levels' codes (a map
        [N, 2C, H, W]) and the class ([N, 2C, 1, 1]), summed; None for neither."""
        device = next(self.parameters()).device
        parts = []
        if level > 0:
            parts.append(self.coarser[level - 1]([backend.to_device(np.asarray(c, np.int64), device)
                                                  for c in codes[:level]]))
        if self.classes is not None:
            embedded = self.classes[level](backend.to_device(np.asarray(labels, np.int64), device))
            parts.append(embedded.reshape(*embedded.shape, 1, 1))
        return sum(parts[1:], parts[0]) if parts else None

    def logits(self, level: int, codes: list, labels=None, condition: Optional[Tensor] = None) -> Tensor:
        """[N, K, H, W] logits of every position's code at ``level`` given the codes before it
        and the coarser levels' (``codes``: grids [N, h_l, w_l], coarsest first, up to
        ``level``). ``condition``: ``_condition``'s, when already computed."""
        if condition is None:
            condition = self._condition(level, codes, labels)
        index = backend.to_device(np.asarray(codes[level], np.int64), next(self.parameters()).device)
        return self.levels[level](index, condition)

    def _nll(self, batch: dict) -> Tensor:
        """−log p(codes of x) per image [N], in nats, all levels."""
        codes = [batch[f"codes_{l}"] for l in range(len(self.grids))]
        total = None
        for level in range(len(self.grids)):
            logits = self.logits(level, codes, batch["y"])                  # [N, K, H, W]
            target = backend.to_device(np.asarray(codes[level], np.int64), logits.device)
            nll = F.sum(F.cross_entropy(logits, target, reduction="none"), axis=(1, 2))
            total = nll if total is None else total + nll
        return total

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        nll = self._nll(batch)
        return {"loss": F.mean(nll), "nll": nll}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        nll = self._nll(batch)
        return {"nll": nll}, {"nll": nll}

    def eval_summary(self, kept: dict) -> dict:
        """Bits per code of the test set, and a uniform prior's NLL (Σ_l H_l·W_l·ln K) to compare."""
        positions = sum(int(np.prod(grid)) for grid in self.grids)
        return {"bits_per_code": float(kept["nll"].mean()) / positions / math.log(2),
                "uniform_nll": positions * math.log(self.num_codes)}

    # ---- capabilities --------------------------------------------------------------------------

    @no_grad()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Codes drawn level by level, coarsest first, position by position in raster order,
        decoded by the parent; with --conditional class, labels 0, 1, ... in turn (one class
        per row of an 8-wide grid)."""
        labels = (np.arange(n) // 8) % self.spec.classes if self.classes is not None else None
        codes = []
        for level, (height, width) in enumerate(self.grids):
            condition = self._condition(level, codes, labels)
            codes.append(np.zeros((n, height, width), np.int64))
            for i in range(height):
                for j in range(width):
                    logits = self.logits(level, codes, condition=condition).data[:, :, i, j]
                    logits = backend.to_device(logits, "cpu").astype(np.float64)
                    p = np.exp(logits - logits.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    codes[level][:, i, j] = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
        return self.parent.decode_codes(codes)


class CoarserCodes(nn.Module):
    """The coarser levels' codes as a map over a finer grid: each level's codes embedded in C
    channels and passed through two 3×3 convolutions at its own resolution (so each cell
    hears from its neighbours), repeated up to ``grid`` (each coarse cell covers an s×s block
    of fine ones), summed, then a 1×1 convolution to the 2C channels a gated block adds."""

    def __init__(self, num_codes: int, channels: int, coarser: list, grid: tuple, rng=None):
        super().__init__()
        self.scales = []
        for h, w in coarser:
            if grid[0] % h or grid[0] // h != grid[1] // w or grid[1] % w:
                raise ValueError(f"pixelcnn-prior: a {h}x{w} level does not tile the {grid[0]}x{grid[1]} level "
                                 f"below it by square blocks")
            self.scales.append(grid[0] // h)
        self.embed = nn.ModuleList([nn.Embedding(num_codes, channels, rng=rng) for _ in coarser])
        self.spread = nn.ModuleList([nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, rng=rng), nn.ReLU(),
                                                   nn.Conv2d(channels, channels, 3, 1, 1, rng=rng))
                                     for _ in coarser])
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 2 * channels, 1, rng=rng))

    def forward(self, codes: list) -> Tensor:
        """``codes``: integer grids [N, h_l, w_l] of the coarser levels → [N, 2C, H, W]."""
        total = None
        for embed, spread, grid, scale in zip(self.embed, self.spread, codes, self.scales):
            up = F.interpolate_nearest(spread(embed(grid).permute(0, 3, 1, 2)), scale)
            total = up if total is None else total + up
        return self.out(total)
