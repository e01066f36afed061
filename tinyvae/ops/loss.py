"""The one loss that needs its own primitive for numerical stability."""
from .. import backend
from ..autograd import Function
from .elementwise import log1p_exp_neg_abs, stable_sigmoid


class BCEWithLogits(Function):
    """Elementwise -[t log σ(x) + (1-t) log(1-σ(x))] = max(x, 0) - x t + log(1 + e^-|x|),
    finite for every finite logit.  d/dx = σ(x) - t,  d/dt = -x."""

    def forward(self, x, t):
        xp = backend.array_module(x)
        self.saved = (x, t)
        return xp.maximum(x, 0) - x * t + log1p_exp_neg_abs(x)

    def backward(self, gy):
        x, t = self.saved
        gx = gy * (stable_sigmoid(x) - t) if self.needs_grad(0) else None
        gt = -gy * x if self.needs_grad(1) else None
        return gx, gt
