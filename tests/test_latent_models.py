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
