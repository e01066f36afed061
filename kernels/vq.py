"""Nearest-codebook search for vector quantisation, and the EMA codebook statistics.

``nearest(z, codebook)`` returns, for every row z_n of z [N, D], the index of the closest
code e_k of codebook [K, D] in squared Euclidean distance, argmin_k ‖z_n − e_k‖² (ties go
to the lowest index, as ``argmin``), and that distance, recomputed directly as
Σ_d (z_nd − e_kd)² so it is never negative.

The search ranks codes by ‖e_k‖² − 2 z_n·e_k, which differs from the distance only by
‖z_n‖² (the same for every k of a row). No implementation builds the N×K distance matrix:
  cpu   blocks of rows × blocks of codes (a fixed 4 MB buffer per BLAS thread): each block's
        scores come from one BLAS matrix product, NumPy's SIMD argmin picks each row's first
        minimum, and a Numba kernel then recomputes the chosen distances exactly. The row
        blocks are shared among threads that each run single-threaded BLAS. (A pure-Numba
        search measured 30-50 GFLOP/s here, several times slower than BLAS.) Extra memory:
        O(N + K) plus the fixed buffers.
  cuda  two rows per thread (kept in registers); codebook tiles of at most 48 KB pass
        through shared memory and every thread keeps its rows' running minima: O(N + K).

``ema_update(z, index, num_codes)`` returns the per-code counts n_k = #{n : index_n = k}
and sums s_k = Σ_{n : index_n = k} z_n that the exponential-moving-average codebook
update needs (VQ-VAE, van den Oord et al. 2017, appendix).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose

BLOCK_ROWS, BLOCK_CODES = 1024, 1024        # CPU: 1024 × 1024 float32 inner products = 4 MB per thread


def _check(z, codebook) -> None:
    check_float("vq.nearest", z, codebook)
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"vq.nearest: expected z [N, D] and codebook [K, D], got {z.shape} and {codebook.shape}")
    if codebook.shape[0] == 0:
        raise ValueError("vq.nearest: the codebook is empty")


def nearest(z, codebook, impl: str = None, tile_codes: int = None):
    """(index [N] int64, sqdist [N]) of the nearest code for every row of ``z``.

    ``tile_codes`` (CUDA only) overrides the number of codes per shared-memory tile; tests
    use it to run several tiles on small codebooks.
    """
    _check(z, codebook)
    which = choose(impl, z, codebook)
    if which == "reference":
        return nearest_reference(z, codebook)
    if which == "cpu":
        return _nearest_cpu(np.ascontiguousarray(z), np.ascontiguousarray(codebook))
    return _nearest_cuda(z, codebook, tile_codes)


def ema_update(z, index, num_codes: int, impl: str = None):
    """(counts [K], sums [K, D]) in z's dtype for the assignments ``index`` [N] of rows z [N, D]."""
    check_float("vq.ema_update", z)
    if z.ndim != 2 or index.shape != z.shape[:1]:
        raise ValueError(f"vq.ema_update: expected z [N, D] and index [N], got {z.shape} and {index.shape}")
    which = choose(impl, z, index)
    if which == "reference":
        return ema_update_reference(z, index, num_codes)
    if which == "cpu":
        index = np.ascontiguousarray(index, dtype=np.int64)
        if len(index) and (index.min() < 0 or index.max() >= num_codes):
            raise ValueError(f"vq.ema_update: indices must be in [0, {num_codes})")
        counts, sums = np.zeros(num_codes, z.dtype), np.zeros((num_codes, z.shape[1]), z.dtype)
        _ema_cpu(np.ascontiguousarray(z), index, counts, sums)
        return counts, sums
    return _ema_cuda(z, index, num_codes)


# ---- reference: direct differences in float64, a few rows at a time ---------------------

def nearest_reference(z, codebook, rows_per_chunk: int = 256):
    xp = array_module(z)
    z64, e64 = z.astype(xp.float64), codebook.astype(xp.float64)
    index = xp.empty(len(z), xp.int64)
    for r0 in range(0, len(z), rows_per_chunk):
        diff = z64[r0:r0 + rows_per_chunk, None, :] - e64[None, :, :]       # [rows, K, D]
        index[r0:r0 + rows_per_chunk] = xp.argmin((diff * diff).sum(axis=2), axis=1)
    sqdist = ((z64 - e64[index]) ** 2).sum(axis=1)
    return index, sqdist.astype(z.dtype)


def ema_update_reference(z, index, num_codes):
    xp = array_module(z)
    onehot = (index[:, None] == xp.arange(num_codes)[None, :]).astype(z.dtype)   # [N, K]
    return onehot.sum(axis=0), onehot.T @ z


# ---- CPU ---------------------------------------------------------------------------------

