"""The von Mises–Fisher posterior (tinyvae/von_mises_fisher.py): Bessel functions, Wood's
sampler, the closed-form KL to the uniform prior on the sphere, each against an independent
computation (numerical integration, a recurrence, Monte Carlo with a standard-error tolerance)."""
import math

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import models, objectives
from tinyvae import functional as F
from tinyvae.von_mises_fisher import (UniformSphere, VonMisesFisher, kl_to_uniform, log_bessel_iv,
                                      mean_resultant_length, sample_w)


def _integral(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule."""
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum())


@pytest.mark.parametrize("order, x", [(0.0, 0.5), (0.5, 3.0), (1.5, 20.0), (24.0, 50.0), (4.0, 200.0)])
def test_log_bessel_matches_its_integral(order, x):
    """I_ν(x) = (x/2)^ν / (√π Γ(ν + ½)) ∫₀^π e^{x cos θ} sin^{2ν} θ dθ, by the trapezoid rule
    in log space (the integrand scaled by e^{−x})."""
    theta = np.linspace(0, np.pi, 200001)
    integrand = np.exp(x * (np.cos(theta) - 1)) * np.sin(theta) ** (2 * order)
    log_integral = math.log(_integral(integrand, theta)) + x
    expected = order * math.log(x / 2) - 0.5 * math.log(math.pi) - math.lgamma(order + 0.5) + log_integral
    assert log_bessel_iv(order, x) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("order, x", [(250.0, 100.0), (10.0, 2000.0), (1000.0, 5.0)])
def test_log_bessel_holds_the_recurrence_where_it_would_overflow_or_underflow(order, x):
    """I_{ν−1}(x) − I_{ν+1}(x) = (2ν/x) I_ν(x), in logs, at sizes where I_ν itself is outside
    float64 (e^{2000}, or 10^{−2000})."""
    lo, mid, hi = (log_bessel_iv(order + d, x) for d in (-1, 0, 1))
    assert lo + math.log1p(-math.exp(hi - lo)) == pytest.approx(math.log(2 * order / x) + mid, rel=1e-10)


@pytest.mark.parametrize("dim, kappa", [(3, 1.0), (10, 20.0), (50, 50.0), (200, 10.0)])
def test_samples_lie_on_the_sphere_with_the_right_mean_resultant_length(dim, kappa):
    """E[μᵀz] = A_D(κ) within 5 standard errors, and the mean's part orthogonal to μ is 0
    within 5 standard errors; every sample has norm 1."""
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(dim)
    mu /= np.linalg.norm(mu)
    q = VonMisesFisher(tv.tensor(np.tile(mu, (20000, 1)), dtype=np.float64), kappa)
    z = q.rsample(rng=rng).numpy()
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-12)
    w = z @ mu
    assert abs(w.mean() - mean_resultant_length(dim, kappa)) < 5 * w.std() / math.sqrt(len(w))
    across = z - w[:, None] * mu
    assert np.linalg.norm(across.mean(axis=0)) < 5 * math.sqrt((1 - w ** 2).mean() / len(w))


def test_the_sampler_draws_w_from_its_density():
    """The histogram of Wood's w for D = 5, κ = 3 against ∝ e^{κw}(1 − w²)^{(D−3)/2}
    (Pearson's χ² over 20 bins, far below the 0.1% critical value 43.8 of 19 degrees)."""
    w = sample_w(50000, 5, 3.0, np.random.default_rng(1))
    edges = np.linspace(-1, 1, 21)
    grid = np.linspace(-1, 1, 400001)
    density = np.exp(3.0 * grid) * (1 - grid ** 2)
    cumulative = np.concatenate([[0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    expected = np.diff(np.interp(edges, grid, cumulative / cumulative[-1])) * len(w)
    observed = np.histogram(w, edges)[0]
    assert ((observed - expected) ** 2 / expected).sum() < 43.8


@pytest.mark.parametrize("dim, kappa", [(3, 2.0), (5, 10.0), (8, 30.0)])
def test_kl_to_the_uniform_sphere_against_numerical_integration(dim, kappa):
    """KL = κ E[w] − log E_U[e^{κw}], both expectations over w = μᵀz on a grid with the
    uniform sphere's marginal ∝ (1 − w²)^{(D−3)/2}; and the Monte-Carlo mean of
    log q(z) − log p(z) over samples agrees within 5 standard errors."""
    grid = np.linspace(-1, 1, 400001)
    base = (1 - grid ** 2) ** ((dim - 3) / 2)
    tilted = np.exp(kappa * (grid - 1)) * base
    expected = (kappa * _integral(grid * tilted, grid) / _integral(tilted, grid)
                - (math.log(_integral(tilted, grid) / _integral(base, grid)) + kappa))
    assert kl_to_uniform(dim, kappa) == pytest.approx(expected, rel=1e-7)
    mu = np.eye(dim)[[1]].repeat(20000, axis=0)
    q = VonMisesFisher(tv.tensor(mu, dtype=np.float64), kappa)
    z = q.rsample(rng=np.random.default_rng(2))
    gap = (q.log_prob(z) - UniformSphere(dim).log_prob(z)).numpy()[:, 0]
    assert abs(gap.mean() - expected) < 5 * gap.std() / math.sqrt(len(gap)) + 1e-9


def test_the_reparameterised_sample_is_differentiable_in_mu():
    """z = H(μ) z' for fixed noise z', gradchecked in float64 (μ off e₁ and near it)."""
    rng = np.random.default_rng(3)
    mu = rng.standard_normal((4, 5))
    mu[0] = [1, 1e-3, 0, 0, 0]
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    q = VonMisesFisher(tv.tensor(mu, dtype=np.float64), 7.0)
    eps, weights = q.noise(rng=rng), tv.tensor(rng.standard_normal((4, 5)), dtype=np.float64)
    assert tv.gradcheck(lambda m: F.sum(VonMisesFisher(m, 7.0).rsample_and_log_prob(eps)[0] * weights),
                        [tv.tensor(mu, dtype=np.float64, requires_grad=True)])


def test_the_vmf_vae_has_a_constant_rate_and_samples_on_the_sphere():
    model = models.build("vae", {"latent_dim": 6, "posterior": "vmf", "kappa": 20.0}, rng=np.random.default_rng(0))
    x = tv.tensor((np.random.default_rng(1).random((5, 784)) < 0.4).astype(np.float32))
    terms = objectives.elbo_terms(model, x, np.random.default_rng(2))
    np.testing.assert_allclose(terms["kl"].numpy(), kl_to_uniform(6, 20.0), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(terms["z"].numpy(), axis=1), 1.0, rtol=1e-6)
    assert model.sample(3, np.random.default_rng(0)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="vmf posterior's KL does not split"):
        models.build("vae", {"posterior": "vmf", "free_bits": 0.5})
