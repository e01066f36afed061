"""Properties of the tape itself, independent of any one op."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyvae as tv
from tinyvae import functional as F
from tinyvae.autograd import Function, sum_to


def leaf(a, dtype=np.float64):
    return tv.tensor(a, dtype=dtype, requires_grad=True)


def test_reused_tensor_accumulates_gradient():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x + 3 * x + x          # d/dx = 2x + 4
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.array([1.0, 2.0, 3.0]) + 4)


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    x = leaf([1.0, -2.0])
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad, [5.0, 5.0])
    x.zero_grad()
    assert x.grad is None


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=3),
       seed=st.integers(0, 2**32 - 1))
def test_unbroadcast_sums_gradient_back_to_input_shape(shapes, seed):
    rng = np.random.default_rng(seed)
    a0, b0 = (rng.standard_normal(s) for s in shapes.input_shapes)
    a, b = leaf(a0), leaf(b0)
    (a * b).sum().backward()
    assert a.grad.shape == a0.shape and b.grad.shape == b0.shape
    ones = np.ones(shapes.result_shape)
    np.testing.assert_allclose(a.grad, sum_to(ones * b0, a0.shape))
    np.testing.assert_allclose(b.grad, sum_to(ones * a0, b0.shape))


@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=3), lead=st.integers(0, 2))
def test_sum_to_is_adjoint_of_broadcast(shape, lead):
    """<broadcast(x), g> == <x, sum_to(g)> for every x and g."""
    rng = np.random.default_rng(0)
    big = (2,) * lead + tuple(3 if n == 1 and rng.random() < 0.5 else n for n in shape)
    x, g = rng.standard_normal(shape), rng.standard_normal(big)
    np.testing.assert_allclose((np.broadcast_to(x, big) * g).sum(), (x * sum_to(g, shape)).sum())


def test_no_grad_records_nothing_as_context_and_decorator():
    x = leaf([1.0, 2.0])
    with tv.no_grad():
        y = x * 2
    assert not y.requires_grad and y.creator is None

    @tv.no_grad()
    def f(t):
        return F.exp(t)
    z = f(x)
    assert not z.requires_grad and z.creator is None
    assert (x * 2).requires_grad


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with tv.no_grad():
            1 / 0
    assert tv.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = leaf([1.0, 2.0])
    y = (x * 3).detach() * x
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [3.0, 6.0])     # only the non-detached factor


def test_second_backward_through_freed_graph_raises():
    x = leaf([1.0, 2.0])
    y = F.exp(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph"):
        y.backward()


def test_retain_graph_allows_second_backward_and_accumulates():
    x = leaf([1.0, 2.0])
    y = F.exp(x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * np.exp([1.0, 2.0]))


def test_backward_frees_saved_arrays():
    x = leaf(np.ones(3))
    y = F.exp(x)
    fn = y.creator
    y.sum().backward()
    assert fn.saved is None and fn.freed


def test_nonscalar_backward_needs_grad_argument():
    x = leaf([1.0, 2.0])
    y = x * 2
    with pytest.raises(RuntimeError, match="non-scalar"):
        y.backward()
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [2.0, 20.0])


def test_backward_grad_of_wrong_shape_raises():
    y = leaf([1.0, 2.0]) * 2
    with pytest.raises(ValueError, match="grad shape"):
        y.backward(np.ones(3))


def test_chain_of_100000_ops_needs_no_recursion():
    x = leaf([0.5])
    y = x
    for _ in range(100_000):
        y = y + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_multi_output_op_with_one_output_unused():
    x = leaf(np.arange(6.0))
    a, b = F.split(x, 3)
    (a * 2).sum().backward()
    np.testing.assert_allclose(x.grad, [2, 2, 2, 0, 0, 0])


def test_float32_and_float64_gradients_keep_their_dtype():
    for dtype in (np.float32, np.float64):
        w = leaf(np.ones((3, 2)), dtype)
        x = tv.tensor(np.ones((4, 3)), dtype=dtype)
        F.tanh(x @ w).sum().backward()
        assert w.grad.dtype == dtype


def test_python_scalars_keep_float32():
    x = leaf([1.0], np.float32)
    for y in (x * 2, 2.5 + x, x / 3, x ** 2, 1 - x):
        assert y.dtype == np.float32


def test_requires_grad_on_integer_tensor_raises():
    with pytest.raises(TypeError, match="floating-point"):
        tv.tensor([1, 2, 3], requires_grad=True)


def test_tensor_defaults_to_float32_and_keeps_integers():
    assert tv.tensor([1.0, 2.0]).dtype == np.float32
    assert tv.tensor(np.zeros(2)).dtype == np.float32
    assert tv.tensor([1, 2]).dtype.kind == "i"
    assert tv.tensor([1.0], dtype=np.float64).dtype == np.float64


def test_matmul_shape_error_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        tv.tensor(np.ones((2, 3))) @ tv.tensor(np.ones((4, 5)))


def test_broadcast_error_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"Add.*\(2, 3\).*\(4,\)"):
        tv.tensor(np.ones((2, 3))) + tv.tensor(np.ones(4))


def test_nan_is_never_turned_into_a_number():
    x = tv.tensor([np.nan, 1.0], dtype=np.float64)
    for f in (F.relu, F.abs, F.tanh, F.sigmoid, F.softplus, F.exp, F.gelu,
              lambda t: F.clip(t, -1, 1), lambda t: F.maximum(t, 0.0), lambda t: F.leaky_relu(t)):
        assert np.isnan(f(x).numpy()[0])
    for f in (F.sum, F.max, F.logsumexp, F.mean):
        assert np.isnan(f(x).item())


@pytest.mark.filterwarnings("error")   # an all −inf row is a normal input, not a warning
def test_logsumexp_is_stable_for_huge_and_all_minus_inf_inputs():
    big = tv.tensor([1000.0, 1000.0], dtype=np.float64)
    np.testing.assert_allclose(F.logsumexp(big).item(), 1000 + np.log(2))
    ninf = tv.tensor([-np.inf, -np.inf], dtype=np.float64)
    assert F.logsumexp(ninf).item() == -np.inf


def test_bce_with_logits_is_finite_for_extreme_logits():
    x = tv.tensor([-1e4, 1e4, 0.0], dtype=np.float32, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, np.array([1.0, 0.0, 1.0], np.float32), "sum")
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), 2e4 + np.log(2), rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(x.grad, [-1.0, 1.0, -0.5])


def test_bce_with_logits_takes_python_numbers_and_broadcasts():
    """The fused kernel takes one shape and dtype; the op broadcasts and promotes first."""
    x = tv.tensor([[-2.0, 0.5, 3.0]], dtype=np.float32, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, 1.0, "none")          # a number as the target
    assert loss.dtype == np.float32 and loss.shape == (1, 3)
    np.testing.assert_allclose(loss.data, np.log1p(np.exp(-x.data)), rtol=1e-6)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad, 1 / (1 + np.exp(-x.data)) - 1, rtol=1e-6)
    t = tv.tensor([[0.0], [1.0]], dtype=np.float64, requires_grad=True)  # [2, 1] against [1, 3], float64
    both = F.binary_cross_entropy_with_logits(x, t, "none")
    assert both.dtype == np.float64 and both.shape == (2, 3)
    both.sum().backward()
    np.testing.assert_allclose(t.grad, -x.data.sum() * np.ones((2, 1)), rtol=1e-6)
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(2.0, np.zeros(2, np.float32), "none").data,
                               np.full(2, np.log1p(np.exp(2.0))), rtol=1e-6)


def test_getitem_repeated_integer_indices_accumulate():
    x = leaf(np.arange(4.0))
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_allclose(x.grad, [0, 3, 0, 1])


def test_max_gradient_goes_to_first_selected_element_only():
    x = leaf([3.0, 1.0, 3.0])
    F.max(x).backward()
    np.testing.assert_allclose(x.grad, [1.0, 0.0, 0.0])


def test_transpose_swaps_two_axes_like_pytorch():
    x = tv.tensor(np.zeros((2, 3, 4)))
    assert x.transpose(0, 2).shape == (4, 3, 2)
    assert x.permute(1, 2, 0).shape == (3, 4, 2)
    assert x.T.shape == (4, 3, 2)


@pytest.mark.parametrize("input_batch_last", [True, False])
@pytest.mark.parametrize("grad_transposed", [True, False])
def test_reshape_gradient_comes_back_in_the_input_memory_order(input_batch_last, grad_transposed):
    """Conv outputs are batch-last views: Flatten's gradient must come back in their order, and a
    contiguous input's gradient contiguous, whatever order the gradient arrives in."""
    base = np.arange(2 * 3 * 4 * 5, dtype=np.float64)
    data = base.reshape(3, 4, 5, 2).transpose(3, 0, 1, 2) if input_batch_last else base.reshape(2, 3, 4, 5)
    x = tv.tensor(data, dtype=np.float64, requires_grad=True)
    weights = np.random.default_rng(0).standard_normal((2, 60))
    flat = x.reshape(2, 60)
    if grad_transposed:                      # the gradient reaches the reshape as a transposed view
        (flat.T * weights.T.copy()).sum().backward()
    else:
        (flat * weights).sum().backward()
    np.testing.assert_array_equal(x.grad, weights.reshape(2, 3, 4, 5))
    order = lambda a: np.argsort([-s for s in a.strides], kind="stable").tolist()
    assert order(x.grad) == order(data)


