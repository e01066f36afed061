"""The hierarchical VAE (tinyvae/models/hvae.py): the shapes of its layers, the residual
posterior's KL, KL balancing, the spectral penalty's power iteration, that one layer is the
``vae``, and gradient skipping (the trainer's, which VD-VAE's stabilisers need)."""
import json

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import cli, models, objectives
from tinyvae import functional as F
from tinyvae.distributions import Normal, kl
from tinyvae.models.base import StepContext
from tinyvae.models.hvae import SpectralPenalty, kl_balance, residual_kl


def _x(n=5, seed=1, size=784):
    return tv.tensor((np.random.default_rng(seed).random((n, size)) < 0.4).astype(np.float32))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_every_layer_has_prior_and_posterior_of_its_size(arch, layers):
    """mlp: L layers of latent_dim units. conv: latent_dim channels on 14×14 for the bottom
    ⌊L/2⌋ layers and 7×7 above; N(0, I) at the top only."""
    model = models.build("hvae", {"arch": arch, "layers": layers, "latent_dim": 3, "hidden": 4},
                         rng=np.random.default_rng(0))
    found, _ = model.hierarchy(_x(), np.random.default_rng(0))
    assert len(found) == layers
    for i, (z, q, p, _) in enumerate(found):                          # top first
        l = layers - i                                                # its layer number, 1 = bottom
        size = 3 if arch == "mlp" else 3 * (14 * 14 if l <= layers // 2 else 7 * 7)
        assert z.shape == q.mu.shape == (5, size)
        assert (type(p).__name__ == "StandardNormal") == (l == layers)
        if l < layers:
            assert p.mu.shape == (5, size)
    assert model.sample(2, np.random.default_rng(0)).shape == (2, 1, 28, 28)


def test_the_residual_kl_is_the_gaussian_kl():
    """Eq. 21.74 with q = N(μ_p + Δμ, σ_p² e^{Δℓ}) against the closed form of two Gaussians."""
    rng = np.random.default_rng(0)
    p = Normal(tv.tensor(rng.normal(size=(4, 6)), dtype=np.float64), tv.tensor(rng.normal(size=(4, 6)), dtype=np.float64))
    q = Normal(p.mu + tv.tensor(rng.normal(size=(4, 6)), dtype=np.float64),
               p.logvar + tv.tensor(rng.normal(size=(4, 6)), dtype=np.float64))
    np.testing.assert_allclose(residual_kl(q, p).numpy(), kl(q, p).numpy(), rtol=1e-12)


def test_kl_balancing_keeps_the_total_weight_and_favours_small_kl_layers():
    kls = [tv.tensor(np.full(8, v)) for v in (0.5, 4.0, 20.0)]
    gamma = kl_balance(kls, [10, 10, 10])
    assert gamma.sum() == pytest.approx(3.0)
    assert gamma[0] < gamma[1] < gamma[2]                  # the smallest KL is penalised least
    sized = kl_balance(kls, [40, 10, 10])                  # γ_l ∝ s_l · E[KL_l]
    assert sized[0] / sized[1] == pytest.approx(4 * (0.5 + 0.01) / (4.0 + 0.01))


def test_during_warm_up_the_loss_weights_each_layers_kl_by_its_balance():
    model = models.build("hvae", {"layers": 2, "latent_dim": 4, "warmup_steps": 10}, rng=np.random.default_rng(0))
    x, ctx = _x(), StepContext(4, 1, np.random.default_rng(2))
    got = model.loss({"x": x, "y": np.zeros(5)}, ctx)
    layers, _ = model.hierarchy(x, np.random.default_rng(2))
    recon = objectives.per_example(model.likelihood(layers[-1][0], None).log_prob(x))
    kls = [model._kl(*layer) for layer in layers][::-1]
    gamma = kl_balance(kls, [4, 4])
    expected = F.mean(0.4 * (gamma[0] * kls[0] + gamma[1] * kls[1]) - recon)
    assert got["loss"].item() == pytest.approx(expected.item(), rel=1e-6) and got["kl_weight"] == 0.4
    late = model.loss({"x": x, "y": np.zeros(5)}, StepContext(10, 1, np.random.default_rng(2)))
    assert late["loss"].item() == pytest.approx(F.mean(kls[0] + kls[1] - recon).item(), rel=1e-6)


def test_the_power_iteration_converges_to_the_largest_singular_value():
    w = tv.nn.Parameter(np.random.default_rng(0).normal(size=(6, 2, 3, 3)))
    penalty = SpectralPenalty([w], np.random.default_rng(1))
    for _ in range(60):
        penalty.advance()
    top = np.linalg.svd(w.data.reshape(6, -1), compute_uv=False)[0]
    assert penalty.penalty().item() == pytest.approx(top, rel=1e-6)


def test_one_layer_without_stabilisers_is_the_vae():
    """Same seed, same networks drawn in the same order: the same loss and test metrics to the
    last bit, and the same IWAE bound to float32 rounding (its k·N rows go through the
    posterior's last layer together, the vae's N rows then k samples, and BLAS rounds a
    product of another size differently)."""
    vae = models.build("vae", {}, rng=np.random.default_rng(0))
    hvae = models.build("hvae", {"layers": 1}, rng=np.random.default_rng(0))
    batch = {"x": _x(), "y": np.zeros(5)}
    a, b = (m.loss(batch, StepContext(0, 1, np.random.default_rng(2)))["loss"].item() for m in (vae, hvae))
    assert a == b
    (ma, _), (mb, _) = (m.eval_batch(batch, StepContext(0, 1, np.random.default_rng(3), False), iwae_k=7)
                        for m in (vae, hvae))
    for key in ("elbo", "recon", "kl"):
        np.testing.assert_array_equal(ma[key].numpy(), mb[key].numpy())
    np.testing.assert_allclose(ma["nll_iwae"].numpy(), mb["nll_iwae"].numpy(), rtol=1e-6)


def test_reconstructions_from_fewer_top_layers_keep_less_of_the_image():
    model = models.build("hvae", {"layers": 2, "latent_dim": 4}, rng=np.random.default_rng(0))
    x = _x(3).numpy()
    full, none = (model.reconstruct_from(x, k, np.random.default_rng(5)) for k in (2, 0))
    assert full.shape == none.shape == (3, 1, 28, 28) and not np.array_equal(full, none)
    np.testing.assert_array_equal(none, model.reconstruct_from(x[::-1], 0, np.random.default_rng(5)))  # x unused


def test_conv_refuses_what_it_does_not_build():
    with pytest.raises(ValueError, match="--arch conv takes --inference top-down and no --iaf-steps"):
        models.build("hvae", {"arch": "conv", "inference": "bottom-up"})


def _nan_every_other_call(monkeypatch):
    """The hvae loss made non-finite on every second call (the same calls in a run resumed
    at an epoch boundary: an epoch here is an even number of batches)."""
    loss, calls = models.get("hvae").loss, [0]

    def patched(self, batch, ctx):
        calls[0] += 1
        out = loss(self, batch, ctx)
        return {**out, "loss": out["loss"] * float("nan")} if calls[0] % 2 == 0 else out
    monkeypatch.setattr(models.get("hvae"), "loss", patched)
    return calls


def test_a_skipped_update_changes_nothing_and_resume_after_one_is_exact(tmp_path, monkeypatch, capsys):
    small = ["--model", "hvae", "--latent-dim", 3, "--train-size", 256, "--batch-size", 64, "--test-size", 32,
             "--no-progress", "--skip-grad-norm", 1e9]
    calls = _nan_every_other_call(monkeypatch)
    assert cli.main([str(a) for a in ["train", "--epochs", 2, "--out", tmp_path / "a", *small]]) == 0
    records = [json.loads(line) for line in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["skipped_steps"] for r in records] == [2, 2] and [r["step"] for r in records] == [2, 4]
    assert "update skipped, the loss is nan" in capsys.readouterr().out
    state = tv.train.saved_run.load(tmp_path / "a")
    assert state["optimizers"]["model"]["steps"] == 4                 # only the updates made moved Adam
    calls[0] = 0
    assert cli.main([str(a) for a in ["train", "--epochs", 1, "--out", tmp_path / "b", *small]]) == 0
    assert cli.main([str(a) for a in ["train", "--resume", "--epochs", 2, "--out", tmp_path / "b"]]) == 0
    resumed = tv.train.saved_run.load(tmp_path / "b")
    for key, value in state["model"].items():
        np.testing.assert_array_equal(resumed["model"][key], value)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "time")}     # noqa: E731
    assert [strip(r) for r in records] == [strip(json.loads(line)) for line in open(tmp_path / "b" / "metrics.jsonl")]


def test_a_non_finite_loss_stops_the_run_without_skipping(tmp_path, monkeypatch, capsys):
    _nan_every_other_call(monkeypatch)
    code = cli.main([str(a) for a in ["train", "--model", "hvae", "--epochs", 1, "--train-size", 256, "--test-size",
                                      32, "--no-progress", "--out", tmp_path]])
    assert code == 1 and "the loss became non-finite (nan)" in capsys.readouterr().err
