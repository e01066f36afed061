"""A GRU layer's recurrence over a whole sequence as one node (what cuDNN and PyTorch do):
the input projections gi = W_i x_t + b_i of every step come in precomputed (one matrix product
for all steps, ``nn.GRU``), and this op runs

    gh_t = W_h h_{t−1} + b_h             (BLAS, one product per step: h_{t−1} is needed first)
    h_t  = cell(gi_t, gh_t, h_{t−1})     (kernels/gru_cell.py: gates and update in one pass)

Backward runs the steps in reverse: the cell's kernel gives ∂L/∂gi_t and ∂L/∂gh_t, and
∂L/∂h_{t−1} = (cell's direct part) + ∂L/∂gh_t W_h; ∂L/∂W_h = Σ_t ∂L/∂gh_tᵀ h_{t−1} and
∂L/∂b_h = Σ_t ∂L/∂gh_t are then one product and one sum over all steps. An unfused step is
about fifteen nodes; a 58-token molecule made the graph a thousand nodes per layer.
"""
from __future__ import annotations

from kernels import gru_cell as _cell

from .. import backend
from ..autograd import Function


class GRUSequence(Function):
    """hs [B, T, H] from gi [B, T, 3H], h0 [B, H], W_h [3H, H], b_h [3H]."""

    def forward(self, gi, h0, w_hh, b_hh):
        B, T, H3 = gi.shape
        if H3 != 3 * h0.shape[-1] or h0.shape != (B, H3 // 3) or w_hh.shape != (H3, H3 // 3) or b_hh.shape != (H3,):
            raise ValueError(f"gru_sequence: expected gi [B, T, 3H], h0 [B, H], w_hh [3H, H], b_hh [3H]; got "
                             f"{gi.shape}, {h0.shape}, {w_hh.shape}, {b_hh.shape}")
        xp = backend.array_module(gi)
        gi_steps = xp.ascontiguousarray(gi.transpose(1, 0, 2))            # [T, B, 3H]: each step contiguous
        hs, gates, ghs = [h0], [], []
        for t in range(T):
            gh = hs[-1] @ w_hh.T + b_hh
            h, *rzn = _cell.forward(gi_steps[t], gh, hs[-1])
            hs.append(h)
            gates.append(rzn)
            ghs.append(gh)
        self.saved = (hs, gates, ghs, w_hh)
        return xp.stack(hs[1:], axis=1)

    def backward(self, g_hs):
        hs, gates, ghs, w_hh = self.saved
        xp = backend.array_module(g_hs)
        g_steps = xp.ascontiguousarray(g_hs.transpose(1, 0, 2))
        g_h = xp.zeros_like(hs[0])
        g_gis, g_ghs = [None] * len(ghs), [None] * len(ghs)
        for t in reversed(range(len(ghs))):
            g_gis[t], g_ghs[t], direct = _cell.backward(g_steps[t] + g_h, *gates[t], ghs[t], hs[t])
            g_h = direct + g_ghs[t] @ w_hh
        g_gh = xp.stack(g_ghs)                                            # [T, B, 3H]
        previous = xp.stack(hs[:-1])                                      # h_{t−1}: [T, B, H]
        g_w = g_gh.reshape(-1, g_gh.shape[-1]).T @ previous.reshape(-1, previous.shape[-1])
        return xp.stack(g_gis, axis=1), g_h, g_w, g_gh.sum(axis=(0, 1))