def test_chunk_and_split_follow_pytorch_sizes():
    x = tv.tensor(np.arange(7.0))
    assert [p.shape[0] for p in F.chunk(x, 3)] == [3, 3, 1]
    assert [p.shape[0] for p in F.split(x, 2)] == [2, 2, 2, 1]
    with pytest.raises(ValueError, match="do not add up"):
        F.split(x, [3, 3])


def test_comparisons_return_boolean_tensors_without_grad():
    x = leaf([1.0, 2.0])
    m = x > 1.5
    assert m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.numpy(), [False, True])


def test_tensor_conversions():
    x = tv.tensor([[2.5]])
    assert x.item() == 2.5 and isinstance(x.numpy(), np.ndarray)
    assert x.to("cpu") is x and x.device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        x.to("tpu")
    with pytest.raises(ValueError, match="one-element"):
        tv.tensor([1.0, 2.0]).item()


def test_numpy_array_on_the_left_defers_to_tensor():
    x = leaf([1.0, 2.0])
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, tv.Tensor) and y.requires_grad


class _WrongSquare(Function):
    """x² with a deliberately wrong derivative (x instead of 2x)."""

    def forward(self, x):
        self.saved = x
        return x * x

    def backward(self, gy):
        return gy * self.saved


def test_gradcheck_catches_a_wrong_gradient_and_names_the_element():
    x = leaf([1.0, 2.0, 3.0])
    with pytest.raises(tv.GradcheckError, match=r"input 0 .*element \(2,\)") as err:
        tv.gradcheck(lambda t: _WrongSquare()(t), [x])
    analytic, numeric = map(float, re.search(r"analytic (\S+) vs numeric (\S+)", str(err.value)).groups())
    np.testing.assert_allclose(numeric, 2 * analytic, rtol=1e-6)   # the true derivative is twice ours
    with pytest.raises(tv.GradcheckError, match="fast mode"):
        tv.gradcheck(lambda t: _WrongSquare()(t), [x], fast_mode=True)


