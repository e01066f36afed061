"""The fused GRU: the cell kernel (kernels/gru_cell.py) against its float64 reference on every
implementation, and the sequence op (ops/rnn.py) against the unfused step of nn/rnn.py,
values and gradients, and by finite differences."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvae as tv
from kernels import gru_cell
from tinyvae import functional as F
from tinyvae.nn.rnn import gru_step

from conftest import SIMULATED
from test_kernels import IMPLS, TOL, run


@st.composite
def cell_case(draw, dtype):
    b, h = draw(st.integers(1, 4 if SIMULATED else 40)), draw(st.integers(1, 5 if SIMULATED else 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 3.0, 60.0]))          # 60: saturated gates, tanh at ±1
    gi, gh = (rng.standard_normal((b, 3 * h)) * scale for _ in range(2))
    state, g = rng.standard_normal((b, h)), rng.standard_normal((b, h))
    return [a.astype(dtype) for a in (gi, gh, state, g)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_gru_cell_matches_reference(impl, dtype, data):
    gi, gh, h, g = data.draw(cell_case(dtype))
    out = run(gru_cell.forward, impl, gi, gh, h)
    ref = gru_cell.forward_reference(*(a.astype(np.float64) for a in (gi, gh, h)))
    for got, want in zip(out, ref):
        assert got.dtype == dtype and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, **TOL[dtype])
    saved = [a.astype(np.float64) for a in ref[1:]]
    grads = run(gru_cell.backward, impl, g, *(a.astype(dtype) for a in saved), gh, h)
    grads_ref = gru_cell.backward_reference(g.astype(np.float64), *saved, gh.astype(np.float64), h.astype(np.float64))
    for got, want in zip(grads, grads_ref):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_gru_cell_threaded_cpu_path_matches_reference():
    rng = np.random.default_rng(0)
    b, hidden = 300, 256                                      # B·H above PARALLEL_MIN_ELEMENTS
    assert b * hidden >= gru_cell.PARALLEL_MIN_ELEMENTS
    gi, gh = (rng.standard_normal((b, 3 * hidden)) for _ in range(2))
    h, g = rng.standard_normal((b, hidden)), rng.standard_normal((b, hidden))
    for got, want in zip(gru_cell.forward(gi, gh, h), gru_cell.forward_reference(gi, gh, h)):
        np.testing.assert_allclose(got, want, **TOL[np.float64])
    _, r, z, n = gru_cell.forward_reference(gi, gh, h)
    for got, want in zip(gru_cell.backward(g, r, z, n, gh, h), gru_cell.backward_reference(g, r, z, n, gh, h)):
        np.testing.assert_allclose(got, want, **TOL[np.float64])


def test_gru_cell_rejects_bad_input():
    a = np.zeros((2, 6))
    with pytest.raises(ValueError, match=r"gates \[B, 3H\]"):
        gru_cell.forward(a, a, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="float32 or float64"):
        gru_cell.forward(a.astype(np.int64), a.astype(np.int64), np.zeros((2, 2), np.int64))


@given(b=st.integers(1, 3), t=st.integers(1, 4), h=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_gru_sequence_equals_unfused_steps_and_gradchecks(b, t, h, seed):
    rng = np.random.default_rng(seed)
    x = tv.tensor(rng.standard_normal((b, t, 2)), dtype=np.float64, requires_grad=True)
    h0 = tv.tensor(rng.standard_normal((b, h)), dtype=np.float64, requires_grad=True)
    params = [tv.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
              for shape in ((3 * h, 2), (3 * h, h), (3 * h,), (3 * h,))]
    w_ih, w_hh, b_ih, b_hh = params
    fused = F.gru_sequence(F.linear(x, w_ih, b_ih), h0, w_hh, b_hh)
    state, steps = h0, []
    for step in range(t):
        state = gru_step(x[:, step], state, *params)
        steps.append(state)
    unfused = F.stack(steps, axis=1)
    np.testing.assert_allclose(fused.numpy(), unfused.numpy(), rtol=1e-12, atol=1e-14)
    weights = tv.tensor(rng.standard_normal((b, t, h)), dtype=np.float64)
    inputs = [x, h0, *params]
    F.sum(fused * weights).backward()
    grads = [a.grad for a in inputs]
    for a in inputs:
        a.grad = None
    F.sum(unfused * weights).backward()
    for got, a in zip(grads, inputs):
        np.testing.assert_allclose(got, a.grad, rtol=1e-10, atol=1e-12)
    assert tv.gradcheck(lambda gi, s, w, bias: F.gru_sequence(gi, s, w, bias),
                        [F.linear(x, w_ih, b_ih).detach().requires_grad_(), h0, w_hh, b_hh], atol=1e-6)


def test_gru_sequence_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"gi \[B, T, 3H\]"):
        F.gru_sequence(tv.tensor(np.zeros((2, 3, 6))), tv.tensor(np.zeros((2, 3))), tv.tensor(np.zeros((6, 2))),
                       tv.tensor(np.zeros(6)))
