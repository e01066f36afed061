"""Categorical latents: the Gumbel-softmax relaxation and its straight-through variant, exact
Gumbel-max draws, the categorical KL to the uniform prior, and the temperature schedule."""
import math

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import functional as F
from tinyvae import models
from tinyvae.distributions import Categorical, UniformCategorical, gumbel_like, kl

PROBS = np.array([0.5, 0.3, 0.15, 0.05])


def draws(tau, hard=False, m=20000, seed=0):
    q = Categorical(tv.tensor(np.log(np.broadcast_to(PROBS, (m, 1, 4))), dtype=np.float64))
    return q.rsample(tau, hard, np.random.default_rng(seed)).numpy()[:, 0]


def test_exact_draws_have_the_categorical_probabilities():
    """Gumbel-max one-hots: each class's frequency within 4 standard errors of its probability."""
    q = Categorical(tv.tensor(np.log(PROBS)[None], dtype=np.float64))
    z = q.sample(np.random.default_rng(1), (20000,)).numpy()[:, 0]
    assert set(np.unique(z)) == {0.0, 1.0} and np.all(z.sum(axis=-1) == 1)
    se = np.sqrt(PROBS * (1 - PROBS) / len(z))
    assert np.all(np.abs(z.mean(axis=0) - PROBS) < 4 * se)


def test_relaxed_samples_tend_to_one_hot_with_the_categorical_mean_as_tau_falls():
    """As τ → 0 the relaxed sample's largest entry tends to 1 (monotonically over these τ), and
    at τ = 0.01 its mean matches the probabilities within 4 standard errors."""
    largest = [draws(tau).max(axis=-1).mean() for tau in (2.0, 1.0, 0.5, 0.1, 0.01)]
    assert all(a < b for a, b in zip(largest, largest[1:])) and largest[-1] > 0.99 and largest[0] < 0.8
    y = draws(0.01)
    se = y.std(axis=0) / np.sqrt(len(y))
    assert np.all(np.abs(y.mean(axis=0) - PROBS) < 4 * se + 1e-12)
    assert np.allclose(y.sum(axis=-1), 1)


def test_straight_through_forward_is_exactly_one_hot_and_backward_is_the_relaxed_gradient():
    logits = tv.tensor(np.random.default_rng(2).normal(size=(5, 3, 4)), dtype=np.float64, requires_grad=True)
    q = Categorical(logits)
    hard = q.rsample(0.7, True, np.random.default_rng(3))
    soft = q.rsample(0.7, False, np.random.default_rng(3))                      # the same noise
    assert set(np.unique(hard.numpy())) == {0.0, 1.0} and np.all(hard.numpy().sum(axis=-1) == 1)
    assert np.array_equal(hard.numpy().argmax(axis=-1), soft.numpy().argmax(axis=-1))
    weights = np.random.default_rng(4).normal(size=(5, 3, 4))
    g_hard = tv.grad(F.sum(hard * tv.tensor(weights, dtype=np.float64)), [logits], retain_graph=True)[0].numpy()
    g_soft = tv.grad(F.sum(soft * tv.tensor(weights, dtype=np.float64)), [logits])[0].numpy()
    assert np.array_equal(g_hard, g_soft) and np.abs(g_hard).max() > 0


def test_categorical_kl_to_uniform_against_its_closed_form():
    logits = np.random.default_rng(5).normal(size=(6, 3, 5))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    expected = (p * np.log(p * 5)).sum(-1)
    got = kl(Categorical(tv.tensor(logits, dtype=np.float64)), UniformCategorical(3, 5)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    uniform = kl(Categorical(tv.tensor(np.zeros((2, 3, 5)), dtype=np.float64)), UniformCategorical(3, 5)).numpy()
    np.testing.assert_allclose(uniform, 0, atol=1e-14)
    assert tv.gradcheck(lambda t: F.sum(kl(Categorical(t), UniformCategorical(3, 5))),
                        [tv.tensor(logits, dtype=np.float64, requires_grad=True)])


def test_gumbel_noise_comes_from_the_generator_and_is_finite():
    t = tv.tensor(np.zeros((1000, 3)))
    a, b = gumbel_like(t, np.random.default_rng(7)).numpy(), gumbel_like(t, np.random.default_rng(7)).numpy()
    assert np.array_equal(a, b) and np.isfinite(a).all()
    assert abs(a.mean() - np.euler_gamma) < 4 * (math.pi / math.sqrt(6)) / math.sqrt(a.size)   # Gumbel mean γ


def test_temperature_schedule():
    from tinyvae.models.gumbel_vae import TemperatureOptions, temperature
    options = TemperatureOptions(tau=1.0, tau_min=0.5, anneal_rate=1e-3, anneal_every=100)
    assert [temperature(options, s) for s in (0, 99)] == [1.0, 1.0]
    assert temperature(options, 100) == pytest.approx(math.exp(-0.1)) == temperature(options, 199)
    assert temperature(options, 10 ** 6) == 0.5


def test_straight_through_gives_the_value_forward_and_the_gradient_unchanged_backward():
    y = tv.tensor(np.random.default_rng(8).random((3, 4)), dtype=np.float64, requires_grad=True)
    value = (np.random.default_rng(9).random((3, 4)) < 0.5).astype(np.float64)
    out = F.straight_through(value, y)
    assert np.array_equal(out.numpy(), value)
    weights = np.random.default_rng(10).normal(size=(3, 4))
    assert np.array_equal(tv.grad(F.sum(out * tv.tensor(weights, dtype=np.float64)), [y])[0].numpy(), weights)
    with pytest.raises(ValueError, match="straight_through: value of shape"):
        F.straight_through(value[:2], y)


def test_binary_codes_are_exact_bits_and_the_encoder_learns_through_them():
    """Straight-through training decodes exact 0/1 bits (sampled with the step's generator)
    and still moves the encoder; evaluation codes are 1[l > 0]."""
    from tinyvae.models.base import StepContext
    model = models.build("binary-ae", {"bits": 8}, rng=np.random.default_rng(0))
    x = tv.tensor((np.random.default_rng(1).random((6, 784)) < 0.3).astype(np.float32))
    seen = []
    decoder = model.decoder
    model.decoder = lambda bits: (seen.append(bits.numpy().copy()), decoder(bits))[1]
    loss = model.loss({"x": x, "y": np.zeros(6)}, StepContext(0, 1, np.random.default_rng(2)))["loss"]
    assert set(np.unique(seen[0])) == {0.0, 1.0}
    first = model.encoder[0].weight
    assert np.abs(tv.grad(loss, [first])[0].numpy()).max() > 0
    logits = model.encoder(x).numpy()
    assert np.array_equal(model._code(x).numpy(), (logits > 0).astype(np.float32))
