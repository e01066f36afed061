"""Binary cross-entropy with logits (the Bernoulli pixel likelihood), forward and backward in
one pass each.

For a logit x and a target t in [0, 1], with σ the logistic function and e = exp(−|x|) ≤ 1:

  loss = −[t log σ(x) + (1 − t) log(1 − σ(x))] = max(x, 0) − x t + log(1 + e)
  ∂loss/∂x = σ(x) − t,   σ(x) = 1/(1 + e) for x ≥ 0,  e/(1 + e) for x < 0
  ∂loss/∂t = −x          (targets are data; the engine op computes this one when asked)

Both forms are finite for every finite logit (e never overflows) and exact in both tails.
The unfused NumPy form takes eight passes over the data for the loss and six for the
gradient; the Bernoulli VAEs apply it to every pixel of every image at every step.
Inputs are x and t of one shape and one float dtype; ``forward`` returns the loss elementwise.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose
from ._vmath import exp_for, log1p_for


def _check(name, *arrays) -> None:
    check_float(f"bce_logits.{name}", *arrays)
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"bce_logits.{name}: inputs must share one shape, got {[a.shape for a in arrays]}")


def forward(x, t, impl: str = None):
    """Elementwise loss, x's shape and dtype."""
    _check("forward", x, t)
    which = choose(impl, x, t)
    if which == "reference":
        return forward_reference(x, t)
    if which == "cpu":
        return _run_cpu(0, x, t)
    return _run_cuda(0, x, t)


def backward(grad_loss, x, t, impl: str = None):
    """∂/∂x of Σ grad_loss ⊙ loss(x, t): grad_loss ⊙ (σ(x) − t)."""
    _check("backward", grad_loss, x, t)
    which = choose(impl, grad_loss, x, t)
    if which == "reference":
        return backward_reference(grad_loss, x, t)
    if which == "cpu":
        return _run_cpu(1, grad_loss, x, t)
    return _run_cuda(1, grad_loss, x, t)


# ---- reference: the formulas above, line by line ---------------------------------------

def forward_reference(x, t):
    return array_module(x).maximum(x, 0) - x * t + log1p_exp_neg_abs(x)


def backward_reference(grad_loss, x, t):
    return grad_loss * (stable_sigmoid(x) - t)


def stable_sigmoid(x):
    """σ(x) from e = exp(−|x|) ≤ 1: 1/(1 + e) for x ≥ 0, e/(1 + e) below, exact in both tails
    and overflow-free (NaN stays NaN). (The engine's sigmoid, softplus and log-sigmoid use it too.)"""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))
    r = 1 / (1 + e)
    return xp.where(x >= 0, r, e * r)


def log1p_exp_neg_abs(x):
    """log(1 + e^−|x|) ∈ (0, log 2]: the part of softplus that cannot overflow."""
    xp = array_module(x)
    return xp.log1p(xp.exp(-xp.abs(x)))


# ---- CPU: one flat loop over the elements, on the vectorisable exp and log1p ---------------
# Built per dtype, with constants of the data's dtype, so float32 stays float32. Threaded for
# large inputs only: waking Numba's threads right after BLAS (whose threads still spin) cost
# more than a [128, 784] batch takes on one core.

PARALLEL_MIN_ELEMENTS = 1 << 18
_cpu_kernels: dict = {}


def _cpu(dtype):
    """((forward serial, parallel), (backward serial, parallel)) for ``dtype``."""
    key = np.dtype(dtype).str
    if key not in _cpu_kernels:
        exp, log1p = exp_for(dtype), log1p_for(dtype)
        zero, one = np.dtype(dtype).type(0), np.dtype(dtype).type(1)

        def loss(x, t, out):
            for i in prange(x.shape[0]):
                e = exp(-abs(x[i]))
                out[i] = max(x[i], zero) - x[i] * t[i] + log1p(e)

        def grad(g, x, t, out):
            for i in prange(x.shape[0]):
                e = exp(-abs(x[i]))
                sigmoid = (one if x[i] >= zero else e) / (one + e)
                out[i] = g[i] * (sigmoid - t[i])

        options = dict(fastmath={"contract"}, error_model="numpy")   # no zero-division checks: they block SIMD
        _cpu_kernels[key] = tuple((njit(**options)(f), njit(parallel=True, **options)(f)) for f in (loss, grad))
    return _cpu_kernels[key]


def _run_cpu(which: int, *arrays):
    """Run forward (0) or backward (1) over the arrays flattened; the output has their shape."""
    flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    out = np.empty(arrays[0].shape, arrays[0].dtype)
    _cpu(out.dtype)[which][out.size >= PARALLEL_MIN_ELEMENTS](*flat, out.reshape(-1))
    return out


# ---- CUDA: one thread per element -----------------------------------------------------------
# Built per dtype like the CPU loops: a bare 0 or 1 next to a float32 would make Numba compute
# in float64.

THREADS = 256
_CUDA: dict = {}


def _cuda_kernels(dtype):
    """(forward, backward) CUDA kernels for ``dtype``, compiled once on first use (``cuda`` must
    stay a module global: the simulator swaps it)."""
    key = np.dtype(dtype).str
    if key not in _CUDA:
        zero, one = np.dtype(dtype).type(0), np.dtype(dtype).type(1)

        @cuda.jit
        def loss(x, t, out):
            i = cuda.grid(1)
            if i < x.shape[0]:
                out[i] = max(x[i], zero) - x[i] * t[i] + math.log1p(math.exp(-abs(x[i])))

        @cuda.jit
        def grad(g, x, t, out):
            i = cuda.grid(1)
            if i < x.shape[0]:
                e = math.exp(-abs(x[i]))
                sigmoid = (one if x[i] >= zero else e) / (one + e)
                out[i] = g[i] * (sigmoid - t[i])

        _CUDA[key] = (loss, grad)
    return _CUDA[key]


def _run_cuda(which: int, *arrays):
    kernel = _cuda_kernels(arrays[0].dtype)[which]
    L = CudaLaunch(arrays[0])
    xp = array_module(arrays[0])
    flat = [xp.ascontiguousarray(a).reshape(-1) for a in arrays]
    out = L.empty(flat[0].size, arrays[0].dtype)
    if out.size:
        kernel[((out.size + THREADS - 1) // THREADS,), (THREADS,), L.stream](*(L.input(a) for a in flat), L.arg(out))
    return L.output(out).reshape(arrays[0].shape)
