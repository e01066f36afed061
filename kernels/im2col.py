"""im2col, the gather of a convolution's receptive fields, and its adjoint col2im, the
scatter-add of window entries back into the image.

Images are batch last, [C, H, W, N]; windows are [kh, kw, C, Ho, Wo, N]:

  im2col   win[i, j, c, oh, ow, n] = image[c, y, x, n]    at y = oh·sh − ph + i·dh,
                                                              x = ow·sw − pw + j·dw
           (``pad_value`` where (y, x) falls outside the image);
  col2im   image[c, y, x, n] = Σ_{i, j} win[i, j, c, oh, ow, n] over the kernel offsets (i, j)
           and outputs (oh, ow) that read (y, x); entries in the padding are dropped

(s stride, p the padding before the first row and column, d dilation; the padding after the
last only sets Ho and Wo). The innermost run of N contiguous numbers is what makes
both moves fast.

  reference  im2col: a strided view of the padded image (stride tricks), copied; col2im: one
             strided add per kernel offset (i, j) into a zero-padded image, then the padding
             cut off. Vectorised NumPy or CuPy.
  cpu        Numba loops, no padded copy of the image. col2im is the gather form: every image
             element is summed once over the offsets that reach it, in the reference's (i, j)
             order, so the results are the same bits, and each element is written once
             instead of kh·kw read-modify-writes of the whole image (0.4 ms instead of 1.8 ms
             for the 32→64 MNIST conv layer's gradient). Serial on purpose: both run between
             BLAS products, whose idle threads keep spinning, and threaded versions ran slower.
  cuda       the same loops, one thread per output element (threads adjacent in n touch
             adjacent memory).
"""
from __future__ import annotations

import numpy as np
from numba import njit

try:                                     # the CUDA target (package numba-cuda) is optional
    from numba import cuda
except ImportError:
    cuda = None

from ._dispatch import CudaLaunch, array_module, check_float, choose


def pads(padding) -> tuple:
    """((top, bottom), (left, right)) from p (every side), (ph, pw) (both sides of an axis) or
    ((top, bottom), (left, right)) itself."""
    sides = tuple((p, p) if np.isscalar(p) else tuple(p)
                  for p in ((padding, padding) if np.isscalar(padding) else padding))
    if len(sides) != 2 or any(len(s) != 2 or not all(np.isscalar(v) for v in s) for s in sides):
        raise ValueError(f"padding must be p, (ph, pw) or ((top, bottom), (left, right)), got {padding}")
    return tuple((int(before), int(after)) for before, after in sides)


def conv_out_size(size: int, k: int, stride: int, pad, dil: int) -> int:
    """Output length of a convolution: ⌊(size + p_before + p_after − d(k − 1) − 1) / s⌋ + 1;
    ``pad`` is p (each side) or (p_before, p_after)."""
    before, after = (pad, pad) if np.ndim(pad) == 0 else pad
    return (size + before + after - dil * (k - 1) - 1) // stride + 1


def _geometry(stride, padding, dilation) -> tuple:
    """(sh, sw, ph, pw, dh, dw) as plain ints, the kernels' argument order: the padding
    before the first row and column is all the loops need."""
    (top, _), (left, _) = padding
    return tuple(int(v) for v in (*stride, top, left, *dilation))


def im2col(image, kernel: tuple, stride: tuple, padding: tuple, dilation: tuple, pad_value: float = 0.0,
           impl: str = None):
    """Windows [kh, kw, C, Ho, Wo, N] (contiguous) of ``image`` [C, H, W, N]; ``padding`` in any
    form ``pads`` takes."""
    check_float("im2col", image)
    if image.ndim != 4:
        raise ValueError(f"im2col: expected an image [C, H, W, N], got shape {image.shape}")
    padding = pads(padding)
    geometry = _geometry(stride, padding, dilation)
    c, h, w, n = image.shape
    out_hw = tuple(map(conv_out_size, (h, w), kernel, stride, padding, dilation))
    if min(out_hw) < 1:
        raise ValueError(f"im2col: image {h}x{w} is too small for kernel {tuple(kernel)} with padding "
                         f"{tuple(padding)} and dilation {tuple(dilation)}")
    shape = (*kernel, c, *out_hw, n)
    which = choose(impl, image)
    if which == "reference":
        return im2col_reference(image, shape, padding, geometry, pad_value)
    if which == "cpu":
        win = np.empty(shape, image.dtype)
        _im2col_cpu(image, win, image.dtype.type(pad_value), *geometry)
        return win
    return _im2col_cuda(image, shape, geometry, pad_value)


