"""Losses that are their own primitives: the binary one for numerical stability, the
categorical one because its gradient, softmax − one-hot, is cheaper than the path through
log-softmax and an index."""
import numpy as np

from kernels import bce_logits as _bce_logits

from .. import backend
from ..autograd import Function
from .reduce import LogSoftmax


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


class CrossEntropy(Function):
    """−log softmax(x)[t] along the class axis 1: x [N, C, d1, ...] (float), t [N, d1, ...]
    (integers in [0, C)), output [N, d1, ...].  d/dx = g · (softmax(x) − onehot(t)).

    The log-softmax is LogSoftmax's; the gradient is computed in x's own memory layout, so a
    convolution's batch-last logits [N, K, H, W] need no transposed copy either way."""

    def forward(self, x, t):
        xp = backend.array_module(x)
        self.t = xp.expand_dims(t, 1)
        self.log_p = LogSoftmax(axis=1).forward(x)
        return -xp.take_along_axis(self.log_p, self.t, axis=1)[:, 0]

    def backward(self, gy):
        xp = backend.array_module(gy)
        g = xp.exp(self.log_p)
        xp.put_along_axis(g, self.t, xp.take_along_axis(g, self.t, axis=1) - 1, axis=1)
        g *= xp.expand_dims(gy, 1)
        return g, None