def _nearest_cpu(z, codebook):
    """Scores ‖e‖² − 2 z·e come out of one BLAS product per block: the rows [z, 1] times the
    columns [−2e; ‖e‖²] (−2 is exact, a power of two). Appending the constant column saved a
    separate pass over the scores.

    The row blocks are shared out among as many Python threads as NumPy's BLAS has threads,
    each calling single-threaded BLAS on its own blocks and then taking their argmins (both
    release the GIL). With BLAS threaded instead, the argmin ran on one core while the other
    waited, and a threaded argmin fought BLAS's still-spinning threads; this way both cores
    stay busy, and no call waits at BLAS's barrier. Every row's result depends on its own
    block alone, so the answer does not depend on the schedule."""
    n, k = len(z), len(codebook)
    d = z.shape[1]
    codes_aug = np.empty((d + 1, k), z.dtype)                     # [D + 1, K]
    codes_aug[:d] = -2 * codebook.T
    codes_aug[d] = (codebook.astype(np.float64) ** 2).sum(axis=1)
    index = np.zeros(n, np.int64)
    best = np.full(n, np.inf, z.dtype)
    starts = range(0, n, BLOCK_ROWS)

    def scan(first: int, step: int) -> None:
        """Row blocks first, first + step, ... with this thread's own buffers."""
        rows_aug = np.empty((min(BLOCK_ROWS, n), d + 1), z.dtype)     # [rows, D + 1]
        rows_aug[:, d] = 1
        buffer = np.empty(min(BLOCK_ROWS, n) * min(BLOCK_CODES, k), z.dtype)
        for r0 in starts[first::step]:
            rows = slice(r0, min(r0 + BLOCK_ROWS, n))
            m = rows.stop - r0
            rows_aug[:m, :d] = z[rows]
            for k0 in range(0, k, BLOCK_CODES):
                codes = slice(k0, min(k0 + BLOCK_CODES, k))
                scores = buffer[:m * (codes.stop - k0)].reshape(m, -1)   # contiguous, as dot's out= must be
                np.dot(rows_aug[:m], codes_aug[:, codes], out=scores)   # (matmul with out= was slower)
                _keep_block_minimum(scores, k0, index[rows], best[rows])

    blas = _numpy_blas()
    workers = min(len(starts), blas.lib_controllers[0].num_threads if blas else 1)
    if workers > 1:
        with blas.limit(limits=1):
            list(_thread_pool(workers).map(scan, range(workers), [workers] * workers))
    else:
        scan(0, 1)
    sqdist = np.empty(n, z.dtype)
    _row_sqdist(z, codebook, index, sqdist)
    return index, sqdist


@functools.cache
def _numpy_blas():
    """threadpoolctl's handle on the BLAS that NumPy calls, or None if it cannot tell which.
    Only that library is limited: another library's BLAS (faiss's, say) is left alone. A NumPy
    wheel bundles its own BLAS (in ``numpy.libs``, or ``numpy/.dylibs`` on macOS); elsewhere
    NumPy uses the one BLAS the process has loaded."""
    from threadpoolctl import ThreadpoolController
    blas = ThreadpoolController().select(user_api="blas")
    bundled = [lib.filepath for lib in blas.lib_controllers
               if any(folder in lib.filepath for folder in ("numpy.libs", "numpy/.dylibs"))]
    if bundled:
        blas = blas.select(filepath=bundled)
    return blas if len(blas.lib_controllers) == 1 else None


@functools.cache
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="tinyvae-vq")


# A forked child inherits the pool but not its threads: work sent to it would never run.
if hasattr(os, "register_at_fork"):          # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_thread_pool.cache_clear)


def _keep_block_minimum(scores, k0, index, best):
    """Per row, the block's first minimum (NumPy's SIMD argmin, argmin's tie rule), kept only
    if strictly below the row's best over earlier blocks, so ties keep the lower index. A
    Numba loop for this step measured 2.5× slower: it does not vectorise an argmin."""
    arg = scores.argmin(axis=1)
    value = np.take_along_axis(scores, arg[:, None], axis=1)[:, 0]
    better = (value < best) | np.isnan(value)        # a NaN score must surface, not be skipped
    index[better] = k0 + arg[better]
    best[better] = value[better]


@njit(cache=True, fastmath={"reassoc", "contract"})
def _row_sqdist(z, codebook, index, out):
    """Σ_d (z_nd − e_kd)² for the chosen codes, summed in float64. Single-threaded: it runs right
    after BLAS, whose idle threads still spin, and a threaded version measured 8× slower for
    that reason. 'reassoc' lets the sum vectorise (4.5× faster at D = 64); the order is fixed
    by the compiled code, so the same input still gives the same bits."""
    for i in range(z.shape[0]):
        s = 0.0
        e = codebook[index[i]]
        for d in range(z.shape[1]):
            t = z[i, d] - e[d]
            s += t * t
        out[i] = s


