"""col2im: the adjoint of the im2col gather of a convolution, summing every window entry back
into the image position it was read from.

Windows ``win`` [kh, kw, C, Ho, Wo, N] (batch last, as ``tinyvae.ops.conv.windows`` reads
them) become an image [C, H, W, N]:

  image[c, y, x, n] = Σ_{i, j} win[i, j, c, oh, ow, n]   over the kernel offsets (i, j) with
                      y = oh·sh − ph + i·dh  and  x = ow·sw − pw + j·dw  for some output (oh, ow)

(s stride, p padding, d dilation). Window entries that fall in the padding are dropped.

  reference  one strided add per kernel offset (i, j) into a zero-padded image, then the
             padding cut off: kh·kw vectorised adds, NumPy or CuPy.
  cpu        the gather form: every image element is summed once, over the offsets that reach
             it, in the reference's (i, j) order, so the results are the same bits. Each
             element is written once instead of kh·kw read-modify-writes of the whole image
             (0.5 ms instead of 1.8 ms for the 32→64 MNIST conv layer's gradient). Serial on
             purpose: it runs between two BLAS products, whose idle threads keep spinning,
             and a threaded version ran slower for that.
  cuda       the same gather, one thread per image element (threads adjacent in n read
             adjacent window entries).
"""
from __future__ import annotations

import numpy as np
from numba import njit

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose


def col2im(win, image_hw: tuple, stride: tuple, padding: tuple, dilation: tuple, impl: str = None):
    """Image [C, H, W, N] (contiguous) summed from windows ``win`` [kh, kw, C, Ho, Wo, N]."""
    check_float("col2im", win)
    if win.ndim != 6:
        raise ValueError(f"col2im: expected windows [kh, kw, C, Ho, Wo, N], got shape {win.shape}")
    geometry = tuple(int(v) for v in (*stride, *padding, *dilation))
    which = choose(impl, win)
    if which == "reference":
        return col2im_reference(win, image_hw, geometry)
    kh, kw, c, ho, wo, n = win.shape
    if which == "cpu":
        image = np.empty((c, image_hw[0], image_hw[1], n), win.dtype)
        _col2im_cpu(win, image, *geometry)
        return image
    return _col2im_cuda(win, image_hw, geometry)


def col2im_reference(win, image_hw, geometry):
    xp = array_module(win)
    sh, sw, ph, pw, dh, dw = geometry
    kh, kw, c, ho, wo, n = win.shape
    h, w = image_hw
    padded = xp.zeros((c, h + 2 * ph, w + 2 * pw, n), win.dtype)
    for i in range(kh):
        for j in range(kw):
            padded[:, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw, :] += win[i, j]
    return xp.ascontiguousarray(padded[:, ph: ph + h, pw: pw + w, :])


@njit(cache=True)
def _source(pos, k, stride, pad, dil, out_size):
    """The output index whose window reads image position ``pos`` at kernel offset ``k``, or −1."""
    t = pos + pad - k * dil
    if t < 0 or t % stride != 0 or t // stride >= out_size:
        return -1
    return t // stride


@njit(cache=True)
def _col2im_cpu(win, image, sh, sw, ph, pw, dh, dw):
    kh, kw, c, ho, wo, n = win.shape
    for ci in range(c):
        for y in range(image.shape[1]):
            for x in range(image.shape[2]):
                out = image[ci, y, x]
                out[:] = 0
                for i in range(kh):
                    oh = _source(y, i, sh, ph, dh, ho)
                    if oh < 0:
                        continue
                    for j in range(kw):
                        ow = _source(x, j, sw, pw, dw, wo)
                        if ow < 0:
                            continue
                        src = win[i, j, ci, oh, ow]
                        for b in range(n):
                            out[b] += src[b]


THREADS = 256
_KERNEL: list = []


def _cuda_kernel():
    """Compiled once on first use. ``cuda`` must stay a module global: the CUDA simulator
    swaps it for its own module while a kernel runs."""
    if not _KERNEL:
        source = cuda.jit(device=True)(_source.py_func)

        @cuda.jit(cache=True)
        def kernel(win, image, zero, sh, sw, ph, pw, dh, dw):
            kh, kw, c, ho, wo, n = win.shape
            h, w = image.shape[1], image.shape[2]
            t = cuda.blockIdx.x * THREADS + cuda.threadIdx.x
            if t >= c * h * w * n:
                return
            b = t % n
            x = (t // n) % w
            y = (t // (n * w)) % h
            ci = t // (n * w * h)
            total = zero
            for i in range(kh):
                oh = source(y, i, sh, ph, dh, ho)
                if oh >= 0:
                    for j in range(kw):
                        ow = source(x, j, sw, pw, dw, wo)
                        if ow >= 0:
                            total += win[i, j, ci, oh, ow, b]
            image[ci, y, x, b] = total

        _KERNEL.append(kernel)
    return _KERNEL[0]


def _col2im_cuda(win, image_hw, geometry):
    kernel = _cuda_kernel()
    L = CudaLaunch(win)
    kh, kw, c, ho, wo, n = win.shape
    image = L.empty((c, image_hw[0], image_hw[1], n), win.dtype)
    size = c * image_hw[0] * image_hw[1] * n
    if size:
        kernel[((size + THREADS - 1) // THREADS,), (THREADS,), L.stream](
            L.input(array_module(win).ascontiguousarray(win)), L.arg(image), win.dtype.type(0), *geometry)
    return L.output(image)
