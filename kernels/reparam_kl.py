"""Fused reparameterisation and Gaussian KL, forward and backward, in one pass each.

For a diagonal Gaussian q = N(μ, σ²) with log-variance ℓ = log σ² and noise ε ~ N(0, I):

  z      = μ + exp(ℓ/2) ⊙ ε                                   (reparameterisation)
  kl_bd  = ½ (μ² + exp(ℓ) − 1 − ℓ)                            (KL(q‖N(0,1)) per dimension)
  kl_b   = Σ_d kl_bd                                          (per row, unless per_element)

Backward, given ∂L/∂z = g_z and ∂L/∂kl = g_kl (per row, or per element):

  ∂L/∂μ = g_z + g_kl · μ
  ∂L/∂ℓ = g_z ⊙ ε ⊙ ½ exp(ℓ/2) + g_kl · ½ (exp(ℓ) − 1)

exp(ℓ) − 1 is computed as expm1(ℓ), exact near ℓ = 0 where the KL is tiny. The backward
recomputes exp(ℓ/2) rather than storing it. Row sums run in a fixed order (sequential on
the CPU, a fixed pairwise tree on the GPU): the same input gives the same bits.
Inputs are [B, D] arrays of one float dtype; for ℓ in [−30, 30] nothing overflows.
"""
from __future__ import annotations

import math

import numpy as np
from numba import config as numba_config
from numba import njit, prange

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose
from ._vmath import expm1_for


def _check(mu, logvar, eps) -> None:
    check_float("reparam_kl", mu, logvar, eps)
    if mu.ndim != 2 or mu.shape != logvar.shape or mu.shape != eps.shape:
        raise ValueError(f"reparam_kl: mu, logvar and eps must be the same [B, D] shape, got "
                         f"{mu.shape}, {logvar.shape}, {eps.shape}")


def forward(mu, logvar, eps, per_element: bool = False, impl: str = None):
    """(z [B, D], kl [B] or [B, D] if ``per_element``). The kernels always write a 2-D kl
    ([B, D] or [B, 1]): Numba types both branches of a kernel, so its rank cannot vary."""
    _check(mu, logvar, eps)
    which = choose(impl, mu, logvar, eps)
    if which == "reference":
        return forward_reference(mu, logvar, eps, per_element)
    if which == "cpu":
        z, kl = np.empty_like(mu), np.empty((len(mu), mu.shape[1] if per_element else 1), mu.dtype)
        _cpu(mu.dtype)[0][mu.size >= PARALLEL_MIN_ELEMENTS](mu, logvar, eps, z, kl, per_element)
        return z, (kl if per_element else kl[:, 0])
    return _forward_cuda(mu, logvar, eps, per_element)


def backward(grad_z, grad_kl, mu, logvar, eps, impl: str = None):
    """(grad_mu, grad_logvar); ``grad_kl`` is [B] (row KL) or [B, D] (per-element KL)."""
    _check(mu, logvar, eps)
    check_float("reparam_kl", grad_z, grad_kl, mu)
    if grad_z.shape != mu.shape or grad_kl.shape not in (mu.shape[:1], mu.shape):
        raise ValueError(f"reparam_kl.backward: grad_z {grad_z.shape} / grad_kl {grad_kl.shape} do not "
                         f"match mu {mu.shape}")
    which = choose(impl, grad_z, grad_kl, mu, logvar, eps)
    if which == "reference":
        return backward_reference(grad_z, grad_kl, mu, logvar, eps)
    if which == "cpu":
        g_mu, g_lv = np.empty_like(mu), np.empty_like(mu)
        _cpu(mu.dtype)[1][mu.size >= PARALLEL_MIN_ELEMENTS](grad_z, grad_kl.reshape(len(mu), -1), mu, logvar,
                                                            eps, g_mu, g_lv, grad_kl.ndim == 2)
        return g_mu, g_lv
    return _backward_cuda(grad_z, grad_kl, mu, logvar, eps)


# ---- reference: the formulas above, line by line ---------------------------------------

def forward_reference(mu, logvar, eps, per_element=False):
    xp = array_module(mu)
    z = mu + xp.exp(0.5 * logvar) * eps
    kl = 0.5 * (mu * mu + xp.expm1(logvar) - logvar)
    return z, (kl if per_element else kl.sum(axis=1))