def col2im(win, image_hw: tuple, stride: tuple, padding: tuple, dilation: tuple, impl: str = None):
    """Image [C, H, W, N] (contiguous) summed from windows ``win`` [kh, kw, C, Ho, Wo, N]."""
    check_float("col2im", win)
    if win.ndim != 6:
        raise ValueError(f"col2im: expected windows [kh, kw, C, Ho, Wo, N], got shape {win.shape}")
    padding = pads(padding)
    geometry = _geometry(stride, padding, dilation)
    which = choose(impl, win)
    if which == "reference":
        return col2im_reference(win, image_hw, padding, geometry)
    kh, kw, c, ho, wo, n = win.shape
    if which == "cpu":
        image = np.empty((c, image_hw[0], image_hw[1], n), win.dtype)
        _col2im_cpu(win, image, *geometry)
        return image
    return _col2im_cuda(win, image_hw, geometry)


def im2col_reference(image, shape, padding, geometry, pad_value):
    xp = array_module(image)
    sh, sw, ph, pw, dh, dw = geometry
    c, h, w, n = image.shape
    (_, bottom), (_, right) = padding
    padded = xp.full((c, ph + h + bottom, pw + w + right, n), pad_value, image.dtype)
    padded[:, ph:ph + h, pw:pw + w, :] = image
    s_c, s_h, s_w, s_n = padded.strides
    view = xp.lib.stride_tricks.as_strided(padded, shape, (s_h * dh, s_w * dw, s_c, s_h * sh, s_w * sw, s_n))
    return xp.ascontiguousarray(view)


def col2im_reference(win, image_hw, padding, geometry):
    xp = array_module(win)
    sh, sw, ph, pw, dh, dw = geometry
    kh, kw, c, ho, wo, n = win.shape
    h, w = image_hw
    (_, bottom), (_, right) = padding
    padded = xp.zeros((c, ph + h + bottom, pw + w + right, n), win.dtype)
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
def _im2col_cpu(image, win, pad_value, sh, sw, ph, pw, dh, dw):
    kh, kw, c, ho, wo, n = win.shape
    h, w = image.shape[1], image.shape[2]
    for i in range(kh):
        for j in range(kw):
            for ci in range(c):
                for oh in range(ho):
                    y = oh * sh - ph + i * dh
                    for ow in range(wo):
                        x = ow * sw - pw + j * dw
                        out = win[i, j, ci, oh, ow]
                        if 0 <= y < h and 0 <= x < w:
                            src = image[ci, y, x]
                            for b in range(n):
                                out[b] = src[b]
                        else:
                            out[:] = pad_value


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
_KERNELS: dict = {}


def _cuda_kernels():
    """(im2col, col2im), compiled once on first use. ``cuda`` must stay a module global: the
    CUDA simulator swaps it for its own module while a kernel runs."""
    if not _KERNELS:
        source = cuda.jit(device=True)(_source.py_func)

        @cuda.jit(cache=True)
        def gather(image, win, pad_value, sh, sw, ph, pw, dh, dw):
            kh, kw, c, ho, wo, n = win.shape
            t = cuda.blockIdx.x * THREADS + cuda.threadIdx.x
            if t >= kh * kw * c * ho * wo * n:
                return
            b = t % n
            ow = (t // n) % wo
            oh = (t // (n * wo)) % ho
            ci = (t // (n * wo * ho)) % c
            j = (t // (n * wo * ho * c)) % kw
            i = t // (n * wo * ho * c * kw)
            y = oh * sh - ph + i * dh
            x = ow * sw - pw + j * dw
            if 0 <= y < image.shape[1] and 0 <= x < image.shape[2]:
                win[i, j, ci, oh, ow, b] = image[ci, y, x, b]
            else:
                win[i, j, ci, oh, ow, b] = pad_value

        @cuda.jit(cache=True)
        def scatter(win, image, zero, sh, sw, ph, pw, dh, dw):
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

        _KERNELS.update(im2col=gather, col2im=scatter)
    return _KERNELS


def _launch(kernel, size: int, L, *args) -> None:
    if size:
        kernel[((size + THREADS - 1) // THREADS,), (THREADS,), L.stream](*args)


def _im2col_cuda(image, shape, geometry, pad_value):
    L = CudaLaunch(image)
    win = L.empty(shape, image.dtype)
    _launch(_cuda_kernels()["im2col"], int(np.prod(shape)), L,
            L.input(array_module(image).ascontiguousarray(image)), L.arg(win), image.dtype.type(pad_value), *geometry)
    return L.output(win)


def _col2im_cuda(win, image_hw, geometry):
    L = CudaLaunch(win)
    kh, kw, c, ho, wo, n = win.shape
    image = L.empty((c, image_hw[0], image_hw[1], n), win.dtype)
    _launch(_cuda_kernels()["col2im"], c * image_hw[0] * image_hw[1] * n, L,
            L.input(array_module(win).ascontiguousarray(win)), L.arg(image), win.dtype.type(0), *geometry)
    return L.output(image)
