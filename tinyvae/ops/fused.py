"""Engine ops backed by the custom kernels in the top-level ``kernels`` package."""
from __future__ import annotations

from kernels import reparam_kl as _reparam_kl

from .. import backend
from ..autograd import Function


class ReparamKL(Function):
    """(z, kl) = (μ + exp(½ℓ) ⊙ ε, ½ Σ_d (μ² + eˡ − 1 − ℓ)) in one pass, over the last axis.

    Two outputs; forward and backward are the fused kernels (see kernels/reparam_kl.py for the
    maths). Leading axes are flattened into rows for the kernels and restored after.
    """

    def __init__(self, per_element: bool = False):
        self.per_element = per_element

    def forward(self, mu, logvar, eps):
        if not (mu.shape == logvar.shape == eps.shape) or mu.ndim == 0:
            raise ValueError(f"reparameterize_kl: mu, logvar and eps must share one shape with at least one "
                             f"axis, got {mu.shape}, {logvar.shape}, {eps.shape}")
        self.shape = mu.shape
        rows = [a.reshape(-1, mu.shape[-1]) for a in (mu, logvar, eps)]
        z, kl = _reparam_kl.forward(*rows, per_element=self.per_element)
        self.saved = rows
        return z.reshape(mu.shape), kl.reshape(mu.shape if self.per_element else mu.shape[:-1])

    def backward(self, g_z, g_kl):
        mu, logvar, eps = self.saved
        g_kl = g_kl.reshape(mu.shape if self.per_element else mu.shape[:1])
        g_mu, g_lv = _reparam_kl.backward(g_z.reshape(mu.shape), g_kl, mu, logvar, eps)
        g_eps = None
        if self.needs_grad(2):   # ∂z/∂ε = exp(½ℓ); rarely wanted, so not in the kernel
            xp = backend.array_module(mu)
            g_eps = (g_z.reshape(mu.shape) * xp.exp(0.5 * logvar)).reshape(self.shape)
        return g_mu.reshape(self.shape), g_lv.reshape(self.shape), g_eps
