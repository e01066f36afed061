"""Nearest-codebook search for vector quantisation, and the EMA codebook statistics.

``nearest(z, codebook)`` returns, for every row z_n of z [N, D], the index of the closest
code e_k of codebook [K, D] in squared Euclidean distance, argmin_k ‖z_n − e_k‖² (ties go
to the lowest index, as ``argmin``), and that distance, recomputed directly as
Σ_d (z_nd − e_kd)² so it is never negative.

The search ranks codes by ‖e_k‖² − 2 z_n·e_k, which differs from the distance only by
‖z_n‖² (the same for every k of a row). No implementation builds the N×K distance matrix:
  cpu   a matrix-product micro-kernel with the argmin fused in: 6 rows at a time against
        panels of 2 SIMD vectors of codes, the scores in registers (kernels/_simd.py), each
        lane keeping its running minimum; the codebook is visited in cache-sized chunks, and
        the rows are shared among threads. Each block's chosen distances are recomputed
        exactly as soon as its last chunk is done, while its rows are still in cache.
        Extra memory: O(N + K·D), the packed codebook and the per-row results.
  cuda  two rows per thread (kept in registers); codebook tiles of at most 48 KB pass
        through shared memory and every thread keeps its rows' running minima: O(N + K).
        A row whose values are too large for its scores to be finite (or NaN) is ranked
        again from its exact distances by its thread.

``ema_update(z, index, num_codes)`` returns the per-code counts n_k = #{n : index_n = k}
and sums s_k = Σ_{n : index_n = k} z_n that the exponential-moving-average codebook
update needs (VQ-VAE, van den Oord et al. 2017, appendix).
"""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose
from ._simd import first_minimum, fma, lane_count, lane_indices, load, splat, where_first


def _check(z, codebook) -> None:
    check_float("vq.nearest", z, codebook)
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"vq.nearest: expected z [N, D] and codebook [K, D], got {z.shape} and {codebook.shape}")
    if codebook.shape[0] == 0:
        raise ValueError("vq.nearest: the codebook is empty")
    if codebook.shape[1] == 0:
        raise ValueError("vq.nearest: codes of dimension 0 have no nearest one")


def nearest(z, codebook, impl: str = None, tile_codes: int = None):
    """(index [N] int64, sqdist [N]) of the nearest code for every row of ``z``.

    Where the ranking scores cannot be trusted (a NaN or infinite input, or a float32
    overflow), the row is ranked from its exact float64 distances, as argmin ranks them (a
    NaN distance wins, the first one).

    ``tile_codes`` overrides the number of codes per tile (per shared-memory tile on CUDA, per
    cache-sized chunk on the CPU, rounded to whole panels there); tests use it to run several
    tiles on small codebooks.
    """
    _check(z, codebook)
    which = choose(impl, z, codebook)
    if which == "reference":
        return nearest_reference(z, codebook)
    if which == "cpu":
        return _nearest_cpu(np.ascontiguousarray(z), np.ascontiguousarray(codebook), tile_codes)
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

ROWS = 6                                  # rows of z per micro-kernel call (_search_blocks unrolls 6)
CHUNK_BYTES = 512 * 1024                  # codebook panels per pass over the rows: half an L2


