"""tinyvae: a small, readable reverse-mode autodiff engine on NumPy/CuPy, and the VAE family on top."""
from . import functional
from .autograd import Function, is_grad_enabled, no_grad
from .gradcheck import GradcheckError, gradcheck
from .tensor import Tensor, tensor

__all__ = ["Tensor", "tensor", "Function", "no_grad", "is_grad_enabled", "gradcheck",
           "GradcheckError", "functional"]
__version__ = "0.1.0"
