"""Every nn layer: gradients by finite differences (float64), behaviour, state handling, and
(where PyTorch is installed) outputs and gradients against PyTorch with the same weights."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvae as tv
from tinyvae import nn

from helpers import module_gradcheck, to_float64

seeds = st.integers(0, 2**32 - 1)


@given(n=st.integers(1, 3), i=st.integers(1, 4), o=st.integers(1, 4), bias=st.booleans(), seed=seeds)
def test_linear_gradcheck(n, i, o, bias, seed):
    rng = np.random.default_rng(seed)
    assert module_gradcheck(nn.Linear(i, o, bias=bias, rng=rng), rng.standard_normal((n, i)))


@given(k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 1), seed=seeds)
def test_conv_layers_gradcheck(k, s, p, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, 5, 4))
    assert module_gradcheck(nn.Conv2d(2, 3, k, s, p, rng=rng), x, atol=1e-6, rtol=1e-5)
    assert module_gradcheck(nn.ConvTranspose2d(2, 3, k, s, p, output_padding=s - 1, rng=rng), x,
                            atol=1e-6, rtol=1e-5)


@given(shape=st.sampled_from([(4, 3), (3, 2, 5)]), seed=seeds)
def test_batchnorm1d_train_gradcheck_and_eval_uses_running_stats(shape, seed):
    rng = np.random.default_rng(seed)
    bn = nn.BatchNorm1d(shape[1], momentum=0.3)
    to_float64(bn)
    x = rng.standard_normal(shape) * 2 + 1
    assert module_gradcheck(bn, x)
    bn = to_float64(nn.BatchNorm1d(shape[1], momentum=0.3))
    bn(tv.tensor(x, dtype=np.float64))
    axes = (0,) + tuple(range(2, len(shape)))
    n = x.size // shape[1]
    np.testing.assert_allclose(bn.running_mean, 0.3 * x.mean(axes))
    np.testing.assert_allclose(bn.running_var, 0.7 + 0.3 * x.var(axes) * n / (n - 1))
    bn.eval()
    y = bn(tv.tensor(x, dtype=np.float64)).numpy()
    bshape = (1, -1) + (1,) * (len(shape) - 2)
    ref = (x - bn.running_mean.reshape(bshape)) / np.sqrt(bn.running_var.reshape(bshape) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-10)
    assert module_gradcheck(bn, x)


def test_batchnorm2d_normalises_per_channel_in_training():
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5)) * 3 + 2
    y = to_float64(nn.BatchNorm2d(3))(tv.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
    assert module_gradcheck(nn.BatchNorm2d(3), x[:2, :, :3, :3])
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 4-D input with 3 channels"):
        nn.BatchNorm2d(3)(tv.tensor(np.zeros((2, 4, 3, 3))))


@given(seed=seeds)
def test_layernorm_gradcheck(seed):
    rng = np.random.default_rng(seed)
    ln = nn.LayerNorm(4)
    to_float64(ln)
    ln.weight.data = rng.standard_normal(4)
    assert module_gradcheck(ln, rng.standard_normal((3, 4)))


def gru_reference(x, h, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's GRU equations, written out with NumPy for one step."""
    sig = lambda v: 1 / (1 + np.exp(-v))   # noqa: E731
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    hs = h.shape[1]
    r = sig(gi[:, :hs] + gh[:, :hs])
    z = sig(gi[:, hs:2 * hs] + gh[:, hs:2 * hs])
    n = np.tanh(gi[:, 2 * hs:] + r * gh[:, 2 * hs:])
    return (1 - z) * n + z * h


@given(seed=seeds, layers=st.integers(1, 2))
def test_gru_matches_step_by_step_reference_and_gradchecks(seed, layers):
    rng = np.random.default_rng(seed)
    gru = to_float64(nn.GRU(3, 4, num_layers=layers, rng=rng))
    x = rng.standard_normal((2, 5, 3))
    out, h_n = gru(tv.tensor(x, dtype=np.float64))
    seq = x
    for layer in range(layers):
        p = [getattr(gru, f"{n}_l{layer}").data for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h, outs = np.zeros((2, 4)), []
        for t in range(seq.shape[1]):
            h = gru_reference(seq[:, t], h, *p)
            outs.append(h)
        seq = np.stack(outs, axis=1)
        np.testing.assert_allclose(h_n.numpy()[layer], h, rtol=1e-10)
    np.testing.assert_allclose(out.numpy(), seq, rtol=1e-10)
    assert module_gradcheck(nn.GRU(3, 2, num_layers=layers, rng=rng), x[:, :3], fast_mode=True)


def test_grucell_gradcheck():
    rng = np.random.default_rng(0)
    cell = nn.GRUCell(3, 2, rng=rng)
    to_float64(cell)
    x, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 2))
    assert module_gradcheck(cell, x, h)


def test_embedding_rows_and_repeated_index_gradient():
    emb = to_float64(nn.Embedding(5, 3))
    idx = np.array([[1, 4], [1, 1]])
    out = emb(idx)
    np.testing.assert_array_equal(out.numpy(), emb.weight.data[idx])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad[:, 0], [0, 3, 0, 0, 1])
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([0.5]))


