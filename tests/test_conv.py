"""Convolution, transposed convolution, pooling and upsampling: against naive loops, by the
adjoint identity, and by finite differences, over hypothesis-drawn geometries."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinyvae as tv
from tinyvae import functional as F
from tinyvae.ops.conv import conv_out_size, pads


def naive_conv2d(x, w, b, stride, pad, dil):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    rows, cols = pads(pad)
    xp = np.pad(x, ((0, 0), (0, 0), rows, cols))
    ho, wo = conv_out_size(h, kh, stride, rows, dil), conv_out_size(wd, kw, stride, cols, dil)
    y = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            for a in range(kh):
                for bb in range(kw):
                    patch = xp[:, :, i * stride + a * dil, j * stride + bb * dil]   # [n, c]
                    y[:, :, i, j] += patch @ w[:, :, a, bb].T
    return y + (0 if b is None else b[None, :, None, None])


@st.composite
def conv_case(draw):
    k = draw(st.integers(1, 4))
    side = st.integers(0, 2)
    # p on every side, or each side its own ((top, bottom), (left, right)), as a causal conv's
    pad = draw(st.one_of(side, st.tuples(st.tuples(side, side), st.tuples(side, side))))
    stride, dil = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    rows, cols = pads(pad)
    assume(conv_out_size(h, k, stride, rows, dil) >= 1 and conv_out_size(w, k, stride, cols, dil) >= 1)
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, k, k)), rng.standard_normal(o),
            stride, pad, dil)


@given(conv_case())
def test_conv2d_matches_naive_loops(case):
    x, w, b, s, p, d = case
    y = F.conv2d(tv.tensor(x, dtype=np.float64), tv.tensor(w, dtype=np.float64), tv.tensor(b, dtype=np.float64),
                 s, p, d)
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, w, b, s, p, d), rtol=1e-10, atol=1e-10)


@given(conv_case())
def test_conv2d_gradients(case):
    x, w, b, s, p, d = case
    ts = [tv.tensor(a, dtype=np.float64, requires_grad=True) for a in (x, w, b)]
    assert tv.gradcheck(lambda x, w, b: F.conv2d(x, w, b, s, p, d), ts, atol=1e-6, rtol=1e-5)


@given(conv_case())
def test_conv2d_gradients_with_and_without_a_retained_graph(case):
    # A last backward writes the input gradient's columns over the saved im2col columns;
    # a retained graph must keep them intact for the next backward.
    x, w, b, s, p, d = case

    def grads(backwards, retain):
        ts = [tv.tensor(a, dtype=np.float64, requires_grad=True) for a in (x, w, b)]
        y = F.conv2d(*ts, s, p, d)
        g = tv.tensor(np.cos(np.arange(y.size)).reshape(y.shape))
        for k in range(backwards):
            (y * g).sum().backward(retain_graph=retain and k < backwards - 1)
        return [t.grad for t in ts]
    once = grads(1, False)
    for twice, one in zip(grads(2, True), once):
        np.testing.assert_allclose(twice, 2 * one, rtol=1e-12, atol=1e-12)


@given(conv_case())
def test_conv_transpose2d_is_the_adjoint_of_conv2d(case):
    """⟨conv(x), y⟩ = ⟨x, convᵀ(y)⟩ for the same weight, and convᵀ restores x's size."""
    x, w, _, s, p, d = case
    h, wd = x.shape[2:]
    rows, cols = pads(p)
    ho, wo = conv_out_size(h, w.shape[2], s, rows, d), conv_out_size(wd, w.shape[3], s, cols, d)
    # the output_padding that makes convᵀ land exactly on x's size (when one below stride exists)
    extra = h - ((ho - 1) * s - sum(rows) + d * (w.shape[2] - 1) + 1)
    assume(extra == wd - ((wo - 1) * s - sum(cols) + d * (w.shape[3] - 1) + 1) and 0 <= extra < s)
    y = np.random.default_rng(1).standard_normal((x.shape[0], w.shape[0], ho, wo))
    cx = F.conv2d(tv.tensor(x, dtype=np.float64), tv.tensor(w, dtype=np.float64), None, s, p, d).numpy()
    cty = F.conv_transpose2d(tv.tensor(y, dtype=np.float64), tv.tensor(w, dtype=np.float64), None, s, p,
                             extra, d).numpy()
    assert cty.shape == x.shape
    np.testing.assert_allclose((cx * y).sum(), (x * cty).sum(), rtol=1e-10)


