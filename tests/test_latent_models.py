"""Families that change the VAE's objective or decoder: the skip-VAE's z reaches every decoder
layer; the InfoVAE's loss is the formula it states."""
import numpy as np
import pytest

import tinyvae as tv
from tinyvae import models, objectives
from tinyvae import functional as F
from tinyvae.distributions import standard_normal_like
from tinyvae.models.base import StepContext


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_skip_decoder_hears_z_at_every_layer(arch):
    """With every weight of the path before the last layer zeroed, the skip decoder's output
    still moves with z; the plain VAE's no longer does."""
    last = {("skip-vae", "mlp"): ("layers.1.", "skips.1."), ("skip-vae", "conv"): ("ups.1.", "skips.1."),
            ("vae", "mlp"): ("4.",), ("vae", "conv"): ("5.",)}                  # the last layer's weights

    def spread(name):
        model = models.build(name, {"arch": arch, "latent_dim": 4}, rng=np.random.default_rng(0))
        for n, p in model.decoder.named_parameters():
            if not n.startswith(last[name, arch]):
                p.data[...] = 0
        z = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        return np.ptp(model.decoder(tv.tensor(z)).numpy(), axis=0).max()
    assert spread("skip-vae") > 1e-3 and spread("vae") == 0


def test_info_vae_loss_is_its_formula():
    model = models.build("info-vae", {"latent_dim": 3, "alpha": 0.3, "lam": 5.0, "kernel": "rbf"},
                         rng=np.random.default_rng(0))
    x = tv.tensor((np.random.default_rng(1).random((6, 784)) < 0.4).astype(np.float32))
    got = model.loss({"x": x, "y": np.zeros(6)}, StepContext(0, 1, np.random.default_rng(2)))
    rng = np.random.default_rng(2)
    terms = objectives.elbo_terms(model, x, rng)
    mmd = objectives.mmd(terms["z"], standard_normal_like(terms["z"], rng), "rbf")
    expected = F.mean(0.7 * terms["kl"] - terms["recon"]) + 4.3 * mmd
    assert got["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="must be ≥ 0"):
        models.build("info-vae", {"alpha": -1.0, "lam": 0.5})
    with pytest.raises(ValueError, match="--alpha must be at most 1.0"):
        models.build("info-vae", {"alpha": 1.5})


def _full_normal(rng, n=2, d=3):
    from tinyvae.distributions import FullNormal
    a = rng.normal(size=(n, d, d))
    tril = np.tril(a)
    tril[:, range(d), range(d)] = np.abs(tril[:, range(d), range(d)]) + 0.5
    mu = rng.normal(size=(n, d))
    return mu, tril, FullNormal.from_scale_tril(tv.tensor(mu, dtype=np.float64), tv.tensor(tril, dtype=np.float64))


def test_full_covariance_density_and_kl_against_float64_references():
    """log N(z; μ, LLᵀ) and KL(N(μ, LLᵀ) ‖ N(0, I)) against NumPy's determinant and solve; the
    log-density of a reparameterised sample equals the solve's; both gradcheck."""
    from tinyvae.distributions import FullNormal, StandardNormal, kl
    rng = np.random.default_rng(0)
    mu, tril, q = _full_normal(rng)
    z = rng.normal(size=(2, 3))
    cov = tril @ tril.transpose(0, 2, 1)
    expected = [-0.5 * (3 * np.log(2 * np.pi) + np.log(np.linalg.det(c)) + (zi - m) @ np.linalg.solve(c, zi - m))
                for c, zi, m in zip(cov, z, mu)]
    got = F.sum(q.log_prob(tv.tensor(z, dtype=np.float64)), axis=-1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    expected_kl = [0.5 * (np.trace(c) + m @ m - 3 - np.log(np.linalg.det(c))) for c, m in zip(cov, mu)]
    np.testing.assert_allclose(F.sum(kl(q, StandardNormal(3)), axis=-1).numpy(), expected_kl, rtol=1e-12)
    eps = tv.tensor(rng.normal(size=(4, 2, 3)), dtype=np.float64)
    sample, log_q = q.rsample_and_log_prob(eps)
    np.testing.assert_allclose(F.sum(log_q, -1).numpy(), F.sum(q.log_prob(sample), -1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(sample.numpy(), mu + np.einsum("nij,knj->kni", tril, eps.numpy()), rtol=1e-12)
    np.testing.assert_array_equal(q.scale_tril.numpy(), tril)
    inputs = [tv.tensor(mu, dtype=np.float64, requires_grad=True), tv.tensor(tril, dtype=np.float64, requires_grad=True)]
    assert tv.gradcheck(lambda m, t: F.sum(FullNormal.from_scale_tril(m, t).log_prob(tv.tensor(z, dtype=np.float64))), inputs)
    assert tv.gradcheck(lambda m, t: F.sum(kl(FullNormal.from_scale_tril(m, t), StandardNormal(3))), inputs)


def test_a_full_covariance_vae_has_a_lower_triangular_factor_and_refuses_free_bits():
    model = models.build("vae", {"latent_dim": 4, "posterior": "full"}, rng=np.random.default_rng(0))
    x = tv.tensor((np.random.default_rng(1).random((3, 784)) < 0.4).astype(np.float32))
    tril = model.posterior(x).scale_tril.numpy()
    assert np.all(np.triu(tril, 1) == 0) and np.all(np.diagonal(tril, 0, 1, 2) > 0)
    assert np.abs(np.tril(tril, -1)).max() > 0
    with pytest.raises(ValueError, match="--free-bits is per latent dimension"):
        models.build("vae", {"posterior": "full", "free_bits": 0.5})


def test_the_chunked_iwae_bound_takes_a_full_covariance_posterior():
    """Chunks recomputed in backward (F.recompute over the posterior's tensors) give the
    bound and gradients of one pass, for N(μ, LLᵀ) as for the diagonal Gaussian."""
    from helpers import to_float64
    model = to_float64(models.build("vae", {"latent_dim": 3, "posterior": "full"}, rng=np.random.default_rng(0)))
    x = tv.tensor((np.random.default_rng(1).random((2, 784)) < 0.4).astype(np.float64), dtype=np.float64)
    results = []
    for chunk in (7, 2):
        model.zero_grad()
        bound = objectives.iwae_bound(model, x, 7, np.random.default_rng(3), chunk=chunk)
        F.sum(bound).backward()
        results.append((bound.numpy(), [p.grad.copy() for p in model.parameters()]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_iaf_steps_are_autoregressive_and_the_log_density_has_their_log_determinant():
    """In float64, for one example: each MADE's outputs depend only on the inputs before them
    in its ordering (strictly triangular Jacobian), so the flow ε → z has a triangular
    Jacobian in the composed sense; log q(z) = log N(ε) − log |det ∂z/∂ε| with the
    determinant of the numerically computed Jacobian."""
    from helpers import to_float64
    from tinyvae.distributions import IAFNormal
    model = to_float64(models.build("vae", {"latent_dim": 4, "posterior": "iaf", "iaf_hidden": 9, "iaf_steps": 3},
                                    rng=np.random.default_rng(0)))
    rng = np.random.default_rng(1)
    context = tv.tensor(rng.normal(size=(1, 4)), dtype=np.float64)
    for t, made in enumerate(model.flows):
        z = tv.tensor(rng.normal(size=(1, 4)), dtype=np.float64, requires_grad=True)
        for out in made(z, context):
            jac = np.stack([tv.grad(out[0, i], [z], retain_graph=True)[0].numpy()[0] for i in range(4)])
            tri = np.tril(jac, -1) if t % 2 == 0 else np.triu(jac, 1)       # orderings alternate
            assert np.array_equal(jac, tri) and np.abs(tri).max() > 0, t
    loc, logvar = (tv.tensor(rng.normal(size=(1, 4)) * 0.3, dtype=np.float64) for _ in range(2))
    q = IAFNormal(loc, logvar, context, list(model.flows))
    eps0 = rng.normal(size=(1, 4))

    def flow(e):
        return q.rsample_and_log_prob(tv.tensor(e, dtype=np.float64))[0].numpy()[0]
    jac = np.stack([(flow(eps0 + 1e-6 * np.eye(4)[j]) - flow(eps0 - 1e-6 * np.eye(4)[j])) / 2e-6 for j in range(4)], 1)
    log_q = F.sum(q.rsample_and_log_prob(tv.tensor(eps0, dtype=np.float64))[1]).item()
    expected = -0.5 * (eps0 ** 2).sum() - 2 * np.log(2 * np.pi) - np.log(abs(np.linalg.det(jac)))
    assert log_q == pytest.approx(expected, abs=1e-7)