def test_gradcheck_upcasts_float32_inputs_and_leaves_them_alone():
    x = leaf(np.linspace(-1, 1, 5), np.float32)
    before = x.numpy().copy()
    assert tv.gradcheck(lambda t: F.tanh(t) * t, [x], fast_mode=True)
    assert tv.gradcheck(lambda t: F.tanh(t) * t, [x])
    np.testing.assert_array_equal(x.numpy(), before)


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        tv.gradcheck(F.exp, [tv.tensor([1.0])])


def test_to_dot_shows_ops_shapes_and_edges():
    x = leaf(np.ones((2, 3)))
    w = leaf(np.ones((3, 4)))
    dot = F.relu(x @ w).sum().to_dot()
    assert dot.startswith("digraph")
    for text in ("MatMul", "Relu", "Sum", "(2, 3) float64", "(2, 4) float64", "->"):
        assert text in dot
    assert dot.count("shape=box") == 3


# ---- version counters: backward refuses values changed in place after the forward ----------

def _linear_and_graph():
    from tinyvae import nn
    layer = nn.Sequential(nn.Linear(2, 1))
    x = tv.tensor([[3.0, 4.0]])
    return layer, layer(x).sum()


def test_an_optimizer_step_between_forward_and_backward_is_refused():
    from tinyvae import optim
    layer, y = _linear_and_graph()
    opt = optim.Adam(layer.parameters(), lr=0.1)
    for p in layer.parameters():
        p.grad = np.ones(p.shape, p.dtype)
    opt.step()                          # the classic two-optimizer mistake: the graph saw the old weights
    with pytest.raises(RuntimeError, match=r"backward through Linear: its input 1, parameter 0\.weight \[1, 2\] "
                                           r"float32, was changed in place after the forward .*version \d+, now \d+"):
        y.backward()


