"""Gated recurrent units (for sequence VAEs), with PyTorch's equations and parameter layout.

    r = σ(W_ir x + b_ir + W_hr h + b_hr)
    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 − z) ⊙ n + z ⊙ h

weight_ih [3H, I] and weight_hh [3H, H] stack the (r, z, n) blocks in that order.
"""
from __future__ import annotations

import math
from typing import Optional


from .. import backend
from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def gru_step(x: Tensor, h: Tensor, w_ih, w_hh, b_ih, b_hh) -> Tensor:
    """One GRU update h → h' for a batch x [B, I], h [B, H]."""
    gi = F.linear(x, w_ih, b_ih)
    gh = F.linear(h, w_hh, b_hh)
    i_r, i_z, i_n = F.chunk(gi, 3, axis=-1)
    h_r, h_z, h_n = F.chunk(gh, 3, axis=-1)
    r = F.sigmoid(i_r + h_r)
    z = F.sigmoid(i_z + h_z)
    n = F.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def _gru_params(module: Module, suffix: str, input_size: int, hidden_size: int, rng) -> None:
    bound = 1 / math.sqrt(hidden_size)
    for name, shape in (("weight_ih", (3 * hidden_size, input_size)), ("weight_hh", (3 * hidden_size, hidden_size)),
                        ("bias_ih", (3 * hidden_size,)), ("bias_hh", (3 * hidden_size,))):
        p = Parameter(init.filled(shape))
        init.uniform_(p, -bound, bound, rng)
        setattr(module, name + suffix, p)


class GRUCell(Module):
    def __init__(self, input_size: int, hidden_size: int, rng=None):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        _gru_params(self, "", input_size, hidden_size, rng)

    def forward(self, x: Tensor, h: Optional[Tensor] = None) -> Tensor:
        if h is None:       # on x's device: NumPy for NumPy inputs, CuPy for CuPy ones
            h = Tensor(backend.array_module(x.data).zeros((x.shape[0], self.hidden_size), x.dtype))
        return gru_step(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRU(Module):
    """Batch-first multi-layer GRU: x [B, T, I] → (outputs [B, T, H], h_n [layers, B, H])."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, rng=None):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        for layer in range(num_layers):
            _gru_params(self, f"_l{layer}", input_size if layer == 0 else hidden_size, hidden_size, rng)

    def forward(self, x: Tensor, h0: Optional[Tensor] = None):
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"GRU: expected input [B, T, {self.input_size}], got shape {x.shape}")
        batch, steps = x.shape[0], x.shape[1]
        if steps == 0:
            raise ValueError("GRU: the input sequence is empty (T = 0)")
        if h0 is None:
            h0 = Tensor(backend.array_module(x.data).zeros((self.num_layers, batch, self.hidden_size), x.dtype))
        seq, finals = x, []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{name}_l{layer}")
                                      for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            # every step's input projection in one product; the recurrence as one fused node
            seq = F.gru_sequence(F.linear(seq, w_ih, b_ih), h0[layer], w_hh, b_hh)
            finals.append(seq[:, steps - 1])
        return seq, F.stack(finals, axis=0)
