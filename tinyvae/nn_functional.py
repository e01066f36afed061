"""Layer-level functions (the functional forms behind ``tinyvae.nn``), re-exported by
``tinyvae.functional``: linear, convolutions, pooling, upsampling, normalisation,
dropout, embedding."""
from __future__ import annotations

from . import backend
from .functional import broadcast_to, getitem, mean, reshape, sqrt, var
from .ops import conv as _conv
from .ops import linalg as _linalg
from .random import get_rng
from .tensor import Tensor


def linear(x, weight, bias=None) -> Tensor:
    """y = x Wᵀ + b with W [out, in] (PyTorch's layout), one node."""
    return _linalg.Linear()(x, weight) if bias is None else _linalg.Linear()(x, weight, bias)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1) -> Tensor:
    """x [N, C, H, W] ⋆ weight [O, C, kh, kw]; ``padding``: p, (ph, pw) or ((top, bottom), (left, right))."""
    args = (x, weight) if bias is None else (x, weight, bias)
    return _conv.Conv2d(stride, padding, dilation)(*args)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1) -> Tensor:
    args = (x, weight) if bias is None else (x, weight, bias)
    return _conv.ConvTranspose2d(stride, padding, output_padding, dilation)(*args)


def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    return _conv.AvgPool2d(kernel_size, stride, padding)(x)


def max_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    return _conv.MaxPool2d(kernel_size, stride, padding)(x)


def interpolate_nearest(x, scale_factor: int) -> Tensor:
    """Nearest-neighbour upsampling of [N, C, H, W] by an integer factor: each pixel becomes an
    s×s block. Written as reshape → broadcast → reshape, so its backward (block sums) is automatic."""
    if not isinstance(scale_factor, int) or scale_factor < 1:
        raise ValueError(f"interpolate_nearest: scale_factor must be a positive int, got {scale_factor!r}")
    n, c, h, w = x.shape
    s = scale_factor
    blocks = broadcast_to(reshape(x, n, c, h, 1, w, 1), (n, c, h, s, w, s))
    return reshape(blocks, n, c, h * s, w * s)


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training: bool = True,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """(x − μ) / √(σ² + ε) · γ + β over every axis but the channel axis 1.

    Training: batch statistics, and the running ones (plain arrays) updated in place with
    PyTorch's rule r ← (1 − m) r + m·stat (unbiased variance for the running value).
    Evaluation: the running statistics.
    """
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mu = mean(x, axes, keepdims=True)
        v = var(x, axes, keepdims=True)
        n = x.size // x.shape[1]
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mu.data.reshape(-1)
            running_var *= 1 - momentum
            running_var += momentum * v.data.reshape(-1) * (n / max(n - 1, 1))
    else:
        mu = Tensor(running_mean.reshape(shape))
        v = Tensor(running_var.reshape(shape))
    y = (x - mu) / sqrt(v + eps)
    if weight is not None:
        y = y * reshape(weight, *shape)
    if bias is not None:
        y = y + reshape(bias, *shape)
    return y


def layer_norm(x, normalized_shape: tuple, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """(x − μ) / √(σ² + ε) · γ + β over the last ``len(normalized_shape)`` axes."""
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    y = (x - mean(x, axes, keepdims=True)) / sqrt(var(x, axes, keepdims=True) + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def dropout(x, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1 − p) (inverted dropout)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    keep = get_rng(rng).random(x.shape) >= p
    mask = backend.to_device(keep, x.device).astype(x.dtype) / (1 - p)
    return x * Tensor(mask)


def embedding(indices, weight) -> Tensor:
    """Rows of ``weight`` [num, dim] picked by integer ``indices`` (any shape); repeated rows
    accumulate their gradients."""
    idx = indices.data if isinstance(indices, Tensor) else indices
    if backend.array_module(idx).asarray(idx).dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    return getitem(weight, idx)

