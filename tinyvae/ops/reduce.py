"""Reductions and axis-wise normalisers. ``axis`` is an int, a tuple or None; ``keepdims``
as in NumPy.  Backward re-inserts the reduced axes (``expand_reduced``) and lets
broadcasting spread the gradient.
"""
import numpy as np

from .. import backend
from ..autograd import Function


def normalize_axis(axis, ndim: int) -> tuple:
    """Axis argument as a sorted tuple of non-negative ints (None means all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor of {ndim} dims")
        out.append(a % max(ndim, 1))
    return tuple(sorted(set(out)))


def expand_reduced(g, axes: tuple, keepdims: bool):
    """Give a reduced gradient back its size-1 axes so it broadcasts against the input."""
    if keepdims or not axes:
        return g
    shape = list(g.shape)
    for a in axes:
        shape.insert(a, 1)
    return g.reshape(shape)


class Sum(Function):
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = normalize_axis(self.axis, x.ndim)
        self.in_shape = x.shape
        # asarray: NumPy returns a scalar, not a 0-d array, for a reduction over every axis
        return backend.array_module(x).asarray(x.sum(axis=self.axes, keepdims=self.keepdims))

    def backward(self, gy):
        g = expand_reduced(gy, self.axes, self.keepdims)
        return backend.array_module(g).broadcast_to(g, self.in_shape)


class Mean(Sum):
    def forward(self, x):
        y = super().forward(x)
        self.count = x.size // max(y.size, 1)
        return y / self.count

    def backward(self, gy):
        return super().backward(gy / self.count)


class MaxMin(Function):
    """max or min over axes; the gradient goes to the one selected element (the first
    occurrence, as argmax/argmin choose)."""

    def __init__(self, axis=None, keepdims=False, largest=True):
        self.axis, self.keepdims, self.largest = axis, keepdims, largest

    def forward(self, x):
        xp = backend.array_module(x)
        if x.size == 0:
            raise ValueError("max/min of an empty tensor")
        self.axes = normalize_axis(self.axis, x.ndim)
        kept = [a for a in range(x.ndim) if a not in self.axes]
        self.perm = kept + list(self.axes)                      # reduced axes moved last
        moved = x.transpose(self.perm)
        self.moved_shape = moved.shape
        flat = moved.reshape(moved.shape[:len(kept)] + (-1,))   # [..., R]
        arg = (xp.argmax if self.largest else xp.argmin)(flat, axis=-1)
        self.saved = arg
        self.flat_shape = flat.shape
        y = xp.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
        if self.keepdims:
            y = y.reshape([1 if a in self.axes else n for a, n in enumerate(x.shape)])
        return y

    def backward(self, gy):
        xp = backend.array_module(gy)
        arg = self.saved
        g = xp.zeros(self.flat_shape, gy.dtype)
        xp.put_along_axis(g, arg[..., None], gy.reshape(arg.shape)[..., None], axis=-1)
        inverse = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inverse[p] = i
        return g.reshape(self.moved_shape).transpose(inverse)


class LogSumExp(Function):
    """y = m + log Σ exp(x - m) with m = max x (stable); dy/dx = softmax(x) = exp(x - y)."""

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        xp = backend.array_module(x)
        self.axes = normalize_axis(self.axis, x.ndim)
        m = x.max(axis=self.axes, keepdims=True)
        m = xp.where(xp.isinf(m), 0, m)      # all -inf (or +inf) rows: shift by 0, not inf
        with np.errstate(divide="ignore"):     # log 0 = −inf is the right answer for an all −inf row
            y = m + xp.log(xp.exp(x - m).sum(axis=self.axes, keepdims=True))
        self.saved = (x, y)
        return y if self.keepdims else y.reshape([n for a, n in enumerate(x.shape) if a not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        xp = backend.array_module(x)
        return expand_reduced(gy, self.axes, self.keepdims) * xp.exp(x - y)


class Softmax(Function):
    """y = exp(x - logsumexp x); backward y ⊙ (g - Σ g ⊙ y)."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = backend.array_module(x)
        e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
        y = e / e.sum(axis=self.axis, keepdims=True)
        self.saved = y
        return y

    def backward(self, gy):
        y = self.saved
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - logsumexp x; backward g - softmax(x) Σ g."""

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        xp = backend.array_module(x)
        shifted = x - x.max(axis=self.axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.axis, keepdims=True))
        self.saved = y
        return y

    def backward(self, gy):
        xp = backend.array_module(gy)
        return gy - xp.exp(self.saved) * gy.sum(axis=self.axis, keepdims=True)
