"""Masked convolutions and the gated PixelCNN block (van den Oord et al. 2016, "Conditional
image generation with PixelCNN decoders"; textbook 22.3.2), for autoregressive priors over
grids in raster order.

A block keeps two stacks. The vertical stack v sees every row above and the current row
(a k×k kernel whose rows below the centre are masked); it reaches the horizontal stack only
shifted down one row, so the horizontal stack h at (i, j) hears from rows < i through it,
and from its own row through a 1×k kernel masked right of the centre (type B) or from the
centre on (type A, the first block, whose input still holds the value to predict). So the
output at (i, j) depends on exactly the positions before it in raster order, with no blind
spot (the original PixelCNN's single masked kernel misses the region above and to the
right). Each stack's convolution gives 2C channels and the gated unit tanh(a) ⊙ σ(b) turns
them into C; an optional condition adds to both halves: a vector per image (a class
embedding, [N, 2C, 1, 1]) or a map over the grid (codes of a coarser level, [N, 2C, H, W]):

  v' = tanh(W_v∗v + c_v) ⊙ σ(W'_v∗v + c'_v)
  h' = h + W_o [tanh(W_h∗h + U↓(W_v∗v) + c_h) ⊙ σ(...)]        (no residual in block A)
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .activation import ReLU
from .layers import Conv2d, Embedding
from .module import Module, ModuleList, Sequential


class MaskedConv2d(Module):
    """Conv2d, stride 1, 'same' padding, whose kernel is multiplied by a fixed 0/1 ``mask``
    [kh, kw]. The masked weights start at zero and their gradient is zero, so they stay zero
    under any optimizer without weight decay.

    Only the smallest window of the kernel holding the mask's ones and the centre is
    convolved, with the padding moved to match (a vertical 3×3 kernel is its top 2×3 rows,
    padded one row above and none below): the rows and columns that are always zero would
    cost a third of the block's products and add nothing."""

    def __init__(self, in_channels: int, out_channels: int, mask: np.ndarray, rng=None):
        super().__init__()
        kh, kw = mask.shape
        if kh % 2 == 0 or kw % 2 == 0 or not np.any(mask):
            raise ValueError(f"MaskedConv2d: the mask needs odd sides (a centre) and a one, got {mask}")
        self.conv = Conv2d(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), rng=rng)
        self.register_buffer("mask", init.copied(np.asarray(mask, np.float32)), constant=True)
        if self.conv.weight.data.flags.writeable:          # not a placeholder (nn.init.placeholders)
            self.conv.weight.data = self.conv.weight.data * self.mask
            self.conv.weight.mark_written()
        centre, ones = (kh // 2, kw // 2), np.argwhere(mask)
        first, last = np.minimum(ones.min(0), centre), np.maximum(ones.max(0), centre)
        self.window = tuple(slice(int(a), int(b) + 1) for a, b in zip(first, last))
        self.padding = tuple((int(c - a), int(b - c)) for a, b, c in zip(first, last, centre))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.conv.weight[(slice(None), slice(None)) + self.window]
        weight = weight * Tensor(self.mask[self.window].astype(weight.dtype, copy=False))
        return F.conv2d(x, weight, self.conv.bias, padding=self.padding)


def vertical_mask(k: int) -> np.ndarray:
    """k×k: the rows above the centre and the centre row."""
    mask = np.zeros((k, k), np.float32)
    mask[: k // 2 + 1] = 1
    return mask


def horizontal_mask(k: int, first: bool) -> np.ndarray:
    """1×k: the columns left of the centre, and the centre itself unless ``first`` (type A)."""
    mask = np.zeros((1, k), np.float32)
    mask[0, : k // 2 + (0 if first else 1)] = 1
    return mask


def _gate(t: Tensor, channels: int) -> Tensor:
    return F.tanh(t[:, :channels]) * F.sigmoid(t[:, channels:])


class GatedBlock(Module):
    """One gated PixelCNN layer on (v, h) [N, C, H, W] each; ``first``: type A (see above).
    ``condition``: [N, 2C, 1, 1] or [N, 2C, H, W], added to both stacks' pre-activations."""

    def __init__(self, channels: int, kernel: int = 3, first: bool = False, rng=None):
        super().__init__()
        self.channels, self.first = channels, first
        self.vertical = MaskedConv2d(channels, 2 * channels, vertical_mask(kernel), rng)
        self.horizontal = MaskedConv2d(channels, 2 * channels, horizontal_mask(kernel, first), rng)
        self.down = Conv2d(2 * channels, 2 * channels, 1, rng=rng)
        self.out = Conv2d(channels, channels, 1, rng=rng)

    def forward(self, v: Tensor, h: Tensor, condition: Optional[Tensor] = None) -> tuple:
        c = self.channels
        v_pre = self.vertical(v)
        shifted = F.pad(v_pre, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]       # row i gets row i − 1
        h_pre = self.horizontal(h) + self.down(shifted)
        if condition is not None:
            v_pre, h_pre = v_pre + condition, h_pre + condition
        h_new = self.out(_gate(h_pre, c))
        return _gate(v_pre, c), (h_new if self.first else h + h_new)


class PixelCNN(Module):
    """Logits [N, K, H, W] of each position's code given the codes before it in raster order:
    an embedding of the K codes into C channels, ``blocks`` gated blocks (the first of type A)
    and a 1×1 head. ``forward(codes [N, H, W] int, condition)``, the condition as GatedBlock's."""

    def __init__(self, num_codes: int, channels: int, blocks: int, kernel: int = 3, rng=None):
        super().__init__()
        self.embed = Embedding(num_codes, channels, rng=rng)
        self.blocks = ModuleList([GatedBlock(channels, kernel, first=i == 0, rng=rng) for i in range(blocks)])
        self.head = Sequential(ReLU(), Conv2d(channels, channels, 1, rng=rng), ReLU(),
                               Conv2d(channels, num_codes, 1, rng=rng))

    def forward(self, codes, condition: Optional[Tensor] = None) -> Tensor:
        v = h = self.embed(codes).permute(0, 3, 1, 2)
        for block in self.blocks:
            v, h = block(v, h, condition)
        return self.head(h)
