"""``tinyvae.functional`` (import as ``F``): every differentiable op as a function.

Primitives are ``Function`` subclasses in ``tinyvae.ops``; the rest here (var, losses)
are compositions of them, so their gradients come from the primitives' backward.
"""
from __future__ import annotations

import builtins
import math
from typing import Optional, Sequence, Union

from . import backend
from .ops import device as _device
from .ops import elementwise as _ew
from .ops import linalg as _linalg
from .ops import loss as _loss
from .ops import recompute as _recompute
from .ops import reduce as _reduce
from .ops import shape as _shape
from .tensor import Tensor, as_tensor

Axis = Union[int, Sequence[int], None]

# ---- arithmetic ---------------------------------------------------------------


def add(a, b) -> Tensor: return _ew.Add()(a, b)
def sub(a, b) -> Tensor: return _ew.Sub()(a, b)
def mul(a, b) -> Tensor: return _ew.Mul()(a, b)
def div(a, b) -> Tensor: return _ew.Div()(a, b)
def pow(a, b) -> Tensor: return _ew.Pow()(a, b)
def neg(x) -> Tensor: return _ew.Neg()(x)
def matmul(a, b) -> Tensor: return _linalg.MatMul()(a, b)

# ---- pointwise maths ---------------------------------------------------------------


def exp(x) -> Tensor: return _ew.Exp()(x)
def log(x) -> Tensor: return _ew.Log()(x)
def log1p(x) -> Tensor: return _ew.Log1p()(x)
def sqrt(x) -> Tensor: return _ew.Sqrt()(x)
def abs(x) -> Tensor: return _ew.Abs()(x)
def tanh(x) -> Tensor: return _ew.Tanh()(x)
def sigmoid(x) -> Tensor: return _ew.Sigmoid()(x)
def relu(x) -> Tensor: return _ew.Relu()(x)
def leaky_relu(x, negative_slope: float = 0.01) -> Tensor: return _ew.LeakyRelu(negative_slope)(x)
def softplus(x) -> Tensor: return _ew.Softplus()(x)
def log_sigmoid(x) -> Tensor: return _ew.LogSigmoid()(x)
def gelu(x, approximate: str = "none") -> Tensor: return _ew.Gelu(approximate)(x)
def silu(x) -> Tensor: return _ew.Silu()(x)
def maximum(a, b) -> Tensor: return _ew.Maximum()(a, b)
def minimum(a, b) -> Tensor: return _ew.Minimum()(a, b)
def clip(x, lo: Optional[float] = None, hi: Optional[float] = None) -> Tensor: return _ew.Clip(lo, hi)(x)


def where(cond, a, b) -> Tensor:
    """Elementwise ``a`` where ``cond`` else ``b``; ``cond`` is boolean and not differentiated."""
    return _ew.Where(cond.data if isinstance(cond, Tensor) else cond)(a, b)

# ---- reductions ---------------------------------------------------------------------


def sum(x, axis: Axis = None, keepdims: bool = False) -> Tensor: return _reduce.Sum(axis, keepdims)(x)
def mean(x, axis: Axis = None, keepdims: bool = False) -> Tensor: return _reduce.Mean(axis, keepdims)(x)
def max(x, axis: Axis = None, keepdims: bool = False) -> Tensor: return _reduce.MaxMin(axis, keepdims, True)(x)
def min(x, axis: Axis = None, keepdims: bool = False) -> Tensor: return _reduce.MaxMin(axis, keepdims, False)(x)
def logsumexp(x, axis: Axis = None, keepdims: bool = False) -> Tensor: return _reduce.LogSumExp(axis, keepdims)(x)
def softmax(x, axis: int = -1) -> Tensor: return _reduce.Softmax(axis)(x)
def log_softmax(x, axis: int = -1) -> Tensor: return _reduce.LogSoftmax(axis)(x)


def var(x, axis: Axis = None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance Σ(x - x̄)² / (n - ddof), as NumPy's ``var`` (ddof=0 by default)."""
    x = as_tensor(x)
    centered = x - mean(x, axis, keepdims=True)
    n = math.prod(x.shape[a] for a in _reduce.normalize_axis(axis, x.ndim))
    return sum(centered * centered, axis, keepdims) / (n - ddof)

# ---- shapes -------------------------------------------------------------------------


def _shape_arg(shape) -> tuple:
    return tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else tuple(shape)


def reshape(x, *shape) -> Tensor: return _shape.Reshape(_shape_arg(shape))(x)
def permute(x, *dims) -> Tensor: return _shape.Permute(_shape_arg(dims))(x)
def broadcast_to(x, *shape) -> Tensor: return _shape.BroadcastTo(_shape_arg(shape))(x)
def getitem(x, index) -> Tensor: return _shape.GetItem(_raw_index(index))(x)
def concat(xs: Sequence, axis: int = 0) -> Tensor: return _shape.Concat(axis)(*xs)
def stack(xs: Sequence, axis: int = 0) -> Tensor: return _shape.Stack(axis)(*xs)
def pad(x, pad_width, value: float = 0.0) -> Tensor: return _shape.Pad(pad_width, value)(x)
def tril(x, k: int = 0) -> Tensor: return _shape.Tril(k)(x)
def diagonal(x, offset: int = 0, axis1: int = 0, axis2: int = 1) -> Tensor:
    return _shape.Diagonal(offset, axis1, axis2)(x)


expand = broadcast_to


def straight_through(value, y) -> Tensor:
    """``value`` (an array of y's shape) forward, y's gradient backward."""
    return _shape.StraightThrough(value)(y)


def one_hot_straight_through(y) -> Tensor:
    """One-hot of the argmax over the last axis (ties to the first), exactly, with the
    gradient passed straight to ``y``."""
    xp = backend.array_module(y.data)
    hard = xp.zeros_like(y.data)
    xp.put_along_axis(hard, y.data.argmax(axis=-1)[..., None], 1, axis=-1)
    return straight_through(hard, y)


def transpose(x, dim0: int, dim1: int) -> Tensor:
    """Swap two axes (PyTorch's ``transpose``; for a full reordering use ``permute``)."""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, *dims)


