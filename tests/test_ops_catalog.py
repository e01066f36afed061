"""The op harness: for every catalog entry, forward against NumPy (float64 and float32),
gradients against central differences (float64), and CuPy against NumPy when a GPU exists."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinyvae as tv
from tinyvae import backend, functional as F

from catalog import CATALOG, cross_entropy_case, make_values

IDS = [c.name for c in CATALOG]


@st.composite
def case_arrays(draw, case):
    shapes = case.shapes(draw)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [make_values(rng, s, case.domain) for s in shapes]
    if case.valid is not None:
        assume(case.valid(*arrays))
    return arrays


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _run(case, arrays, dtype, requires_grad=False, device="cpu"):
    ts = [tv.tensor(a, dtype=dtype, requires_grad=requires_grad, device=device) for a in arrays]
    return ts, _tuple(case.fn(*ts))


@pytest.mark.parametrize("case", CATALOG, ids=IDS)
@given(data=st.data())
def test_forward_float64_matches_numpy(case, data):
    arrays = data.draw(case_arrays(case))
    _, outs = _run(case, arrays, np.float64)
    for out, ref in zip(outs, _tuple(case.ref(*arrays))):
        assert out.dtype == np.float64
        assert out.shape == np.shape(ref)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CATALOG, ids=IDS)
@given(data=st.data())
def test_forward_float32_keeps_dtype(case, data):
    arrays = data.draw(case_arrays(case))
    _, outs = _run(case, arrays, np.float32)
    for out, ref in zip(outs, _tuple(case.ref(*[a.astype(np.float32).astype(np.float64) for a in arrays]))):
        assert out.dtype == np.float32, f"{case.name} promoted float32 to {out.dtype}"
        np.testing.assert_allclose(out.numpy(), ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", CATALOG, ids=IDS)
@given(data=st.data())
def test_gradient_matches_finite_differences(case, data):
    arrays = data.draw(case_arrays(case))
    ts = [tv.tensor(a, dtype=np.float64, requires_grad=True) for a in arrays]
    assert tv.gradcheck(case.fn, ts, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("case", CATALOG, ids=IDS)
@given(data=st.data())
def test_float32_gradient_close_to_float64(case, data):
    """The float32 backward computes the same gradient as float64, to float32 precision."""
    arrays = data.draw(case_arrays(case))
    grads = []
    for dtype in (np.float32, np.float64):
        ts, outs = _run(case, arrays, dtype, requires_grad=True)
        sum(F.sum(o * o) for o in outs).backward()
        assert all(t.grad.dtype == dtype for t in ts)
        grads.append([t.grad for t in ts])
    for g32, g64 in zip(*grads):
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4 * (1 + np.abs(g64).max()))


class _DtypeProbe(tv.Function):
    """Identity whose backward records the dtype of the gradient reaching it."""
    seen = []

    def forward(self, x):
        return x

    def backward(self, gy):
        _DtypeProbe.seen.append(gy.dtype)
        return gy


@pytest.mark.parametrize("case", CATALOG, ids=IDS)
@given(data=st.data())
def test_float32_gradients_stay_float32_inside_the_graph(case, data):
    """Not only at the leaves (where accumulation casts): every gradient an op passes back."""
    arrays = data.draw(case_arrays(case))
    ts = [tv.tensor(a, dtype=np.float32, requires_grad=True) for a in arrays]
    _DtypeProbe.seen = []
    outs = _tuple(case.fn(*[_DtypeProbe()(t) for t in ts]))
    sum(F.sum(o * o) for o in outs).backward()
    assert _DtypeProbe.seen and all(d == np.float32 for d in _DtypeProbe.seen), _DtypeProbe.seen


@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("case", CATALOG, ids=IDS)
@given(data=st.data())
def test_cupy_matches_numpy(case, data):
    arrays = data.draw(case_arrays(case))
    results = []
    for device in ("cpu", "cuda"):
        ts, outs = _run(case, arrays, np.float64, requires_grad=True, device=device)
        sum(F.sum(o * o) for o in outs).backward()
        assert all(o.device == device for o in outs)
        results.append(([o.numpy() for o in outs], [backend.to_device(t.grad, "cpu") for t in ts]))
    (out_cpu, g_cpu), (out_gpu, g_gpu) = results
    for a, b in zip(out_cpu + g_cpu, out_gpu + g_gpu):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10)


@given(n=st.integers(1, 5), c=st.integers(1, 5), extra=st.lists(st.integers(1, 3), max_size=2),
       seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_forward_and_gradient(n, c, extra, seed):
    """Classes on axis 1, any axes after it (a map of logits [N, C, H, W], as a prior's)."""
    logits, target, ref = cross_entropy_case(np.random.default_rng(seed), n, c, tuple(extra))
    for layout in (logits, np.moveaxis(np.moveaxis(logits, 0, -1).copy(), -1, 0)):    # batch-first or -last memory
        x = tv.tensor(layout, dtype=np.float64, requires_grad=True)
        np.testing.assert_allclose(F.cross_entropy(x, target).item(), ref, rtol=1e-12)
        assert tv.gradcheck(lambda t: F.cross_entropy(t, target), [x], atol=1e-6, rtol=1e-5)


def test_cross_entropy_refuses_bad_shapes_and_classes():
    x = tv.tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"logits must be \[N, C, ...\] and targets \[N, ...\] without the class "
                                         r"axis, got logits \(2, 3, 4\) and targets \(2, 3\)"):
        F.cross_entropy(x, np.zeros((2, 3), np.int64))
    for bad in (-1, 3):        # a negative class would wrap around in an index, not fail
        with pytest.raises(ValueError, match=rf"targets must be classes in \[0, 3\), got {bad}\.\."):
            F.cross_entropy(x, np.full((2, 4), bad))
