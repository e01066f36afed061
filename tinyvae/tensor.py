"""``Tensor``: an array (NumPy or CuPy) plus what reverse-mode autodiff needs.

A tensor made by a recorded op remembers its ``creator`` (the Function) and which of
its outputs it is (``index``); leaves have ``creator is None``.  Operators and methods
are thin wrappers over ``tinyvae.functional``.

``version`` counts the library's in-place writes to ``data`` (optimizer steps,
initialisers, ``load_state_dict``, EMA codebook updates: each calls ``mark_written``). A
recorded op notes its inputs' versions, and backward refuses to use values that changed
since (PyTorch's rule). Writing into ``.data`` by hand is outside this guarantee: autograd
cannot see it, and a backward after it may silently use the new values.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import backend


class Tensor:
    __slots__ = ("data", "grad", "requires_grad", "creator", "index", "version", "name", "__weakref__")
    __array_ufunc__ = None      # make NumPy defer to our reflected operators (ndarray * Tensor)

    def __init__(self, data, requires_grad: bool = False, creator=None, index: int = 0):
        # Internal constructor: ``data`` is already an array. Users call ``tinyvae.tensor``.
        self.data = data
        self.grad = None
        self.requires_grad = requires_grad
        self.creator = creator
        self.index = index
        self.version = 0
        self.name: Optional[str] = None     # a parameter's dotted name, for error messages

    # ---- array facts -------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        return f"tensor({backend.to_device(self.data, 'cpu')!r}{grad}{dev})"

    # ---- autodiff ----------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (vector-Jacobian product with ``grad``)."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph was recorded)")
        xp = backend.array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() of a non-scalar output of shape {self.shape} needs a "
                                   "grad argument of the same shape")
            grad = xp.ones(self.shape, self.dtype)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad shape {grad.shape} != output shape {self.shape}")
        from .autograd import run_backward
        run_backward(self, grad, retain_graph)

    def mark_written(self) -> None:
        """Record an in-place write to ``data``: graphs recorded before it refuse to backward."""
        self.version += 1

    def describe(self) -> str:
        """'parameter encoder.0.weight [200, 784] float32' or 'tensor [3] float64'."""
        kind = f"parameter {self.name}" if self.name else "tensor"
        return f"{kind} {list(self.shape)} {self.dtype}"

    def detach(self) -> "Tensor":
        """Same data, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        _check_grad_dtype(self.data.dtype, flag)
        self.requires_grad = flag
        return self

    # ---- conversion --------------------------------------------------------
    def numpy(self) -> np.ndarray:
        return backend.to_device(self.data, "cpu")

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a one-element tensor, got shape {self.shape}")
        return self.data.reshape(()).item()

    def to(self, device: str) -> "Tensor":
        """Copy to 'cpu' or 'cuda'; differentiable (the gradient is copied back)."""
        if device == self.device:
            return self
        return F.to_device(self, device)

    def astype(self, dtype) -> "Tensor":
        return F.cast(self, dtype)

    def to_dot(self) -> str:
        from .viz import to_dot
        return to_dot(self)

    # ---- operators ---------------------------------------------------------
    def __add__(self, o): return F.add(self, o)
    def __radd__(self, o): return F.add(o, self)
    def __sub__(self, o): return F.sub(self, o)
    def __rsub__(self, o): return F.sub(o, self)
    def __mul__(self, o): return F.mul(self, o)
    def __rmul__(self, o): return F.mul(o, self)
    def __truediv__(self, o): return F.div(self, o)
    def __rtruediv__(self, o): return F.div(o, self)
    def __pow__(self, o): return F.pow(self, o)
    def __rpow__(self, o): return F.pow(o, self)
    def __matmul__(self, o): return F.matmul(self, o)
    def __rmatmul__(self, o): return F.matmul(o, self)
    def __neg__(self): return F.neg(self)
    def __getitem__(self, index): return F.getitem(self, index)

    # Comparisons are not differentiable: they return boolean tensors.
    def __lt__(self, o): return Tensor(self.data < _raw(o))
    def __le__(self, o): return Tensor(self.data <= _raw(o))
    def __gt__(self, o): return Tensor(self.data > _raw(o))
    def __ge__(self, o): return Tensor(self.data >= _raw(o))
    def __eq__(self, o): return Tensor(self.data == _raw(o))
    def __ne__(self, o): return Tensor(self.data != _raw(o))
    __hash__ = object.__hash__   # identity hash, as defining __eq__ would otherwise remove it

    # ---- method forms of tinyvae.functional --------------------------------
    def exp(self): return F.exp(self)
    def log(self): return F.log(self)
    def log1p(self): return F.log1p(self)
    def sqrt(self): return F.sqrt(self)
    def abs(self): return F.abs(self)
    def tanh(self): return F.tanh(self)
    def sigmoid(self): return F.sigmoid(self)
    def relu(self): return F.relu(self)
    def clip(self, lo=None, hi=None): return F.clip(self, lo, hi)
    def sum(self, axis=None, keepdims=False): return F.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return F.mean(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return F.var(self, axis, keepdims, ddof)
    def max(self, axis=None, keepdims=False): return F.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return F.min(self, axis, keepdims)
    def logsumexp(self, axis=None, keepdims=False): return F.logsumexp(self, axis, keepdims)
    def softmax(self, axis=-1): return F.softmax(self, axis)
    def log_softmax(self, axis=-1): return F.log_softmax(self, axis)
    def reshape(self, *shape): return F.reshape(self, *shape)
    def permute(self, *dims): return F.permute(self, *dims)
    def transpose(self, dim0, dim1): return F.transpose(self, dim0, dim1)
    def expand(self, *shape): return F.broadcast_to(self, *shape)
    def broadcast_to(self, *shape): return F.broadcast_to(self, *shape)
    def split(self, sections, axis=0): return F.split(self, sections, axis)
    def chunk(self, chunks, axis=0): return F.chunk(self, chunks, axis)
    def flatten(self, start_dim=0): return F.reshape(self, *self.shape[:start_dim], -1)
    T = property(lambda self: F.permute(self, *reversed(range(self.ndim))))


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _check_grad_dtype(dtype, requires_grad: bool) -> None:
    if requires_grad and dtype.kind != "f":
        raise TypeError(f"only floating-point tensors can require gradients, got dtype {dtype}")


def tensor(data: Any, requires_grad: bool = False, dtype: Optional[Any] = None,
           device: Optional[str] = None) -> Tensor:
    """Make a leaf tensor.

    Floating data becomes float32 unless ``dtype`` says otherwise (float64 is supported end
    to end); integer and boolean data keep their dtype (indices, labels, masks).
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.array_module(data)
    if dtype is None:
        arr = xp.asarray(data)
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
    else:
        arr = xp.asarray(data, dtype=dtype)
    if device is not None:
        arr = backend.to_device(arr, device)
    _check_grad_dtype(arr.dtype, requires_grad)
    return Tensor(arr, requires_grad)


def as_tensor(x: Any, like=()) -> Tensor:
    """Wrap a constant (Python number or array) as a tensor for an op.

    A float constant takes the float dtype and the device of the first tensor in ``like``,
    so ``x * 2`` stays float32 and stays on the GPU.
    """
    if isinstance(x, Tensor):
        return x
    ref = next((t for t in like if isinstance(t, Tensor)), None)
    if ref is None:
        return tensor(x)
    arr = backend.to_device(x, ref.device)
    if ref.dtype.kind == "f" and (arr.dtype.kind == "f" or isinstance(x, (int, float))):
        arr = arr.astype(ref.dtype, copy=False)
    return Tensor(arr)


from . import functional as F  # noqa: E402  (functional imports Tensor from this module)
