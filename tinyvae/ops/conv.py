"""2-D convolution, its adjoint, and pooling, all on one pair of helpers:

``im2col``  every receptive field as a column: [kh·kw·C, Ho·Wo·N];
``col2im``  its adjoint: adds each column entry back where it came from.
Both moves run in the custom kernel ``kernels.im2col`` (Numba on the CPU, CUDA for CuPy
arrays); its readable reference is a strided view of the padded image (stride tricks) for
im2col and one vectorised add per kernel offset for col2im.

Internally images are laid out [C, H, W, N] (batch last), so that both the gather and the
scatter-add move runs of N contiguous numbers; in [N, C, H, W] the innermost run would be
one output row, a few numbers long, and the adds ran 3-6x slower.

Shapes follow PyTorch: x [N, C, H, W]; conv weight [O, C, kh, kw]; transposed-conv
weight [C_in, C_out, kh, kw].
"""
from __future__ import annotations

from kernels import im2col as im2col_kernel
from kernels.im2col import conv_out_size, pads

from .. import backend
from ..autograd import Function


def pair(v) -> tuple:
    return (v, v) if isinstance(v, int) else tuple(v)


class Geometry:
    """Kernel size, stride, padding and dilation of one convolution, and the sizes they imply.
    ``padding``: p, (ph, pw), or ((top, bottom), (left, right)) where the sides differ (a
    causal convolution's); ``self.p`` is always the last form."""

    def __init__(self, kernel, stride=1, padding=0, dilation=1):
        self.k, self.s, self.p, self.d = pair(kernel), pair(stride), pads(padding), pair(dilation)
        if min(self.k) < 1 or min(self.s) < 1 or min(self.d) < 1 or min(min(sides) for sides in self.p) < 0:
            raise ValueError(f"conv: kernel {self.k}, stride {self.s} and dilation {self.d} must be >= 1 "
                             f"and padding {self.p} >= 0")

    def out_hw(self, h: int, w: int) -> tuple:
        ho = conv_out_size(h, self.k[0], self.s[0], self.p[0], self.d[0])
        wo = conv_out_size(w, self.k[1], self.s[1], self.p[1], self.d[1])
        if ho < 1 or wo < 1:
            raise ValueError(f"conv: input {h}x{w} is too small for kernel {self.k} with padding {self.p} "
                             f"and dilation {self.d}")
        return ho, wo


def windows(x, g: Geometry, pad_value: float = 0.0):
    """Receptive fields [kh, kw, C, Ho, Wo, N] of ``x`` [N, C, H, W] (padded with ``pad_value``),
    a contiguous array."""
    g.out_hw(x.shape[2], x.shape[3])                  # rejects inputs too small for the kernel
    image = backend.array_module(x).ascontiguousarray(x.transpose(1, 2, 3, 0))   # free for batch-last views
    return im2col_kernel.im2col(image, g.k, g.s, g.p, g.d, pad_value)


def scatter_windows(win, x_shape: tuple, g: Geometry):
    """Adjoint of ``windows``: sum entries [kh, kw, C, Ho, Wo, N] back into an [N, C, H, W]
    array (a batch-last view, see batch_first)."""
    return im2col_kernel.col2im(win, x_shape[2:], g.s, g.p, g.d).transpose(3, 0, 1, 2)


def im2col(x, g: Geometry):
    """Receptive fields as columns: [kh·kw·C, Ho·Wo·N] (rows ordered kernel offset, then channel)."""
    win = windows(x, g)
    return win.reshape(-1, win.shape[3] * win.shape[4] * win.shape[5])


def col2im(cols, x_shape: tuple, out_hw: tuple, g: Geometry):
    """Adjoint of ``im2col``: [kh·kw·C, Ho·Wo·N] → [N, C, H, W]."""
    n, c = x_shape[:2]
    return scatter_windows(cols.reshape(g.k[0], g.k[1], c, out_hw[0], out_hw[1], n), x_shape, g)


