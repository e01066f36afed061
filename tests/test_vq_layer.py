"""The VectorQuantizer layer: straight-through gradients, losses, EMA updates, dead-code restarts."""
import numpy as np
import pytest

import tinyvae as tv
from tinyvae import functional as F
from tinyvae import nn
from tinyvae.nn import VectorQuantizer

from helpers import to_float64


def test_quantized_values_are_nearest_codes_and_gradient_passes_straight_through():
    vq = to_float64(nn.VectorQuantizer(6, 3, rng=np.random.default_rng(0)))
    z = tv.tensor(np.random.default_rng(1).standard_normal((5, 3)), dtype=np.float64, requires_grad=True)
    out = vq(z)
    codes = vq.codebook.data
    np.testing.assert_allclose(out.quantized.numpy(), codes[out.indices], rtol=1e-15, atol=1e-15)
    w = np.random.default_rng(2).standard_normal((5, 3))
    F.sum(out.quantized * tv.tensor(w, dtype=np.float64)).backward()
    np.testing.assert_allclose(z.grad, w)                    # identity: straight-through
    assert vq.codebook.grad is None                          # quantized alone gives codes no gradient


def test_losses_and_their_gradients():
    vq = to_float64(nn.VectorQuantizer(4, 2, beta=0.25, rng=np.random.default_rng(0)))
    z0 = np.random.default_rng(3).standard_normal((6, 2))
    z = tv.tensor(z0, dtype=np.float64, requires_grad=True)
    out = vq(z)
    e = vq.codebook.data[out.indices]
    np.testing.assert_allclose(out.codebook_loss.item(), np.mean((z0 - e) ** 2))
    np.testing.assert_allclose(out.commitment_loss.item(), 0.25 * np.mean((z0 - e) ** 2))
    out.loss.backward()
    np.testing.assert_allclose(z.grad, 0.25 * 2 * (z0 - e) / z0.size)          # only commitment reaches z
    expected = np.zeros_like(vq.codebook.data)
    np.add.at(expected, out.indices, 2 * (e - z0) / z0.size)                     # only the codebook term
    np.testing.assert_allclose(vq.codebook.grad, expected)
    # Away from assignment changes each term is smooth in what it trains. (Finite differences
    # see through stop-gradients, so each term is checked only against its own target.)
    codebook = vq.codebook
    codebook.requires_grad = False
    assert tv.gradcheck(lambda t: vq(t).commitment_loss, [z], atol=1e-6)
    codebook.requires_grad = True
    z.requires_grad = False
    assert tv.gradcheck(lambda c: vq(z).codebook_loss, [codebook], atol=1e-6)


def test_channels_first_feature_maps():
    vq = nn.VectorQuantizer(5, 3)
    z = tv.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)))
    out = vq(z)
    assert out.quantized.shape == (2, 3, 4, 4) and out.indices.shape == (2, 4, 4)
    flat = z.numpy().transpose(0, 2, 3, 1).reshape(-1, 3)
    np.testing.assert_array_equal(out.indices.reshape(-1),
                                  np.argmin(((flat[:, None] - vq.codebook.data[None]) ** 2).sum(-1), 1))
    with pytest.raises(ValueError, match=r"expected \[N, 3\] or \[B, 3, H, W\]"):
        vq(tv.tensor(np.zeros((2, 4))))


def test_perplexity_and_usage():
    vq = nn.VectorQuantizer(4, 1)
    vq.set_codebook([[0.0], [1.0], [2.0], [3.0]])
    out = vq(tv.tensor(np.array([[0.0], [1.1], [0.1], [0.9]])))
    assert out.usage == 0.5
    assert out.perplexity == pytest.approx(2.0)


def test_ema_update_moves_codes_to_the_laplace_smoothed_means():
    vq = nn.VectorQuantizer(2, 1, ema=True, decay=0.5, eps=1e-5)
    vq.set_codebook([[0.0], [10.0]])
    z = np.array([[1.0], [3.0], [9.0]], np.float32)
    out = vq(tv.tensor(z))
    counts = 0.5 * np.ones(2) + 0.5 * np.array([2, 1])
    sums = 0.5 * np.array([0.0, 10.0]) + 0.5 * np.array([4.0, 9.0])
    smoothed = (counts + 1e-5) / (counts.sum() + 2e-5) * counts.sum()
    np.testing.assert_allclose(vq.codebook[:, 0], sums / smoothed, rtol=1e-5)
    assert out.codebook_loss.item() == 0 and out.loss.item() == out.commitment_loss.item()
    vq.eval()
    before = vq.codebook.copy()
    vq(tv.tensor(z))
    np.testing.assert_array_equal(vq.codebook, before)        # no updates in eval mode


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_restart_from_encoder_outputs(ema):
    vq = nn.VectorQuantizer(3, 2, ema=ema, dead_code_threshold=2, rng=np.random.default_rng(0))
    vq.set_codebook([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0]])
    z = tv.tensor(np.random.default_rng(1).standard_normal((8, 2)) * 0.1)
    vq(z)
    assert (vq.codebook_array()[1:] > 40).all()              # unused once: kept
    vq(z)
    restarted = vq.codebook_array()[1:]
    assert (np.abs(restarted) < 1).all()                      # unused twice: restarted near the data
    assert any(np.allclose(r, row) for r in restarted for row in z.numpy())
    np.testing.assert_array_equal(vq.unused_steps[1:], 0)


@pytest.mark.parametrize("ema", [False, True])
def test_codebook_writes_count_as_versions(ema):
    """EMA updates, dead-code restarts and set_codebook write the codebook in place: each
    marks it written, so a graph recorded before refuses to backward through it."""
    vq = VectorQuantizer(4, 2, ema=ema, dead_code_threshold=1, rng=np.random.default_rng(0))
    before = vq._codes().version
    vq(tv.tensor(np.random.default_rng(1).normal(size=(3, 2)), requires_grad=True))
    after_forward = vq._codes().version
    assert after_forward > before
    vq.set_codebook(np.zeros((4, 2)))
    assert vq._codes().version == after_forward + 1