def test_dropout_train_and_eval():
    tv.manual_seed(0)
    x = tv.tensor(np.ones((200, 50)))
    d = nn.Dropout(0.3)
    y = d(x).numpy()
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.7)}
    assert abs((y == 0).mean() - 0.3) < 0.02
    assert d.eval()(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        nn.Dropout(1.0)


def test_flatten_unflatten_upsample_pools_shapes():
    x = tv.tensor(np.zeros((2, 3, 4, 4)))
    assert nn.Flatten()(x).shape == (2, 48)
    assert nn.Unflatten(1, (3, 4, 4))(nn.Flatten()(x)).shape == (2, 3, 4, 4)
    assert nn.Upsample(2)(x).shape == (2, 3, 8, 8)
    assert nn.AvgPool2d(2)(x).shape == (2, 3, 2, 2)
    assert nn.MaxPool2d(2, 1)(x).shape == (2, 3, 3, 3)


@pytest.mark.parametrize("act, ref", [
    (nn.ReLU(), lambda x: np.maximum(x, 0)), (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.Tanh(), np.tanh), (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.Softplus(), lambda x: np.log1p(np.exp(x))), (nn.SiLU(), lambda x: x / (1 + np.exp(-x))),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
])
def test_activation_modules(act, ref):
    x = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(act(tv.tensor(x, dtype=np.float64)).numpy(), ref(x), rtol=1e-12, atol=1e-12)


def test_default_init_bounds_follow_pytorch():
    tv.manual_seed(0)
    lin = nn.Linear(100, 400)
    assert np.abs(lin.weight.data).max() <= 1 / np.sqrt(100)
    assert np.abs(lin.weight.data).max() > 0.95 / np.sqrt(100)
    ct = nn.ConvTranspose2d(8, 4, 3)                 # weight [in, out, k, k]: fan_in = out·k·k = 36
    assert ct.weight.shape == (8, 4, 3, 3)
    assert 0.9 / 6 < np.abs(ct.weight.data).max() <= 1 / 6
    assert lin.weight.dtype == np.float32


def test_module_registration_modes_and_state_dict_errors():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]
    assert list(model.state_dict()) == names + ["1.running_mean", "1.running_var"]
    model.eval()
    assert not model[1].training
    model.train()
    assert model[1].training
    state = model.state_dict()
    state.pop("0.bias")
    state["extra"] = np.zeros(1)
    state["2.weight"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"missing keys \['0.bias'\].*unexpected keys \['extra'\]"
                                         r".*2.weight: checkpoint \(5, 5\) vs model \(1, 3\)"):
        model.load_state_dict(state)
    before = model[0].weight.data.copy()
    state["0.weight"] = np.ones((3, 2))
    with pytest.raises(ValueError):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model[0].weight.data, before)   # nothing changed on error


def test_state_dict_round_trip_restores_outputs():
    tv.manual_seed(1)
    a = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    a(tv.tensor(np.random.default_rng(0).standard_normal((5, 4))))
    b = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    b.load_state_dict(a.state_dict())
    x = tv.tensor(np.ones((2, 4)))
    np.testing.assert_array_equal(a.eval()(x).numpy(), b.eval()(x).numpy())


def test_module_without_super_init_gets_a_clear_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(1))
    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


# ---- optional comparison with PyTorch ------------------------------------------------------

def _torch():
    return pytest.importorskip("torch", reason="PyTorch not installed: side-by-side comparison skipped")


@pytest.mark.parametrize("make, make_torch, shape", [
    (lambda: nn.Linear(6, 4), lambda t: t.nn.Linear(6, 4), (3, 6)),
    (lambda: nn.Conv2d(3, 5, 4, 2, 1), lambda t: t.nn.Conv2d(3, 5, 4, 2, 1), (2, 3, 8, 8)),
    (lambda: nn.Conv2d(2, 3, 3, 1, 2, dilation=2), lambda t: t.nn.Conv2d(2, 3, 3, 1, 2, dilation=2), (2, 2, 7, 6)),
    (lambda: nn.ConvTranspose2d(3, 2, 4, 2, 1), lambda t: t.nn.ConvTranspose2d(3, 2, 4, 2, 1), (2, 3, 5, 5)),
    (lambda: nn.ConvTranspose2d(3, 2, 3, 2, 1, output_padding=1),
     lambda t: t.nn.ConvTranspose2d(3, 2, 3, 2, 1, output_padding=1), (2, 3, 4, 4)),
    (lambda: nn.GRU(3, 4, 2), lambda t: t.nn.GRU(3, 4, 2, batch_first=True), (2, 5, 3)),
    (lambda: nn.LayerNorm(6), lambda t: t.nn.LayerNorm(6), (3, 6)),
    (lambda: nn.BatchNorm2d(3), lambda t: t.nn.BatchNorm2d(3), (4, 3, 2, 2)),
])
def test_layers_match_pytorch(make, make_torch, shape):
    torch = _torch()
    ours, theirs = to_float64(make()), make_torch(torch).double()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(dict(ours.named_parameters())[name].data))
    x = np.random.default_rng(0).standard_normal(shape)
    y = ours(tv.tensor(x, dtype=np.float64))
    y = y[0] if isinstance(y, tuple) else y
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt = yt[0] if isinstance(yt, tuple) else yt
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    (y * y).sum().backward()
    (yt * yt).sum().backward()
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(ours.named_parameters())[name].grad, p.grad.numpy(), rtol=1e-9, atol=1e-12)