@njit(parallel=True, cache=True)
def _ema_cpu(z, index, counts, sums):
    """Column blocks in parallel, rows in order within each: no races, same sums every run."""
    n, d = z.shape
    for i in range(n):
        counts[index[i]] += 1
    for c0 in prange((d + 15) // 16):
        for i in range(n):
            row = sums[index[i]]
            for c in range(c0 * 16, min(c0 * 16 + 16, d)):
                row[c] += z[i, c]


# ---- CUDA ----------------------------------------------------------------------------------

THREADS = 128
SHARED_BYTES = 48 * 1024
_kernels: dict = {}


def _tile_codes(d: int, itemsize: int) -> int:
    """Codes per shared-memory tile: as many as fit in 48 KB with their ‖e‖², at most 256."""
    return max(1, min(256, SHARED_BYTES // ((d + 1) * itemsize)))


def _nearest_kernel(d: int, dtype, tile: int):
    """A kernel specialised to (D, dtype, tile): D and tile are compile-time constants, so each
    thread's two rows live in registers and the tile in statically sized shared memory.

    Each code element read from shared memory feeds two rows' dot products: with one row per
    thread the kernel was bound by shared-memory loads (one per multiply-add) and ran at half
    this speed on an H100."""
    key = (d, np.dtype(dtype).str, tile)
    if key not in _kernels:
        from numba import types as nbt
        nb = nbt.float32 if np.dtype(dtype) == np.float32 else nbt.float64
        D, T = d, tile

        @cuda.jit
        def kernel(z, codebook, e_sq, index, sqdist, inf):
            codes = cuda.shared.array((T, D), nb)
            codes_sq = cuda.shared.array(T, nb)
            row_a = cuda.local.array(D, nb)
            row_b = cuda.local.array(D, nb)
            tid = cuda.threadIdx.x
            i = (cuda.blockIdx.x * THREADS + tid) * 2          # this thread's rows: i and i + 1
            n, k_total = z.shape[0], codebook.shape[0]
            for c in range(D):
                row_a[c] = z[i, c] if i < n else 0
                row_b[c] = z[i + 1, c] if i + 1 < n else 0
            best_a, best_b = inf, inf
            k_a, k_b = 0, 0
            for k0 in range(0, k_total, T):
                for j in range(tid, T * D, THREADS):          # cooperative, coalesced tile load
                    kk, c = j // D, j % D
                    if k0 + kk < k_total:
                        codes[kk, c] = codebook[k0 + kk, c]
                for j in range(tid, T, THREADS):
                    if k0 + j < k_total:
                        codes_sq[j] = e_sq[k0 + j]
                cuda.syncthreads()
                for kk in range(min(T, k_total - k0)):
                    dot_a = row_a[0] * codes[kk, 0]
                    dot_b = row_b[0] * codes[kk, 0]
                    for c in range(1, D):
                        v = codes[kk, c]
                        dot_a += row_a[c] * v
                        dot_b += row_b[c] * v
                    score_a = codes_sq[kk] - (dot_a + dot_a)
                    score_b = codes_sq[kk] - (dot_b + dot_b)
                    if score_a < best_a:                       # strict: the lower index wins ties
                        best_a, k_a = score_a, k0 + kk
                    if score_b < best_b:
                        best_b, k_b = score_b, k0 + kk
                cuda.syncthreads()
            for r in range(2):
                row_i, k = (i, k_a) if r == 0 else (i + 1, k_b)
                if row_i < n:
                    index[row_i] = k
                    s = (z[row_i, 0] - codebook[k, 0]) ** 2
                    for c in range(1, D):
                        t = z[row_i, c] - codebook[k, c]
                        s += t * t
                    sqdist[row_i] = s

        _kernels[key] = kernel
    return _kernels[key]


def _nearest_cuda(z, codebook, tile_codes=None):
    xp = array_module(z)
    n, d = z.shape
    tile = tile_codes or _tile_codes(d, z.dtype.itemsize)
    if tile * (d + 1) * z.dtype.itemsize > SHARED_BYTES:
        raise ValueError(f"vq.nearest: a tile of {tile} codes of dimension {d} exceeds 48 KB of shared memory")
    L = CudaLaunch(z)
    e_sq = (codebook.astype(xp.float64) ** 2).sum(axis=1).astype(z.dtype)
    index, sqdist = L.empty(n, np.int64), L.empty(n, z.dtype)
    if n:
        kernel = _nearest_kernel(d, z.dtype, tile)
        kernel[((n + 2 * THREADS - 1) // (2 * THREADS),), (THREADS,), L.stream](
            L.input(z), L.input(codebook), L.input(e_sq), L.arg(index), L.arg(sqdist), z.dtype.type(np.inf))
    return L.output(index), L.output(sqdist)


def _ema_cuda(z, index, num_codes):
    global _ema_kernel
    if _ema_kernel is None:
        @cuda.jit
        def kernel(z, index, counts, sums, one):
            i, c = cuda.grid(2)
            if i < z.shape[0] and c < z.shape[1]:
                k = index[i]
                cuda.atomic.add(sums, (k, c), z[i, c])
                if c == 0:
                    cuda.atomic.add(counts, k, one)
        _ema_kernel = kernel
    L = CudaLaunch(z)
    n, d = z.shape
    counts, sums = L.zeros(num_codes, z.dtype), L.zeros((num_codes, d), z.dtype)
    if n:
        block = (8, 32)
        grid = ((n + 7) // 8, (d + 31) // 32)
        _ema_kernel[grid, block, L.stream](L.input(z), L.input(index.astype(np.int64)), L.arg(counts), L.arg(sums),
                                           z.dtype.type(1))
    return L.output(counts), L.output(sums)


_ema_kernel = None
