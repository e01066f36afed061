"""Linear, convolution, pooling, reshaping, embedding and dropout layers.

Parameter names, layouts and default initialisation match PyTorch's, so weights can be
copied across and results compared side by side.
"""
from __future__ import annotations


from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


def _empty(*shape) -> Parameter:
    return Parameter(init.filled(shape))


class Linear(Module):
    """y = x Wᵀ + b, W [out_features, in_features]."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.bias = _empty(out_features) if bias else None
        init.default_layer_init_(self.weight, self.bias, rng)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.in_features}, {self.out_features}): input has {x.shape[-1]} "
                             f"features (shape {x.shape})")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class _Conv(Module):
    """Shared set-up of the two convolution layers: a weight of ``weight_shape``, a bias per
    output channel, PyTorch's default initialisation, and the geometry arguments."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, bias: bool, rng, **args):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.in_channels, self.out_channels, self.args = in_channels, out_channels, args
        self.weight = _empty(*self.weight_shape(in_channels, out_channels), kh, kw)
        self.bias = _empty(out_channels) if bias else None
        init.default_layer_init_(self.weight, self.bias, rng)

    def extra_repr(self) -> str:
        kh, kw = self.weight.shape[2:]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=({kh}, {kw}), "
                + ", ".join(f"{k}={v}" for k, v in self.args.items()))


class Conv2d(_Conv):
    """2-D convolution, weight [out, in, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, bias, rng, stride=stride, padding=padding,
                         dilation=dilation)

    @staticmethod
    def weight_shape(in_channels: int, out_channels: int) -> tuple:
        return out_channels, in_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, **self.args)


class ConvTranspose2d(_Conv):
    """Transposed 2-D convolution (the adjoint of Conv2d), weight [in, out, kh, kw]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, bias: bool = True, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, bias, rng, stride=stride, padding=padding,
                         output_padding=output_padding, dilation=dilation)

    @staticmethod
    def weight_shape(in_channels: int, out_channels: int) -> tuple:
        return in_channels, out_channels

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, **self.args)


class Upsample(Module):
    """Nearest-neighbour upsampling by an integer factor."""

    def __init__(self, scale_factor: int):
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate_nearest(x, self.scale_factor)


class _Pool(Module):
    """A pooling layer: the subclass's ``pool`` (a functional form) with kernel, stride, padding."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.args = (kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x, *self.args)


class AvgPool2d(_Pool):
    """Mean over each window (zero padding counts, as PyTorch's default)."""
    pool = staticmethod(F.avg_pool2d)


class MaxPool2d(_Pool):
    """Max over each window (padding never wins)."""
    pool = staticmethod(F.max_pool2d)


class Flatten(Module):
    """[N, d1, d2, ...] → [N, d1·d2·...] (from ``start_dim`` on)."""

    def __init__(self, start_dim: int = 1):
        super().__init__()
        self.start_dim = start_dim

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(self.start_dim)


class Unflatten(Module):
    """Split axis ``dim`` into ``sizes``: [N, C·H·W] → [N, C, H, W]."""

    def __init__(self, dim: int, sizes: tuple):
        super().__init__()
        self.dim, self.sizes = dim, tuple(sizes)

    def forward(self, x: Tensor) -> Tensor:
        d = self.dim % x.ndim
        return x.reshape(*x.shape[:d], *self.sizes, *x.shape[d + 1:])


class Embedding(Module):
    """Lookup table weight [num_embeddings, embedding_dim], initialised N(0, 1) as PyTorch."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rng=None):
        super().__init__()
        self.weight = _empty(num_embeddings, embedding_dim)
        init.normal_(self.weight, rng=rng)

    def forward(self, indices) -> Tensor:
        return F.embedding(indices, self.weight)


class Dropout(Module):
    """Inverted dropout in training mode; the identity in eval mode."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)
