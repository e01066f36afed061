"""Masked autoregressive layers (MADE, Germain et al. 2015) for inverse autoregressive flows
(Kingma et al. 2016; textbook 21.2.5.3).

Each input dimension i gets a degree d(i) ∈ {1..D} (its place in the ordering), each hidden
unit a degree in {1..D−1}; a weight from unit u to unit v is kept when d(v) ≥ d(u) between
hidden layers and d(v) > d(u) into an output, so output i depends on exactly the inputs
before it in the ordering: the Jacobian of a MADE is strictly triangular in that order.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .. import functional as F
from ..tensor import Tensor
from . import init
from .layers import Linear
from .module import Module, ModuleList


class MaskedLinear(Module):
    """Linear with a fixed 0/1 ``mask`` [out, in] on its weight (the masked weights' gradient
    is zero too: the product is in the graph)."""

    def __init__(self, mask: np.ndarray, rng=None):
        super().__init__()
        self.linear = Linear(mask.shape[1], mask.shape[0], rng=rng)
        self.register_buffer("mask", init.copied(np.asarray(mask, np.float32)), constant=True)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.linear.weight * Tensor(self.mask.astype(self.linear.weight.dtype, copy=False))
        return F.linear(x, weight, self.linear.bias)


def degrees(d: int, hidden: int, reverse: bool) -> tuple:
    """(input degrees 1..D, in reverse for ``reverse``; hidden degrees cycling through 1..D−1)."""
    inputs = np.arange(1, d + 1)[::-1] if reverse else np.arange(1, d + 1)
    return inputs, np.arange(hidden) % max(d - 1, 1) + 1


class MADE(Module):
    """z [N, D] (and a context h [N, H]) → ``outputs`` arrays [N, D] each, output i a function
    of the z before it in the ordering and of all of h: masked D → hidden → hidden → outputs·D
    with tanh, the context entering the first layer unmasked."""

    def __init__(self, d: int, hidden: int, context: int = 0, outputs: int = 2, reverse: bool = False, rng=None):
        super().__init__()
        self.d, self.outputs = d, outputs
        inputs, hidden_degrees = degrees(d, hidden, reverse)
        self.layers = ModuleList([
            MaskedLinear((hidden_degrees[:, None] >= inputs[None, :]).astype(np.float32), rng),
            MaskedLinear((hidden_degrees[:, None] >= hidden_degrees[None, :]).astype(np.float32), rng),
            MaskedLinear(np.tile(inputs[:, None] > hidden_degrees[None, :], (outputs, 1)).astype(np.float32), rng)])
        self.context = Linear(context, hidden, bias=False, rng=rng) if context else None

    def forward(self, z: Tensor, context: Optional[Tensor] = None) -> list:
        h = self.layers[0](z)
        if self.context is not None:
            h = h + self.context(context)
        h = self.layers[2](F.tanh(self.layers[1](F.tanh(h))))
        return [h[:, i * self.d:(i + 1) * self.d] for i in range(self.outputs)]