@pytest.mark.parametrize("write", ["load_state_dict", "init"])
def test_library_writes_to_a_parameter_invalidate_recorded_graphs(write):
    from tinyvae import nn
    layer, y = _linear_and_graph()
    if write == "load_state_dict":
        layer.load_state_dict({k: v + 1 for k, v in layer.state_dict().items()})
    else:
        nn.init.normal_(layer[0].weight, rng=np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="was changed in place after the forward"):
        y.backward()


def test_moving_to_the_device_a_module_is_on_writes_nothing():
    layer, y = _linear_and_graph()
    layer.to(layer[0].weight.device)
    y.backward()
    assert layer[0].weight.grad is not None and layer[0].weight.grad is not None


def test_unchanged_inputs_backward_again_with_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, [4.0, 8.0])


def test_a_forward_after_the_write_records_the_new_version():
    from tinyvae import optim
    layer, y = _linear_and_graph()
    y.backward()
    optim.SGD(layer.parameters(), lr=0.1).step()
    layer(tv.tensor([[3.0, 4.0]])).sum().backward()     # no error: this graph saw the new weights
    assert layer[0].weight.grad is not None


# ---- recompute: a function's graph rebuilt in backward ---------------------------------------

def test_recompute_gradchecks_and_matches_the_kept_graph():
    w = leaf([0.5, -1.5, 2.0])

    def noisy(a, rng):           # a function that draws noise and uses a parameter it is not given
        return F.exp(a * w + tv.tensor(rng.standard_normal(3), dtype=np.float64)).sum()

    a = leaf([0.1, 0.2, -0.3])
    assert tv.gradcheck(lambda t: F.recompute(lambda u: noisy(u, np.random.default_rng(4)), [t], [w]), [a])
    a.grad = w.grad = None                # gradcheck's backward gave w a gradient too
    rng = np.random.default_rng(7)
    F.recompute(lambda u: noisy(u, rng), [a], [w], rng).backward()
    kept_a, kept_w, after = a.grad.copy(), w.grad.copy(), rng.random()
    a.grad = w.grad = None
    rng = np.random.default_rng(7)
    noisy(a, rng).backward()
    np.testing.assert_allclose(kept_a, a.grad, rtol=1e-15)
    np.testing.assert_allclose(kept_w, w.grad, rtol=1e-15)
    assert rng.random() == after          # the rewound generator was put back where it was