def backward_reference(grad_z, grad_kl, mu, logvar, eps):
    xp = array_module(mu)
    g_kl = grad_kl if grad_kl.ndim == 2 else grad_kl[:, None]
    g_mu = grad_z + g_kl * mu
    g_lv = grad_z * eps * 0.5 * xp.exp(0.5 * logvar) + g_kl * 0.5 * xp.expm1(logvar)
    return g_mu, g_lv


# ---- CPU: one loop over rows, one pass over each row ---------------------------------------
# Built per dtype (``_cpu_kernels``): the constants are scalars of the data's dtype, so
# float32 data is computed in float32 on a vectorisable expm1 (see _vmath.py). One expm1(ℓ/2)
# gives σ = e^(ℓ/2) = em1 + 1 and e^ℓ − 1 = em1 (em1 + 2) without cancellation near ℓ = 0.
# 'reassoc' lets the row sum vectorise; its order is still fixed by the code, so the same
# input gives the same bits. Each loop is compiled twice: threaded for large inputs, and
# single-threaded for small ones, where waking Numba's threads while BLAS's threads still
# spin cost milliseconds.

_FLAGS = {"contract", "reassoc"}
PARALLEL_MIN_ELEMENTS = 1 << 16
_cpu_kernels: dict = {}


def _cpu(dtype):
    """(forward, backward) CPU kernels for ``dtype``, each a (serial, parallel) pair."""
    key = np.dtype(dtype).str
    if key not in _cpu_kernels:
        expm1 = expm1_for(dtype)
        t = np.dtype(dtype).type
        zero, half, one, two = t(0), t(0.5), t(1), t(2)

        @njit(inline="always", fastmath=_FLAGS)
        def element(m, lv, e):
            """(z, kl) for one element."""
            em1 = expm1(half * lv)
            return m + (em1 + one) * e, half * (m * m + em1 * (em1 + two) - lv)

        def forward_rows(mu, logvar, eps, z, kl, per_element):
            B, D = mu.shape
            for b in prange(B):
                # two loops rather than a branch inside one: a conditional store stops vectorisation
                if per_element:
                    for d in range(D):
                        z[b, d], kl[b, d] = element(mu[b, d], logvar[b, d], eps[b, d])
                else:
                    total = zero
                    for d in range(D):
                        z[b, d], k = element(mu[b, d], logvar[b, d], eps[b, d])
                        total += k
                    kl[b, 0] = total

        def backward_rows(grad_z, grad_kl, mu, logvar, eps, g_mu, g_lv, per_element):
            B, D = mu.shape
            for b in prange(B):
                for d in range(D):
                    gk = grad_kl[b, d] if per_element else grad_kl[b, 0]
                    m, lv, gz = mu[b, d], logvar[b, d], grad_z[b, d]
                    em1 = expm1(half * lv)
                    g_mu[b, d] = gz + gk * m
                    g_lv[b, d] = half * (gz * eps[b, d] * (em1 + one) + gk * em1 * (em1 + two))

        _cpu_kernels[key] = tuple(
            (njit(fastmath=_FLAGS)(rows), njit(parallel=True, fastmath=_FLAGS)(rows))
            for rows in (forward_rows, backward_rows))
    return _cpu_kernels[key]


# ---- CUDA ---------------------------------------------------------------------------------
# Forward: one warp per row (ROWS rows per block). Each lane loads UNROLL elements of its
# row before computing any, so enough bytes are in flight to approach the memory bandwidth,
# then the warp sums its lanes' partial KLs with a fixed tree (lane i += lane i + offset).
# On a GPU the tree uses warp shuffles; the CUDA simulator has none, so there the same tree
# runs through shared memory, adding the same pairs in the same order: identical sums.
# Backward has no reduction: one thread per element over the flattened [B, D].

LANES, ROWS, UNROLL, THREADS = 32, 8, 4, 256


def _row_sum_device_function():
    if numba_config.ENABLE_CUDASIM:
        @cuda.jit(device=True)
        def row_sum(total, scratch, lane):
            scratch[lane] = total
            cuda.syncthreads()
            step = LANES // 2
            while step > 0:
                if lane < step:
                    scratch[lane] += scratch[lane + step]
                cuda.syncthreads()
                step //= 2
            return scratch[0]
    else:
        @cuda.jit(device=True)
        def row_sum(total, scratch, lane):
            step = LANES // 2
            while step > 0:
                total += cuda.shfl_down_sync(0xFFFFFFFF, total, step)
                step //= 2
            return total            # the full sum in lane 0
    return row_sum