def weight_cols(weight):
    """[O, C, kh, kw] → [O, kh·kw·C], matching im2col's row order."""
    return weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], -1)


def weight_from_cols(wc, w_shape: tuple):
    o, c, kh, kw = w_shape
    return wc.reshape(o, kh, kw, c).transpose(0, 3, 1, 2)


def batch_last(x):
    """[N, C, H, W] → [C, H·W·N], contiguous (a copy unless x is already a batch-last view)."""
    return backend.array_module(x).ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(x.shape[1], -1)


def weight_grad_cols(g_cols, cols):
    """Σ over columns of g_cols [O, M] times cols [K, M], i.e. g_cols · colsᵀ → [O, K], computed
    as (cols · g_colsᵀ)ᵀ: OpenBLAS ran that order 15% faster for the MNIST conv layers."""
    return (cols @ g_cols.T).T


def batch_first(y, n: int, hw: tuple):
    """[C, H·W·N] → an [N, C, H, W] *view* (memory stays batch-last). Not copying pays: the next
    conv transposes straight back, and elementwise ops keep the memory order."""
    return y.reshape(-1, hw[0], hw[1], n).transpose(3, 0, 1, 2)


def _check_input(name: str, x, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected input [N, {channels}, H, W], got shape {x.shape}")


class Conv2d(Function):
    """y = W ⋆ x (+ b) as one matrix product: cols(y) = W_c · im2col(x), W_c = W as [O, kh·kw·C].
    Backward: dW_c = cols(g) · im2col(x)ᵀ,  dx = col2im(W_cᵀ · cols(g))."""

    def __init__(self, stride=1, padding=0, dilation=1):
        self.args = (stride, padding, dilation)

    def forward(self, x, weight, bias=None):
        o, c, kh, kw = weight.shape
        _check_input("conv2d", x, c)
        self.g = Geometry((kh, kw), *self.args)
        self.out_hw = self.g.out_hw(x.shape[2], x.shape[3])
        cols = im2col(x, self.g)
        wc = weight_cols(weight)
        y = wc @ cols
        if bias is not None:
            y += bias[:, None]
        self.saved = (cols, wc, x.shape, weight.shape)
        return batch_first(y, x.shape[0], self.out_hw)

    def backward(self, gy):
        cols, wc, x_shape, w_shape = self.saved
        g_cols = batch_last(gy)
        gw = weight_from_cols(weight_grad_cols(g_cols, cols), w_shape) if self.needs_grad(1) else None
        gb = g_cols.sum(axis=1) if len(self.inputs) > 2 and self.needs_grad(2) else None
        gx = None
        if self.needs_grad(0):
            # After dW the columns are dead on a last backward: their buffer, still in cache,
            # takes Wᵀ·g (a fresh 12 MB array cost 0.5-0.8 ms more on the 32→64 MNIST layer).
            xp = backend.array_module(cols)
            reuse = self.last_use and cols.dtype == xp.result_type(wc, g_cols)
            g_win = xp.dot(wc.T, g_cols, out=cols if reuse else None)
            gx = col2im(g_win, x_shape, self.out_hw, self.g)
        return gx, gw, gb


class ConvTranspose2d(Function):
    """The adjoint of Conv2d in x: y = col2im(W_cᵀ · x_c), W_c = W as [C_in, kh·kw·C_out], x_c = x as
    [C_in, H·W·N]. Output size (H − 1)s − p_before − p_after + d(k − 1) + output_padding + 1.
    Backward: dx = W_c · im2col(g),  dW_c = x_c · im2col(g)ᵀ."""

    def __init__(self, stride=1, padding=0, output_padding=0, dilation=1):
        self.args = (stride, padding, dilation)
        self.output_padding = pair(output_padding)

    def forward(self, x, weight, bias=None):
        c_in, c_out, kh, kw = weight.shape
        _check_input("conv_transpose2d", x, c_in)
        g = self.g = Geometry((kh, kw), *self.args)
        if any(op < 0 or op >= s for op, s in zip(self.output_padding, g.s)):
            # (PyTorch also allows op < dilation; those extra rows would get only the bias)
            raise ValueError(f"conv_transpose2d: output_padding {self.output_padding} must be in [0, stride {g.s})")
        n, _, h, w = x.shape
        out_h, out_w = ((size - 1) * s - sum(p) + d * (k - 1) + op + 1
                        for size, s, p, d, k, op in zip((h, w), g.s, g.p, g.d, g.k, self.output_padding))
        if out_h < 1 or out_w < 1:
            raise ValueError(f"conv_transpose2d: input {h}x{w} with padding {g.p} gives an empty output "
                             f"({out_h}x{out_w})")
        self.in_hw = (h, w)
        self.y_shape = (n, c_out, out_h, out_w)
        x_c = batch_last(x)
        wc = weight_cols(weight)
        y = col2im(wc.T @ x_c, self.y_shape, self.in_hw, g)      # a batch-last view, kept (see batch_first)
        if bias is not None:
            y += bias.reshape(1, -1, 1, 1)                       # y is a fresh array: add in place
        self.saved = (x_c, wc, weight.shape)
        return y

    def backward(self, gy):
        x_c, wc, w_shape = self.saved
        cols = im2col(gy, self.g)
        gx = batch_first(wc @ cols, gy.shape[0], self.in_hw) if self.needs_grad(0) else None
        gw = weight_from_cols(weight_grad_cols(x_c, cols), w_shape) if self.needs_grad(1) else None
        gb = gy.sum(axis=(0, 2, 3)) if len(self.inputs) > 2 and self.needs_grad(2) else None
        return gx, gw, gb


class AvgPool2d(Function):
    """Mean over each window (zero padding counts, as PyTorch's count_include_pad=True)."""

    def __init__(self, kernel, stride=None, padding=0):
        self.g = Geometry(kernel, stride if stride is not None else kernel, padding)

    def forward(self, x):
        self.x_shape = x.shape
        return _batch_first_4d(windows(x, self.g).mean(axis=(0, 1)))

    def backward(self, gy):
        xp = backend.array_module(gy)
        kh, kw = self.g.k
        g = (gy / (kh * kw)).transpose(1, 2, 3, 0)                  # [C, Ho, Wo, N]
        return scatter_windows(xp.broadcast_to(g, (kh, kw) + g.shape), self.x_shape, self.g)


class MaxPool2d(Function):
    """Max over each window (padding never wins); the gradient goes to the first maximum."""

    def __init__(self, kernel, stride=None, padding=0):
        self.g = Geometry(kernel, stride if stride is not None else kernel, padding)

    def forward(self, x):
        xp = backend.array_module(x)
        self.x_shape = x.shape
        win = windows(x, self.g, pad_value=-xp.inf)
        flat = win.reshape((-1,) + win.shape[2:])                   # [kh·kw, C, Ho, Wo, N]
        arg = xp.argmax(flat, axis=0)
        self.saved = arg
        self.win_shape = win.shape
        return _batch_first_4d(xp.take_along_axis(flat, arg[None], axis=0)[0])

    def backward(self, gy):
        xp = backend.array_module(gy)
        kh, kw = self.g.k
        onehot = xp.zeros((kh * kw,) + self.win_shape[2:], gy.dtype)
        xp.put_along_axis(onehot, self.saved[None], gy.transpose(1, 2, 3, 0)[None], axis=0)
        return scatter_windows(onehot.reshape(self.win_shape), self.x_shape, self.g)


def _batch_first_4d(y):
    """[C, Ho, Wo, N] → an [N, C, Ho, Wo] view (see batch_first)."""
    return y.transpose(3, 0, 1, 2)