def test_recompute_refuses_a_parameter_changed_before_backward():
    w = tv.nn.Parameter(np.array([1.0, 2.0]))
    y = F.recompute(lambda u: (u * w).sum(), [leaf([3.0, 4.0])], [w])
    w.mark_written()
    with pytest.raises(RuntimeError, match="backward through Recompute: its input 1, tensor"):
        y.backward()


def test_grad_gives_gradients_at_leaves_and_intermediates_without_touching_dot_grad():
    """tinyvae.grad against central finite differences in float64: at a leaf, at an
    intermediate tensor (d y / d h with h = a·b, by perturbing h's value in a rebuilt graph),
    zeros at an input y does not depend on, and every .grad left as it was."""
    rng = np.random.default_rng(0)
    a0, b0 = rng.normal(size=3), rng.normal(size=3)

    def y_of(a, h):
        return F.sum(F.tanh(h) * a) + F.sum(a * a)

    a = tv.tensor(a0, dtype=np.float64, requires_grad=True)
    b = tv.tensor(b0, dtype=np.float64, requires_grad=True)
    unused = tv.tensor(rng.normal(size=2), dtype=np.float64, requires_grad=True)
    h = a * b
    ga, gh, gu = tv.grad(y_of(a, h), [a, h, unused])
    eps = 1e-6

    def fd(f, x0):
        out = np.zeros_like(x0)
        for i in range(len(x0)):
            up, down = x0.copy(), x0.copy()
            up[i] += eps
            down[i] -= eps
            out[i] = (f(up) - f(down)) / (2 * eps)
        return out
    value = lambda a_, h_: y_of(tv.tensor(a_, dtype=np.float64), tv.tensor(h_, dtype=np.float64)).item()
    np.testing.assert_allclose(ga.numpy(), fd(lambda v: value(v, v * b0), a0), rtol=1e-6)
    np.testing.assert_allclose(gh.numpy(), fd(lambda v: value(a0, v), a0 * b0), rtol=1e-6)
    assert np.array_equal(gu.numpy(), np.zeros(2)) and gh.shape == h.shape
    assert a.grad is None and b.grad is None and unused.grad is None


def test_grad_twice_needs_retain_graph_and_refuses_what_backward_refuses():
    a = tv.tensor(np.array([1.0, 2.0]), dtype=np.float64, requires_grad=True)
    y = F.sum(a * a)
    first = tv.grad(y, [a], retain_graph=True)[0]
    assert np.array_equal(tv.grad(y, [a])[0].numpy(), first.numpy()) and np.array_equal(first.numpy(), [2.0, 4.0])
    with pytest.raises(RuntimeError, match="second time.*retain_graph"):
        tv.grad(y, [a])
    with pytest.raises(RuntimeError, match="needs grad_output"):
        tv.grad(a * a, [a])
    with pytest.raises(ValueError, match="grad_output shape"):
        tv.grad(a * a, [a], grad_output=np.ones(3))
    assert np.array_equal(tv.grad(a * a, [a], grad_output=np.array([1.0, 0.5]))[0].numpy(), [2.0, 2.0])


@pytest.mark.parametrize("index, counts", [
    ((slice(None), np.array([2, 0])), [1, 0, 1]),                 # distinct: assigned
    ((slice(None), np.array([2, -1])), [0, 0, 2]),                # -1 is 2 again: accumulated
    ((slice(None), np.array([1, 1, 0])), [1, 2, 0]),
    ((np.array([True, False]), slice(None)), [1, 1, 1]),          # a mask
])
def test_indexing_backward_counts_every_selection(index, counts):
    """x[index]'s gradient is how many times each element was selected, whether the index
    repeats elements (accumulated) or not (the faster assignment)."""
    x = tv.tensor(np.zeros((2, 3)), requires_grad=True)
    F.sum(x[index]).backward()
    rows = 1 if isinstance(index[0], np.ndarray) else 2
    np.testing.assert_array_equal(x.grad[:rows], np.tile(counts, (rows, 1)))
