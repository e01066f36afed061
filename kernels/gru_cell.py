"""The elementwise part of one GRU step, forward and backward, in one pass each.

Given the input's gate pre-activations gi = W_i x + b_i and the state's gh = W_h h + b_h, both
[B, 3H] with the (r, z, n) blocks in that order (PyTorch's layout), and the state h [B, H]:

  r  = σ(gi_r + gh_r)
  z  = σ(gi_z + gh_z)
  n  = tanh(gi_n + r ⊙ gh_n)
  h' = (1 − z) ⊙ n + z ⊙ h

Backward, given ∂L/∂h' = g (and the saved r, z, n, gh_n, h):

  a_n = g ⊙ (1 − z) ⊙ (1 − n²)         ∂L/∂gi_n = a_n,   ∂L/∂gh_n = a_n ⊙ r
  a_r = a_n ⊙ gh_n ⊙ r ⊙ (1 − r)        ∂L/∂gi_r = ∂L/∂gh_r = a_r
  a_z = g ⊙ (h − n) ⊙ z ⊙ (1 − z)       ∂L/∂gi_z = ∂L/∂gh_z = a_z
  ∂L/∂h (through z ⊙ h only) = g ⊙ z

The matrix products stay with BLAS (``ops/rnn.py`` makes them, one per step for W_h h and
one for all steps at once for everything else); these kernels replace the dozen array passes
an unfused step makes with one. tanh(a) = e/(e + 2) with e = expm1(2a), 2a clipped to ±88
(where tanh is ±1 in float32 and float64 alike), so it is exact near 0 and never 0/0.
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
from ._vmath import exp_for, expm1_for


def _check(name: str, gates: tuple, states: tuple) -> None:
    check_float(f"gru_cell.{name}", *gates, *states)
    b, h3 = gates[0].shape if gates[0].ndim == 2 else (None, None)
    if h3 is None or h3 % 3 or any(g.shape != (b, h3) for g in gates) or any(s.shape != (b, h3 // 3) for s in states):
        raise ValueError(f"gru_cell.{name}: expected gates [B, 3H] and states [B, H], got "
                         f"{[g.shape for g in gates]} and {[s.shape for s in states]}")


def forward(gi, gh, h, impl: str = None) -> tuple:
    """(h' [B, H], r, z, n [B, H] each: what backward needs) from gi, gh [B, 3H] and h [B, H]."""
    _check("forward", (gi, gh), (h,))
    which = choose(impl, gi, gh, h)
    if which == "reference":
        return forward_reference(gi, gh, h)
    if which == "cpu":
        results = tuple(np.empty_like(h) for _ in range(4))
        _cpu(h.dtype)[0][h.size >= PARALLEL_MIN_ELEMENTS](gi, gh, h, *results)
        return results
    return _run_cuda(0, (gi, gh, h), 4, h)


def backward(g, r, z, n, gh, h, impl: str = None) -> tuple:
    """(∂L/∂gi [B, 3H], ∂L/∂gh [B, 3H], ∂L/∂h through z ⊙ h [B, H]) from ∂L/∂h' = g."""
    _check("backward", (gh,), (g, r, z, n, h))
    which = choose(impl, g, r, z, n, gh, h)
    if which == "reference":
        return backward_reference(g, r, z, n, gh, h)
    if which == "cpu":
        results = (np.empty_like(gh), np.empty_like(gh), np.empty_like(h))
        _cpu(h.dtype)[1][h.size >= PARALLEL_MIN_ELEMENTS](g, r, z, n, gh, h, *results)
        return results
    return _run_cuda(1, (g, r, z, n, gh, h), 3, h)


# ---- reference: the formulas above, line by line ---------------------------------------

def forward_reference(gi, gh, h):
    xp = array_module(h)
    H = h.shape[1]
    r = 1 / (1 + xp.exp(-(gi[:, :H] + gh[:, :H])))
    z = 1 / (1 + xp.exp(-(gi[:, H:2 * H] + gh[:, H:2 * H])))
    n = xp.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h, r, z, n


def backward_reference(g, r, z, n, gh, h):
    xp = array_module(h)
    H = h.shape[1]
    a_n = g * (1 - z) * (1 - n * n)
    a_r = a_n * gh[:, 2 * H:] * r * (1 - r)
    a_z = g * (h - n) * z * (1 - z)
    g_gi = xp.concatenate([a_r, a_z, a_n], axis=1)
    g_gh = xp.concatenate([a_r, a_z, a_n * r], axis=1)
    return g_gi, g_gh, g * z


def _element_backward(g, r, z, n, gh_n, h, one):
    """(a_r, a_z, a_n) of one unit: the formulas above, compiled for the CPU and for CUDA from
    this one source (``one`` of the data's dtype keeps float32 in float32)."""
    a_n = g * (one - z) * (one - n * n)
    return a_n * gh_n * r * (one - r), g * (h - n) * z * (one - z), a_n


# ---- CPU: one loop over rows, each row's H units in one vectorisable pass -------------------
# exp and expm1 from _vmath (straight-line code LLVM vectorises; libm's are one call per
# element). Serial and threaded versions: a step of a small batch is over before Numba's
# threads wake.

PARALLEL_MIN_ELEMENTS = 1 << 16
_cpu_kernels: dict = {}


def _cpu(dtype):
    """((forward serial, parallel), (backward serial, parallel)) for ``dtype``."""
    key = np.dtype(dtype).str
    if key not in _cpu_kernels:
        exp, expm1 = exp_for(dtype), expm1_for(dtype)
        t = np.dtype(dtype).type
        one, two, limit = t(1), t(2), t(88)

        element_backward = njit(inline="always", fastmath={"contract"})(_element_backward)

        @njit(inline="always", fastmath={"contract"})
        def sigmoid(a):
            return one / (one + exp(-a))

        @njit(inline="always", fastmath={"contract"})
        def tanh(a):
            e = expm1(min(max(two * a, -limit), limit))
            return e / (e + two)

        def fwd(gi, gh, h, h_new, r, z, n):
            B, H = h.shape
            for b in prange(B):
                for j in range(H):
                    rj = sigmoid(gi[b, j] + gh[b, j])
                    zj = sigmoid(gi[b, H + j] + gh[b, H + j])
                    nj = tanh(gi[b, 2 * H + j] + rj * gh[b, 2 * H + j])
                    r[b, j], z[b, j], n[b, j] = rj, zj, nj
                    h_new[b, j] = (one - zj) * nj + zj * h[b, j]

        def bwd(g, r, z, n, gh, h, g_gi, g_gh, g_h):
            B, H = h.shape
            for b in prange(B):
                for j in range(H):
                    a_r, a_z, a_n = element_backward(g[b, j], r[b, j], z[b, j], n[b, j], gh[b, 2 * H + j], h[b, j], one)
                    g_gi[b, j], g_gi[b, H + j], g_gi[b, 2 * H + j] = a_r, a_z, a_n
                    g_gh[b, j], g_gh[b, H + j], g_gh[b, 2 * H + j] = a_r, a_z, a_n * r[b, j]
                    g_h[b, j] = g[b, j] * z[b, j]

        options = dict(fastmath={"contract"}, error_model="numpy")   # no zero-division checks: they block SIMD
        _cpu_kernels[key] = tuple((njit(**options)(f), njit(parallel=True, **options)(f)) for f in (fwd, bwd))
    return _cpu_kernels[key]


# ---- CUDA: one thread per (row, unit) -------------------------------------------------------

THREADS = 256
_CUDA: dict = {}


def _cuda_kernels(dtype):
    """(forward, backward) CUDA kernels for ``dtype``, compiled once on first use (``cuda`` must
    stay a module global: the simulator swaps it)."""
    key = np.dtype(dtype).str
    if key not in _CUDA:
        zero, one = np.dtype(dtype).type(0), np.dtype(dtype).type(1)
        element_backward = cuda.jit(device=True)(_element_backward)

        @cuda.jit(device=True)
        def sigmoid(a):
            e = math.exp(-abs(a))                  # ≤ 1: never overflows
            return (one if a >= zero else e) / (one + e)

        @cuda.jit
        def fwd(gi, gh, h, h_new, r, z, n):
            i = cuda.grid(1)
            B, H = h.shape
            if i < B * H:
                b, j = i // H, i % H
                rj = sigmoid(gi[b, j] + gh[b, j])
                zj = sigmoid(gi[b, H + j] + gh[b, H + j])
                nj = math.tanh(gi[b, 2 * H + j] + rj * gh[b, 2 * H + j])
                r[b, j], z[b, j], n[b, j] = rj, zj, nj
                h_new[b, j] = (one - zj) * nj + zj * h[b, j]

        @cuda.jit
        def bwd(g, r, z, n, gh, h, g_gi, g_gh, g_h):
            i = cuda.grid(1)
            B, H = h.shape
            if i < B * H:
                b, j = i // H, i % H
                a_r, a_z, a_n = element_backward(g[b, j], r[b, j], z[b, j], n[b, j], gh[b, 2 * H + j], h[b, j], one)
                g_gi[b, j], g_gi[b, H + j], g_gi[b, 2 * H + j] = a_r, a_z, a_n
                g_gh[b, j], g_gh[b, H + j], g_gh[b, 2 * H + j] = a_r, a_z, a_n * r[b, j]
                g_h[b, j] = g[b, j] * z[b, j]

        _CUDA[key] = (fwd, bwd)
    return _CUDA[key]


def _run_cuda(which: int, inputs: tuple, outputs: int, h):
    """Launch forward (0: outputs h', r, z, n [B, H]) or backward (1: [B, 3H], [B, 3H], [B, H])."""
    kernel = _cuda_kernels(h.dtype)[which]
    L = CudaLaunch(h)
    xp = array_module(h)
    B, H = h.shape
    shapes = [(B, H)] * 4 if which == 0 else [(B, 3 * H), (B, 3 * H), (B, H)]
    outs = [L.empty(shape, h.dtype) for shape in shapes[:outputs]]
    if B * H:
        kernel[((B * H + THREADS - 1) // THREADS,), (THREADS,), L.stream](
            *(L.input(xp.ascontiguousarray(a)) for a in inputs), *(L.arg(o) for o in outs))
    return tuple(L.output(o) for o in outs)
