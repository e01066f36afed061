"""Batch and layer normalisation."""
from __future__ import annotations


from .. import functional as F
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


class _BatchNorm(Module):
    expected_dims: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(init.filled(num_features, 1.0)) if affine else None
        self.bias = Parameter(init.filled(num_features)) if affine else None
        self.register_buffer("running_mean", init.filled(num_features))
        self.register_buffer("running_var", init.filled(num_features, 1.0))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self.expected_dims or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected {self.expected_dims[0]}-D "
                             f"input with {self.num_features} channels, got shape {x.shape}")
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class BatchNorm1d(_BatchNorm):
    """Over [N, C] or [N, C, L]: statistics per channel C."""
    expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over [N, C, H, W]: statistics per channel C."""
    expected_dims = (4,)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(init.filled(self.normalized_shape, 1.0)) if elementwise_affine else None
        self.bias = Parameter(init.filled(self.normalized_shape)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-len(self.normalized_shape):]) != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape}: input shape {x.shape} does not end with it")
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
