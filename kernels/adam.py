"""One Adam step (Kingma & Ba 2015, Algorithm 1, with PyTorch's ε placement), fused into a
single pass over the parameter, its gradient and the two moment buffers, all updated in place:

  g ← g + λp                       (weight_decay λ, L2 form; AdamW instead scales p by 1 − lr·λ first)
  m ← β₁m + (1 − β₁)g              (first moment)
  v ← β₂v + (1 − β₂)g²             (second moment)
  p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)      (bias-corrected step)

Written with NumPy ufuncs the step is a dozen passes over memory; for the 425k parameters of
the MNIST mlp VAE that was a fifth of a training step.

  reference  the formulas as in-place NumPy/CuPy array operations.
  cpu        a Numba loop over ``_element``, which does the reference's operations in the
             same order and precision, so it gives the reference's bits. error_model="numpy"
             lets the division vectorise (Numba's default Python error model puts a zero
             check in the loop, which keeps it scalar: 4x slower).
  cuda       ``_element`` again, one thread per element.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose

NO_DECAY, L2, DECOUPLED = 0, 1, 2          # weight decay: none, added to g (Adam), or on p (AdamW)


def step(p, g, m, v, t: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
         weight_decay: float = 0.0, decoupled: bool = False, impl: str = None) -> None:
    """Update ``p``, ``m`` and ``v`` (same shape and float dtype; C-contiguous for the fused
    kernels) in place for gradient ``g`` at step ``t`` (counting from 1). ``decoupled`` selects
    AdamW's decay."""
    check_float("adam.step", p, g, m, v)
    if not p.shape == g.shape == m.shape == v.shape:
        raise ValueError(f"adam.step: p, g, m and v must have one shape, got {p.shape}, {g.shape}, "
                         f"{m.shape}, {v.shape}")
    if t < 1:
        raise ValueError(f"adam.step: the step count t starts at 1, got {t}")
    f = p.dtype.type            # scalars in the arrays' precision, as NumPy applies Python floats
    decay_mode = (DECOUPLED if decoupled else L2) if weight_decay else NO_DECAY
    scalars = (f(beta1), f(1 - beta1), f(beta2), f(1 - beta2), f(1 / math.sqrt(1 - beta2 ** t)), f(eps),
               f(lr / (1 - beta1 ** t)), decay_mode, f(weight_decay), f(1 - lr * weight_decay))
    which = choose(impl, p, g, m, v)
    if which != "reference" and not (p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous):
        raise ValueError("adam.step: the fused kernels update p, m and v in place as flat arrays, so they "
                         "must be C-contiguous (impl='reference' takes any layout)")
    if which == "reference":
        step_reference(p, g, m, v, *scalars)
    elif which == "cpu":
        _step_cpu(p.reshape(-1), np.ascontiguousarray(g).reshape(-1), m.reshape(-1), v.reshape(-1), *scalars)
    else:
        _step_cuda(p, g, m, v, scalars)


def step_reference(p, g, m, v, b1, c1, b2, c2, v_scale, eps, step_size, decay_mode, decay, shrink) -> None:
    """c1 = 1 − β₁, c2 = 1 − β₂, v_scale = 1/√(1 − β₂ᵗ), step_size = lr/(1 − β₁ᵗ), decay = λ,
    shrink = 1 − lr·λ."""
    if decay_mode == DECOUPLED:
        p *= shrink
    elif decay_mode == L2:
        g = g + decay * p
    m *= b1
    m += c1 * g
    v *= b2
    v += (g * g) * c2
    p -= m / (array_module(v).sqrt(v) * v_scale + eps) * step_size


def _element(p, g, m, v, b1, c1, b2, c2, v_scale, eps, step_size, decay_mode, decay, shrink):
    """One element's step: the new (p, m, v), with the reference's operations in its order.
    Compiled for both kernels (Numba's math.sqrt keeps float32 in float32)."""
    if decay_mode == DECOUPLED:
        p = p * shrink
    elif decay_mode == L2:
        g = g + decay * p
    m = m * b1 + c1 * g
    v = v * b2 + (g * g) * c2
    return p - m / (math.sqrt(v) * v_scale + eps) * step_size, m, v


_element_cpu = njit(error_model="numpy")(_element)


@njit(cache=True, error_model="numpy")
def _step_cpu(p, g, m, v, *scalars):
    for i in range(p.shape[0]):
        p[i], m[i], v[i] = _element_cpu(p[i], g[i], m[i], v[i], *scalars)


THREADS = 256
_KERNEL: list = []


def _step_kernel():
    """Compiled once on first use (``cuda`` must stay a module global: the simulator swaps it)."""
    if not _KERNEL:
        element = cuda.jit(device=True)(_element)

        @cuda.jit(cache=True)
        def kernel(p, g, m, v, *scalars):
            i = cuda.grid(1)
            if i < p.shape[0]:
                p[i], m[i], v[i] = element(p[i], g[i], m[i], v[i], *scalars)
        _KERNEL.append(kernel)
    return _KERNEL[0]


def _step_cuda(p, g, m, v, scalars) -> None:
    L = CudaLaunch(p)
    flat = [L.input(a.reshape(-1)) for a in (p, m, v)]
    g_flat = L.input(g.reshape(-1))
    n = p.size
    if n:
        _step_kernel()[((n + THREADS - 1) // THREADS,), (THREADS,), L.stream](flat[0], g_flat, flat[1], flat[2],
                                                                            *scalars)
    if not L.on_device:          # NumPy inputs (the simulator's path): copy the updates back
        for host, dev in zip((p, m, v), flat):
            host[...] = L.output(dev).reshape(host.shape)
