"""The one loss that needs its own primitive for numerical stability."""
import numpy as np

from kernels import bce_logits as _bce_logits

from .. import backend
from ..autograd import Function


class BCEWithLogits(Function):
    """Elementwise -[t log σ(x) + (1-t) log(1-σ(x))] = max(x, 0) - x t + log(1 + e^-|x|),
    finite for every finite logit.  d/dx = σ(x) - t,  d/dt = -x.

    Forward and ∂/∂x are the fused kernels (kernels/bce_logits.py), which take one shape and one
    dtype: x and t are broadcast and promoted first (NumPy's rules), and the engine sums the
    gradients back to each input's shape.
    """

    def forward(self, x, t):
        xp = backend.array_module(x if hasattr(x, "shape") else t)     # either may be a Python number
        dtype, shape = xp.result_type(x, t), np.broadcast_shapes(np.shape(x), np.shape(t))
        x, t = (xp.broadcast_to(xp.asarray(a, dtype), shape) for a in (x, t))
        self.saved = (x, t)
        return _bce_logits.forward(x, t)

    def backward(self, gy):
        x, t = self.saved
        gx = _bce_logits.backward(gy, x, t) if self.needs_grad(0) else None
        gt = -gy * x if self.needs_grad(1) else None
        return gx, gt