@given(conv_case(), st.integers(0, 2))
def test_conv_transpose2d_gradients_and_size(case, out_pad):
    x, w, b, s, p, d = case
    assume(out_pad < s)
    k = w.shape[2]
    out_h, out_w = ((n - 1) * s - sum(side) + d * (k - 1) + out_pad + 1 for n, side in zip(x.shape[2:], pads(p)))
    assume(out_h >= 1 and out_w >= 1)
    wt = np.swapaxes(w, 0, 1)                     # [in=c, out=o, k, k] for the transposed conv
    ts = [tv.tensor(a, dtype=np.float64, requires_grad=True) for a in (x, wt, b)]
    assert F.conv_transpose2d(*ts, s, p, out_pad, d).shape[2:] == (out_h, out_w)
    assert tv.gradcheck(lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, out_pad, d), ts, atol=1e-6, rtol=1e-5)


@given(k=st.integers(1, 3), s=st.integers(1, 3), p=st.integers(0, 1), h=st.integers(3, 7),
       seed=st.integers(0, 2**32 - 1))
def test_pools_match_naive_and_gradcheck(k, s, p, h, seed):
    assume(p <= k // 2)
    rng = np.random.default_rng(seed)
    x = rng.permutation(2 * 2 * h * h).reshape(2, 2, h, h) * 0.1   # distinct values: no max ties
    xt = tv.tensor(x, dtype=np.float64, requires_grad=True)
    xp_zero = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    xp_inf = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    ho = conv_out_size(h, k, s, p, 1)
    avg = np.zeros((2, 2, ho, ho))
    mx = np.zeros((2, 2, ho, ho))
    for i in range(ho):
        for j in range(ho):
            avg[:, :, i, j] = xp_zero[:, :, i * s:i * s + k, j * s:j * s + k].mean(axis=(2, 3))
            mx[:, :, i, j] = xp_inf[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
    np.testing.assert_allclose(F.avg_pool2d(xt, k, s, p).numpy(), avg, rtol=1e-12)
    np.testing.assert_allclose(F.max_pool2d(xt, k, s, p).numpy(), mx, rtol=1e-12)
    assert tv.gradcheck(lambda t: F.avg_pool2d(t, k, s, p), [xt], atol=1e-6, rtol=1e-5)
    assert tv.gradcheck(lambda t: F.max_pool2d(t, k, s, p), [xt], atol=1e-6, rtol=1e-5)


def test_interpolate_nearest_and_its_gradient():
    x = tv.tensor(np.arange(4.0).reshape(1, 1, 2, 2), dtype=np.float64, requires_grad=True)
    y = F.interpolate_nearest(x, 2)
    np.testing.assert_array_equal(y.numpy()[0, 0], np.kron(np.arange(4.0).reshape(2, 2), np.ones((2, 2))))
    assert tv.gradcheck(lambda t: F.interpolate_nearest(t, 3), [x])
    with pytest.raises(ValueError, match="positive int"):
        F.interpolate_nearest(x, 1.5)


def test_conv_errors_name_the_problem():
    x = tv.tensor(np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match=r"conv2d: expected input \[N, 2, H, W\], got shape \(1, 3, 5, 5\)"):
        F.conv2d(x, tv.tensor(np.zeros((4, 2, 3, 3))))
    with pytest.raises(ValueError, match="too small"):
        F.conv2d(x, tv.tensor(np.zeros((4, 3, 7, 7))))
    with pytest.raises(ValueError, match=r"output_padding \(2, 2\) must be in \[0, stride"):
        F.conv_transpose2d(x, tv.tensor(np.zeros((3, 2, 3, 3))), stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"padding \(\(1, -1\), \(0, 0\)\) >= 0"):      # one side negative
        F.conv2d(x, tv.tensor(np.zeros((4, 3, 3, 3))), padding=((1, -1), (0, 0)))
    with pytest.raises(ValueError, match=r"padding must be p, \(ph, pw\) or \(\(top, bottom\), \(left, right\)\), "
                                         r"got \(1, 2, 3\)"):
        F.conv2d(x, tv.tensor(np.zeros((4, 3, 3, 3))), padding=(1, 2, 3))
    with pytest.raises(ValueError, match="empty output"):
        F.conv_transpose2d(tv.tensor(np.zeros((1, 3, 1, 1))), tv.tensor(np.zeros((3, 2, 1, 1))), padding=1)