def _cuda_kernels(dtype):
    """The CUDA kernels for one dtype, compiled once on first use. ``cuda`` must stay a module
    global: the CUDA simulator swaps it for its own module while a kernel runs."""
    key = np.dtype(dtype).str
    if key not in _CUDA:
        from numba import types as nbt
        nb = nbt.float32 if np.dtype(dtype) == np.float32 else nbt.float64
        row_sum = _row_sum_device_function()

        @cuda.jit(cache=True)
        def fwd(mu, logvar, eps, z, kl, per_element, half):
            lane, row_in_block = cuda.threadIdx.x, cuda.threadIdx.y
            b = cuda.blockIdx.x * ROWS + row_in_block
            scratch = cuda.shared.array((ROWS, LANES), dtype=nb)
            m = cuda.local.array(UNROLL, nb)
            lv = cuda.local.array(UNROLL, nb)
            e = cuda.local.array(UNROLL, nb)
            total = half - half
            if b < mu.shape[0]:
                n = mu.shape[1]
                for start in range(lane, n, LANES * UNROLL):
                    for u in range(UNROLL):                     # all loads first ...
                        d = start + u * LANES
                        if d < n:
                            m[u], lv[u], e[u] = mu[b, d], logvar[b, d], eps[b, d]
                    for u in range(UNROLL):                     # ... then the arithmetic and stores
                        d = start + u * LANES
                        if d < n:
                            z[b, d] = m[u] + math.exp(half * lv[u]) * e[u]
                            k = half * (m[u] * m[u] + math.expm1(lv[u]) - lv[u])
                            if per_element:
                                kl[b, d] = k
                            else:
                                total += k
            if per_element:
                return
            total = row_sum(total, scratch[row_in_block], lane)
            if lane == 0 and b < mu.shape[0]:
                kl[b, 0] = total

        @cuda.jit(cache=True)
        def bwd(grad_z, grad_kl, mu, logvar, eps, g_mu, g_lv, per_element, half):
            i = cuda.grid(1)
            n = mu.shape[1]
            if i >= mu.shape[0] * n:
                return
            b = i // n
            d = i - b * n
            gk = grad_kl[b, d] if per_element else grad_kl[b, 0]
            m, lv, gz = mu[b, d], logvar[b, d], grad_z[b, d]
            g_mu[b, d] = gz + gk * m
            g_lv[b, d] = half * (gz * eps[b, d] * math.exp(half * lv) + gk * math.expm1(lv))

        _CUDA[key] = (fwd, bwd)
    return _CUDA[key]


_CUDA: dict = {}


def _forward_cuda(mu, logvar, eps, per_element):
    fwd, _ = _cuda_kernels(mu.dtype)
    L = CudaLaunch(mu)
    B, D = mu.shape
    z = L.empty((B, D), mu.dtype)
    kl = L.empty((B, D if per_element else 1), mu.dtype)
    if B:
        fwd[((B + ROWS - 1) // ROWS,), (LANES, ROWS), L.stream](
            L.input(mu), L.input(logvar), L.input(eps), L.arg(z), L.arg(kl), per_element,
            mu.dtype.type(0.5))
    kl = L.output(kl)
    return L.output(z), (kl if per_element else kl.reshape(B))


def _backward_cuda(grad_z, grad_kl, mu, logvar, eps):
    _, bwd = _cuda_kernels(mu.dtype)
    L = CudaLaunch(mu)
    B, D = mu.shape
    per_element = grad_kl.ndim == 2
    g_mu, g_lv = L.empty((B, D), mu.dtype), L.empty((B, D), mu.dtype)
    if B * D:
        bwd[((B * D + THREADS - 1) // THREADS,), (THREADS,), L.stream](
            L.input(grad_z), L.input(grad_kl.reshape(B, -1)), L.input(mu), L.input(logvar), L.input(eps),
            L.arg(g_mu), L.arg(g_lv), per_element, mu.dtype.type(0.5))
    return L.output(g_mu), L.output(g_lv)
