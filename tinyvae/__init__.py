"""tinyvae: a small, readable reverse-mode autodiff engine on NumPy/CuPy, and the VAE family on top."""
from ._allocator import keep_freed_memory

keep_freed_memory()

from . import functional, nn, optim  # noqa: E402
from .autograd import Function, grad, is_grad_enabled, no_grad  # noqa: E402
from .checkpoint import CheckpointError, load, save  # noqa: E402
from .gradcheck import GradcheckError, gradcheck  # noqa: E402
from .random import manual_seed  # noqa: E402
from .tensor import Tensor, tensor  # noqa: E402

__all__ = ["Tensor", "tensor", "Function", "grad", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
           "functional", "nn", "optim", "save", "load", "CheckpointError", "manual_seed"]
__version__ = "0.1.0"