def _nearest_cpu(z, codebook, tile_codes=None):
    """The codebook is packed once into panels of P = 2 × lanes codes (−2e, laid out [D, P]
    per panel, so the micro-kernel reads each panel front to back) and padded to a whole panel
    with copies of its last code: a copy scores exactly as that code does, so ties hand the row
    to the original. The rows are shared among ``numba.get_num_threads()`` Python threads, each
    running the GIL-free kernel on its own 6-row blocks; rows that do not fill a block go
    through once more, padded. Every row's answer depends on its own row alone, so it does not
    depend on the number of threads."""
    n = len(z)
    panels, e_sq = _pack_codebook(codebook)
    if not np.isfinite(e_sq).all():             # a non-finite code, or ‖e‖² past the dtype's range
        return nearest_reference(z, codebook)
    width = _panel_codes(z)
    chunk = max(width, (tile_codes or CHUNK_BYTES // (z.shape[1] * z.itemsize)) // width * width)
    index, best, sqdist = np.empty(n, np.int64), np.empty(n, z.dtype), np.empty(n, z.dtype)
    whole = n - n % ROWS

    def search(first: int, stop: int) -> None:
        """Rows [first, stop), a multiple of ROWS."""
        rows = slice(first, stop)
        _search_blocks(z[rows], panels, e_sq, chunk, codebook, index[rows], best[rows], sqdist[rows])

    workers = min(numba.get_num_threads(), whole // ROWS)
    if workers > 1:
        bounds = [whole // ROWS * t // workers * ROWS for t in range(workers + 1)]
        list(_thread_pool(workers).map(search, bounds[:-1], bounds[1:]))
    elif whole:
        search(0, whole)
    if whole < n:                                          # the last n % ROWS rows, padded to a block
        tail = np.concatenate([z[whole:], np.repeat(z[-1:], ROWS - (n - whole), axis=0)])
        tail_index, tail_best, tail_sqdist = np.empty(ROWS, np.int64), np.empty(ROWS, z.dtype), np.empty(ROWS, z.dtype)
        _search_blocks(tail, panels, e_sq, chunk, codebook, tail_index, tail_best, tail_sqdist)
        index[whole:], best[whole:], sqdist[whole:] = (a[:n - whole] for a in (tail_index, tail_best, tail_sqdist))
    # A NaN score wins its row (as in argmin), so with finite ‖e‖² a row's best score is finite
    # unless one of its scores was NaN or −inf (a non-finite row, or an overflow): there the
    # ranking identity fails, and the row is ranked again from the distances themselves. (A
    # score overflowing to +inf belongs to a code that is not the nearest, or all of them do.)
    unsure = ~np.isfinite(best)
    if unsure.any():
        index[unsure], sqdist[unsure] = nearest_reference(z[unsure], codebook)
    return index, sqdist


def _pack_codebook(codebook):
    """(panels, e_sq): panels [Kp / P, D, P] flattened, panel p column j = −2 e_(pP + j), and
    e_sq [Kp] = ‖e‖² summed in float64; Kp rounds K up to whole panels with copies of e_(K−1)."""
    k, d = codebook.shape
    width = _panel_codes(codebook)
    padded = np.concatenate([codebook, np.repeat(codebook[-1:], -k % width, axis=0)])
    panels = np.ascontiguousarray((-2 * padded).reshape(-1, width, d).transpose(0, 2, 1)).ravel()
    with np.errstate(over="ignore"):                            # caught by the caller's finiteness check
        e_sq = (padded.astype(np.float64) ** 2).sum(axis=1).astype(codebook.dtype)
    return panels, e_sq


@njit(inline="always")
def _panel_codes(a) -> int:
    """Codes per panel: two SIMD vectors of a's dtype (the micro-kernel keeps two per row)."""
    return 2 * lane_count(a)


@njit(nogil=True)
def _search_blocks(z, panels, e_sq, chunk, codebook, index, best, sqdist):
    """index[i], best[i] = argmin_k and min_k of ‖e_k‖² − 2 z_i·e_k for rows z [6m, D], and
    sqdist[i] = ‖z_i − e_index[i]‖².

    The codebook is visited a chunk of ``chunk`` codes at a time (it stays in cache while
    every block of 6 rows passes over it). A block's scores against one panel of P codes are
    12 vector accumulators, two per row, kept in registers through the D multiply-adds (one
    panel load feeds 6 rows). Each lane keeps its running minimum and that code's index; the
    lanes are reduced once per chunk, and the chunks merged in order."""
    d_total = z.shape[1]
    lanes, width = lane_count(z), _panel_codes(z)
    for c0 in range(0, len(e_sq), chunk):
        c1 = min(c0 + chunk, len(e_sq))
        for i in range(0, z.shape[0], 6):
            bv0 = splat(z.dtype.type(np.inf))
            bi0 = lane_indices(c0, bv0)
            bv1, bv2, bv3, bv4, bv5 = bv0, bv0, bv0, bv0, bv0
            bi1, bi2, bi3, bi4, bi5 = bi0, bi0, bi0, bi0, bi0
            for k0 in range(c0, c1, width):
                a0, b0 = load(e_sq, k0), load(e_sq, k0 + lanes)    # ‖e‖² of the panel's two halves
                a1, a2, a3, a4, a5 = a0, a0, a0, a0, a0
                b1, b2, b3, b4, b5 = b0, b0, b0, b0, b0
                for d in range(d_total):
                    p = k0 * d_total + d * width                    # panel k0 / P, row d
                    ca, cb = load(panels, p), load(panels, p + lanes)
                    a0, b0 = _fma_pair(z[i, d], ca, cb, a0, b0)
                    a1, b1 = _fma_pair(z[i + 1, d], ca, cb, a1, b1)
                    a2, b2 = _fma_pair(z[i + 2, d], ca, cb, a2, b2)
                    a3, b3 = _fma_pair(z[i + 3, d], ca, cb, a3, b3)
                    a4, b4 = _fma_pair(z[i + 4, d], ca, cb, a4, b4)
                    a5, b5 = _fma_pair(z[i + 5, d], ca, cb, a5, b5)
                ka, kb = lane_indices(k0, bi0), lane_indices(k0 + lanes, bi0)
                bv0, bi0 = _keep_first(bv0, bi0, a0, b0, ka, kb)
                bv1, bi1 = _keep_first(bv1, bi1, a1, b1, ka, kb)
                bv2, bi2 = _keep_first(bv2, bi2, a2, b2, ka, kb)
                bv3, bi3 = _keep_first(bv3, bi3, a3, b3, ka, kb)
                bv4, bi4 = _keep_first(bv4, bi4, a4, b4, ka, kb)
                bv5, bi5 = _keep_first(bv5, bi5, a5, b5, ka, kb)
            _merge_chunk(bv0, bi0, c0, i, index, best)
            _merge_chunk(bv1, bi1, c0, i + 1, index, best)
            _merge_chunk(bv2, bi2, c0, i + 2, index, best)
            _merge_chunk(bv3, bi3, c0, i + 3, index, best)
            _merge_chunk(bv4, bi4, c0, i + 4, index, best)
            _merge_chunk(bv5, bi5, c0, i + 5, index, best)
            if c1 == len(e_sq):                                   # the block's last chunk: its answer
                _row_sqdist(z[i:i + 6], codebook, index[i:i + 6], sqdist[i:i + 6])


@njit(inline="always")
def _fma_pair(x, ca, cb, a, b):
    """One row's multiply-add into both halves of a panel: a + x·ca, b + x·cb."""
    s = splat(x)
    return fma(s, ca, a), fma(s, cb, b)


@njit(inline="always")
def _keep_first(best, best_index, a, b, ka, kb):
    """Lane-wise running minimum over a panel's two halves, a (codes ka) before b (codes kb > ka)."""
    v, k = where_first(b, a, b, a), where_first(b, a, kb, ka)
    return where_first(v, best, v, best), where_first(v, best, k, best_index)


@njit(inline="always")
def _merge_chunk(values, indices, c0, i, index, best):
    """Row i's minimum over one chunk's lanes, merged into what the earlier chunks found."""
    v, k = first_minimum(values, indices)
    w = best[i]
    if c0 == 0 or v < w or (v != v and w == w):            # later chunks win only outright
        best[i], index[i] = v, k


@functools.cache
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="tinyvae-vq")


# A forked child inherits the pool but not its threads: work sent to it would never run.
if hasattr(os, "register_at_fork"):          # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_thread_pool.cache_clear)


@njit(nogil=True, fastmath={"reassoc", "contract"})
def _row_sqdist(z, codebook, index, out):
    """Σ_d (z_nd − e_kd)² for the chosen codes, summed in float64. 'reassoc' lets the sum
    vectorise (4.5× faster at D = 64); the order is fixed by the compiled code, so the same
    input still gives the same bits."""
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
        def kernel(z, codebook, e_sq, limit, index, sqdist, inf):
            codes = cuda.shared.array((T, D), nb)
            codes_sq = cuda.shared.array(T, nb)
            row_a = cuda.local.array(D, nb)
            row_b = cuda.local.array(D, nb)
            tid = cuda.threadIdx.x
            i = (cuda.blockIdx.x * THREADS + tid) * 2          # this thread's rows: i and i + 1
            n, k_total = z.shape[0], codebook.shape[0]
            bound = limit[0]
            safe_a, safe_b = True, True                        # every |z_ic| < bound: no score can overflow
            for c in range(D):
                row_a[c] = z[i, c] if i < n else 0
                row_b[c] = z[i + 1, c] if i + 1 < n else 0
                if not abs(row_a[c]) < bound:                  # a NaN compares false: not safe either
                    safe_a = False
                if not abs(row_b[c]) < bound:
                    safe_b = False
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
                row_i, k, safe = (i, k_a, safe_a) if r == 0 else (i + 1, k_b, safe_b)
                if row_i < n and not safe:                     # argmin of exact float64 distances,
                    k, exact, nan_seen = 0, math.inf, False    # the first NaN winning, as argmin's
                    for kk in range(k_total):
                        s = 0.0
                        for c in range(D):
                            t = float(z[row_i, c]) - float(codebook[kk, c])
                            s += t * t
                        if s != s and not nan_seen:
                            k, nan_seen = kk, True
                        elif s < exact and not nan_seen:
                            k, exact = kk, s
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
    e_sq = (codebook.astype(xp.float64) ** 2).sum(axis=1)
    index, sqdist = L.empty(n, np.int64), L.empty(n, z.dtype)
    if n:
        kernel = _nearest_kernel(d, z.dtype, tile)
        kernel[((n + 2 * THREADS - 1) // (2 * THREADS),), (THREADS,), L.stream](
            L.input(z), L.input(codebook), L.input(e_sq.astype(z.dtype)), L.input(_safe_row_limit(e_sq, d, z.dtype)),
            L.arg(index), L.arg(sqdist), z.dtype.type(np.inf))
    return L.output(index), L.output(sqdist)


def _safe_row_limit(e_sq, d: int, dtype):
    """[limit] on the codebook's device (no synchronisation) from the codes' ‖e‖² in float64:
    a row whose every |z_c| is below it has finite scores, since
    |‖e‖² − 2 z·e| ≤ max ‖e‖² + 2 √D max|z_c| max ‖e‖ < the dtype's largest number. It is 0,
    and every row is ranked from its exact distances, when a code is not finite or its ‖e‖²
    may overflow. (The CPU kernel instead tells such rows by their scores.)"""
    xp = array_module(e_sq)
    top = float(np.finfo(dtype).max)
    largest = e_sq.max()                                            # NaN if a code holds a NaN
    fits = largest < top / 2                                        # False for NaN and inf too
    limit = top / (4 * math.sqrt(d) * xp.sqrt(xp.where(fits, largest, 1.0)) + 1e-300)
    return xp.where(fits, xp.minimum(limit, top), 0.0).reshape(1).astype(dtype)   # min: a cast, not an overflow


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