def split(x, sections: Union[int, Sequence[int]], axis: int = 0) -> tuple:
    """PyTorch's split: an int is the size of each piece (the last may be smaller);
    a list gives each piece's size."""
    n = x.shape[axis]
    sizes = [sections] * (n // sections) + ([n % sections] if n % sections else []) \
        if isinstance(sections, int) else list(sections)
    if builtins.sum(sizes) != n:
        raise ValueError(f"split: sizes {sizes} do not add up to {n} along axis {axis}")
    cuts, total = [], 0
    for s in sizes[:-1]:
        total += s
        cuts.append(total)
    return _shape.Split(cuts, axis)(x)


def chunk(x, chunks: int, axis: int = 0) -> tuple:
    """``chunks`` pieces of size ceil(n / chunks) (the last may be smaller), as PyTorch."""
    return split(x, math.ceil(x.shape[axis] / chunks), axis)


def _raw_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index

# ---- device and dtype -----------------------------------------------------------------


def to_device(x, device: str) -> Tensor: return _device.ToDevice(device)(x)
def cast(x, dtype) -> Tensor: return _device.Cast(dtype)(x)

# ---- losses ---------------------------------------------------------------------------


def reduce_loss(per_element: Tensor, reduction: str) -> Tensor:
    """'none' keeps the elementwise loss, 'mean' averages it, 'sum' adds it up."""
    if reduction == "none":
        return per_element
    if reduction == "mean":
        return mean(per_element)
    if reduction == "sum":
        return sum(per_element)
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def binary_cross_entropy_with_logits(logits, target, reduction: str = "mean") -> Tensor:
    """-[t log σ(x) + (1 - t) log(1 - σ(x))], stable for any logit x."""
    return reduce_loss(_loss.BCEWithLogits()(logits, target), reduction)


def mse_loss(x, target, reduction: str = "mean") -> Tensor:
    """(x - target)²."""
    d = x - target
    return reduce_loss(d * d, reduction)


_LOG_2PI = math.log(2 * math.pi)


def gaussian_nll(x, mu, logvar, reduction: str = "mean") -> Tensor:
    """-log N(x; μ, exp(logvar)) = ½ [log 2π + logvar + (x - μ)² e^(-logvar)], with the constant."""
    d = x - mu
    return reduce_loss(0.5 * (logvar + d * d * exp(-logvar) + _LOG_2PI), reduction)


def cross_entropy(logits, target, reduction: str = "mean") -> Tensor:
    """−log softmax(logits)[target] along the class axis 1: logits [N, C] or [N, C, d1, ...]
    and integer class targets [N] or [N, d1, ...] (PyTorch's convention), one fused node."""
    t = target.data if isinstance(target, Tensor) else target
    if logits.ndim < 2 or t.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"cross_entropy: logits must be [N, C, ...] and targets [N, ...] without the class axis, "
                         f"got logits {logits.shape} and targets {t.shape}")
    xp = backend.array_module(t)
    if t.size and (t.min() < 0 or t.max() >= logits.shape[1]):
        raise ValueError(f"cross_entropy: targets must be classes in [0, {logits.shape[1]}), got "
                         f"{int(t.min())}..{int(t.max())}")
    return reduce_loss(_loss.CrossEntropy()(logits, xp.asarray(t)), reduction)


# ---- memory ---------------------------------------------------------------------------


def recompute(fn, inputs: Sequence, params: Sequence = (), rng=None) -> Tensor:
    """``fn(*inputs)`` without keeping its graph: backward runs it again (ops/recompute.py).
    ``params``: the parameters ``fn`` uses; ``rng``: the generator it draws from."""
    inputs, params = list(inputs), list(params)
    return _recompute.Recompute(fn, len(inputs), rng)(*inputs, *params)


# ---- fused kernels ----------------------------------------------------------------------


def reparameterize_kl(mu, logvar, eps, per_element: bool = False) -> tuple:
    """(z, kl): z = μ + exp(½ logvar) ⊙ ε and the KL of N(μ, exp(logvar)) to N(0, I) over the
    last axis (per element if ``per_element``), as one node on the fused kernels."""
    from .ops.fused import ReparamKL
    return ReparamKL(per_element)(mu, logvar, eps)

def gru_sequence(gi, h0, w_hh, b_hh) -> Tensor:
    """A GRU layer's states hs [B, T, H] from its input projections gi [B, T, 3H] (W_i x_t + b_i,
    (r, z, n) blocks), the first state h0 [B, H] and W_h [3H, H], b_h [3H]: the recurrence of
    ``nn.rnn.gru_step`` as one node on the fused cell kernel (ops/rnn.py)."""
    from .ops.rnn import GRUSequence
    return GRUSequence()(gi, h0, w_hh, b_hh)

# ---- layer functions (defined in nn_functional.py, public here) -----------------------
from .nn_functional import (avg_pool2d, batch_norm, conv2d, conv_transpose2d, dropout,  # noqa: E402,F401
                            embedding, interpolate_nearest, layer_norm, linear, max_pool2d)
