"""VQ-GAN: the adaptive weight against a float64 computation of the two gradient norms, the
discriminator untouched before its start step, and the hinge loss stepping it after."""
from dataclasses import replace

import numpy as np

import tinyvae as tv
from tinyvae import checkpoint, models
from tinyvae import functional as F
from tinyvae import train as T
from tinyvae.models.base import StepContext

from helpers import to_float64

OPTIONS = {"num_codes": 8, "code_dim": 3, "hidden": 4, "codebook_init": "uniform", "disc_channels": 3}


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    model = to_float64(models.build("vqgan", {**OPTIONS, "disc_weight": 0.5}, rng=np.random.default_rng(0)))
    x = tv.tensor(np.random.default_rng(1).random((4, 784)), dtype=np.float64)
    out = model.decoder(model.quantizer(model.encoder(x)).quantized)
    rec = F.mean((out - x) * (out - x))
    gan = -F.mean(model.discriminator(out.reshape(-1, 1, 28, 28)))
    last = model.decoder[-2].weight

    def grad_norm(loss):
        last.grad = None
        loss.backward(retain_graph=True)
        return np.sqrt((last.grad ** 2).sum())
    expected = 0.5 * grad_norm(rec) / (grad_norm(gan) + 1e-4)
    last.grad = None
    assert abs(model.adaptive_weight(rec, gan) - expected) <= 1e-12 * expected and expected > 1e-3
    assert last.grad is None                                          # tinyvae.grad leaves .grad alone
    model.options = replace(model.options, max_adaptive_weight=1e-3)
    assert model.adaptive_weight(rec, gan) == 0.5 * 1e-3              # the ratio clamped


def test_the_discriminator_is_untouched_before_its_start_step_and_trains_after(tmp_path):
    run = T.RunOptions(epochs=1, batch_size=32, train_size=64, test_size=32, seed=3)
    init = models.build("vqgan", {**OPTIONS, "disc_start": 2}, rng=np.random.default_rng(run.seed))
    T.train("vqgan", {**OPTIONS, "disc_start": 2}, run, str(tmp_path / "late"), progress=False, log=lambda *a: None)
    state = checkpoint.load(tmp_path / "late" / "checkpoint.safetensors")
    for name, value in init.state_dict().items():
        if name.startswith("discriminator."):
            assert np.array_equal(state["model"][name], value), name
    assert state["optimizers"]["discriminator"]["steps"] == 0 and state["optimizers"]["model"]["steps"] == 2

    T.train("vqgan", {**OPTIONS, "disc_start": 1}, run, str(tmp_path / "early"), progress=False, log=lambda *a: None)
    state = checkpoint.load(tmp_path / "early" / "checkpoint.safetensors")
    assert state["optimizers"]["discriminator"]["steps"] == 1
    assert any(not np.array_equal(state["model"][n], v) for n, v in init.state_dict().items()
               if n.startswith("discriminator."))
    history = state["history"][0]
    assert "train_loss_discriminator" in history and "train_loss_model" in history


def test_the_feature_network_is_a_hook():
    """A user's feature network (LPIPS's, say) replaces the discriminator's in the term."""
    model = models.build("vqgan", {**OPTIONS, "disc_start": 10}, rng=np.random.default_rng(0))
    x = tv.tensor(np.random.default_rng(1).random((2, 784)).astype(np.float32))
    seen = []
    model.feature_network = lambda images: (seen.append(images.shape), [images])[1]
    terms = model.loss({"x": x, "y": np.zeros(2)}, StepContext(0, 1, np.random.default_rng(0)))
    assert seen == [(2, 1, 28, 28), (2, 1, 28, 28)] and terms["feature_matching"] > 0
