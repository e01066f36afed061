"""The models whose data is more than a complete image: M2's exact sum over the labels and
its labelled subset, the product of Gaussian experts of the multimodal VAE, and MIWAE's bound
over the observed pixels."""
import math

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import data, models
from tinyvae.distributions import Normal, product_of_experts
from tinyvae.models.base import StepContext
from tinyvae.models.m2 import balanced_subset

from helpers import to_float64

SPEC = data.DataSpec("tiny", (1, 8, 8), "images", 10)


def ctx(seed=0, training=True):
    return StepContext(step=0, epoch=1, rng=np.random.default_rng(seed), training=training)


def images(n, seed=0):
    return (np.random.default_rng(seed).random((n, SPEC.size)) < 0.4).astype(np.float64)


# ---- M2 ------------------------------------------------------------------------------------

def test_m2_unlabelled_bound_is_the_exact_sum_over_classes_of_an_explicit_loop():
    """U(x) = Σ_y q(y|x) (L(x, y) − log q(y|x)) with L computed class by class, each from its
    own block of the class-major noise, in float64 with NumPy only."""
    model = to_float64(models.build("m2", {"labels": 2, "hidden": 6, "latent_dim": 3}, SPEC,
                                    np.random.default_rng(0))).eval()
    x, n, d = images(5), 5, 3
    _, _, unlabelled = model.terms(tv.tensor(x, dtype=np.float64), np.random.default_rng(7))
    eps = np.random.default_rng(7).standard_normal((10 * n, d))         # the draw the model makes
    p = {name: t.data for name, t in model.named_parameters()}
    softplus = lambda a: np.logaddexp(0, a)                            # noqa: E731
    logits = softplus(x @ p["classifier.0.weight"].T + p["classifier.0.bias"]) @ p["classifier.2.weight"].T \
        + p["classifier.2.bias"]
    log_q = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    bound = np.zeros((n, 10))
    for c in range(10):
        y = np.zeros((n, 10))
        y[:, c] = 1
        h = softplus(x @ p["style_x.weight"].T + p["style_x.bias"] + y @ p["style_y.weight"].T)
        out = h @ p["style.1.weight"].T + p["style.1.bias"]
        mu, logvar = out[:, :d], 20 * np.tanh(out[:, d:] / 20)
        z = mu + np.exp(0.5 * logvar) * eps[c * n:(c + 1) * n]
        a = softplus(np.concatenate([z, y], 1) @ p["decoder.0.weight"].T + p["decoder.0.bias"])
        pixel_logits = a @ p["decoder.2.weight"].T + p["decoder.2.bias"]
        recon = (x * pixel_logits - np.logaddexp(0, pixel_logits)).sum(1)
        kl = 0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar).sum(1)
        bound[:, c] = recon - kl - math.log(10)
    expected = (np.exp(log_q) * (bound - log_q)).sum(1)
    np.testing.assert_allclose(unlabelled.data, expected, rtol=1e-10)


def test_m2_labelled_subset_is_balanced_and_fixed_by_the_seed():
    labels = data.load_split("mnist", "train").y
    mask = balanced_subset(labels, 100, 10, np.random.default_rng(4))
    assert mask.sum() == 100 and np.bincount(labels[mask == 1], minlength=10).tolist() == [10] * 10
    assert np.array_equal(mask, balanced_subset(labels, 100, 10, np.random.default_rng(4)))
    assert not np.array_equal(mask, balanced_subset(labels, 100, 10, np.random.default_rng(5)))
    uneven = balanced_subset(labels, 25, 10, np.random.default_rng(4))   # round-robin: the first 5 classes get 3
    assert np.bincount(labels[uneven == 1], minlength=10).tolist() == [3] * 5 + [2] * 5
    with pytest.raises(ValueError, match="more labelled examples than the 3"):
        balanced_subset(labels[:3], 4, 10, np.random.default_rng(0))


def test_m2_never_reads_an_unlabelled_examples_label():
    model = models.build("m2", {"labels": 3, "hidden": 5, "latent_dim": 2}, SPEC, np.random.default_rng(0))
    x, y = images(8).astype(np.float32), np.arange(8)
    labelled = np.array([1, 0, 1, 0, 0, 1, 0, 0], np.uint8)
    other = np.where(labelled == 1, y, (y + 5) % 10)
    losses = [model.loss({"x": tv.tensor(x), "y": labels, "labelled": labelled}, ctx())["loss"].item()
              for labels in (y, other)]
    assert losses[0] == losses[1]
    changed = np.where(labelled == 1, (y + 1) % 10, y)                    # a labelled one's label matters
    assert model.loss({"x": tv.tensor(x), "y": changed, "labelled": labelled}, ctx())["loss"].item() != losses[0]


# ---- the multimodal VAE's product of experts ---------------------------------------------

def _log_normal(z, mu, var):
    return -0.5 * (np.log(2 * np.pi * var) + (z - mu) ** 2 / var)


@pytest.mark.parametrize("experts", [1, 2, 3])
def test_product_of_gaussian_experts_is_the_normalised_product(experts):
    """Σ_i log N(z; μ_i, σ_i²) − log N(z; μ, σ²) is the same for every z (the product is
    that Gaussian up to its constant), and the precisions add."""
    rng = np.random.default_rng(experts)
    mus, logvars = rng.normal(size=(experts, 2, 3)), rng.normal(scale=2, size=(experts, 2, 3))
    product = product_of_experts([Normal(tv.tensor(m, dtype=np.float64), tv.tensor(v, dtype=np.float64), clamp=False)
                                  for m, v in zip(mus, logvars)])
    mu, var = product.mu.data, np.exp(product.logvar.data)
    np.testing.assert_allclose(1 / var, np.exp(-logvars).sum(0), rtol=1e-12)
    z = rng.normal(scale=3, size=(50, 2, 3))
    gap = sum(_log_normal(z, m, np.exp(v)) for m, v in zip(mus, logvars)) - _log_normal(z, mu, var)
    np.testing.assert_allclose(gap, np.broadcast_to(gap[:1], gap.shape), rtol=1e-10, atol=1e-10)


def test_mvae_posterior_with_a_modality_absent_is_the_product_of_the_others():
    model = to_float64(models.build("mvae", {"latent_dim": 3, "label_hidden": 4}, SPEC, np.random.default_rng(0)))
    x, y = tv.tensor(images(4), dtype=np.float64), tv.tensor(np.eye(10)[[1, 4, 4, 9]], dtype=np.float64)
    d = 3
    experts = {}
    for name, h in (("x", model.encoder(x)), ("y", model.label_expert(y))):
        experts[name] = (h.data[:, :d], np.exp(20 * np.tanh(h.data[:, d:] / 20)))
    for given in ({"x": x}, {"y": y}, {"x": x, "y": y}):
        q = model.joint_posterior(**given)
        precision = 1 + sum(1 / experts[m][1] for m in given)              # the prior expert's is 1
        mean = sum(experts[m][0] / experts[m][1] for m in given) / precision
        np.testing.assert_allclose(np.exp(-q.logvar.data), precision, rtol=1e-10)
        np.testing.assert_allclose(q.mu.data, mean, rtol=1e-10, atol=1e-12)


def test_mvae_samples_a_label_alone_and_infers_a_label_from_an_image_alone():
    model = models.build("mvae", {"latent_dim": 3}, SPEC, np.random.default_rng(0))
    a = model.sample_given(np.array([2, 2, 7]), np.random.default_rng(1))
    b = model.sample_given(np.array([2, 2, 7]), np.random.default_rng(1))
    assert a.shape == (3, 1, 8, 8) and np.array_equal(a, b) and not np.array_equal(a[0], a[1])
    assert model.classify(images(5).astype(np.float32)).shape == (5,)


# ---- MIWAE -------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{"iwae_k": 4}, {"iwae_k": 1, "missing": "top-half"}])
def test_miwae_bound_ignores_the_missing_pixels_exactly(options):
    """Whatever the missing pixels hold, the loss and every test metric but the imputation
    errors (which compare with them) are the same."""
    model = models.build("miwae", {"latent_dim": 3, "impute_k": 5, **options}, SPEC, np.random.default_rng(0))
    x = images(6).astype(np.float32)
    split = data.Split(SPEC, x, np.zeros(6, np.int64))
    observed = model.derived(split, np.random.default_rng(1))["observed"]
    mask = data.unpack_mask(observed, SPEC.size).astype(bool)
    assert 0 < mask.sum() < mask.size
    other = np.where(mask, x, 1 - x)

    def run(pixels):
        batch = {"x": tv.tensor(pixels), "y": split.y, "observed": observed}
        loss = model.loss(batch, ctx(2, training=False))
        metrics, kept = model.eval_batch(batch, ctx(3, training=False), iwae_k=3)
        return loss["loss"].item(), {k: v.data.tolist() for k, v in {**metrics, **kept}.items() if "imputation" not in k}
    assert run(x) == run(other)


def test_miwae_observed_bound_counts_only_observed_pixels_and_zero_filled_counts_all():
    observed_model = models.build("miwae", {"latent_dim": 2, "iwae_k": 1}, SPEC, np.random.default_rng(0))
    zero_filled = models.build("miwae", {"latent_dim": 2, "iwae_k": 1, "bound": "zero-filled"}, SPEC,
                               np.random.default_rng(0))
    x = images(4).astype(np.float32)
    observed = observed_model.derived(data.Split(SPEC, x, np.zeros(4, np.int64)), np.random.default_rng(1))["observed"]
    mask = data.unpack_mask(observed, SPEC.size)
    batch = {"x": tv.tensor(x), "y": np.zeros(4), "observed": observed}
    recon = {name: m.loss(batch, ctx(5, training=False))["recon"].data for name, m in
             (("observed", observed_model), ("zero-filled", zero_filled))}
    # the same networks and noise: the pixel log-likelihoods differ only in which are summed
    with tv.no_grad():
        filled = tv.tensor(x * mask)
        z = observed_model.posterior(filled).rsample(rng=np.random.default_rng(5))
        log_p = observed_model.likelihood(z).log_prob(filled).data
    np.testing.assert_allclose(recon["observed"], (log_p * mask).sum(1), rtol=1e-5)
    np.testing.assert_allclose(recon["zero-filled"], log_p.sum(1), rtol=1e-5)


def test_miwae_mean_imputation_baseline_is_the_mean_of_the_observed_training_pixels():
    model = models.build("miwae", {"latent_dim": 2, "iwae_k": 1}, SPEC, np.random.default_rng(0))
    x = np.random.default_rng(2).random((10, SPEC.size)).astype(np.float32)
    observed = model.derived(data.Split(SPEC, x, np.zeros(10, np.int64)), np.random.default_rng(1))["observed"]
    mask = data.unpack_mask(observed, SPEC.size)
    for part in (slice(0, 4), slice(4, 10)):
        model.loss({"x": tv.tensor(x[part]), "y": None, "observed": observed[part]}, ctx())
    model.eval().loss({"x": tv.tensor(1 - x), "y": None, "observed": observed}, ctx())    # not counted in eval
    expected = (x * mask).sum(0) / np.maximum(mask.sum(0), 1)
    np.testing.assert_allclose(model.observed_sum / np.maximum(model.observed_count, 1), expected, rtol=1e-6)


@pytest.mark.parametrize("name, options, drawn", [
    ("m2", {"labels": 10, "hidden": 8, "latent_dim": 2}, {"samples_by_label.png", "analogies.png"}),
    ("mvae", {"latent_dim": 2}, {"samples_by_label.png", "manifold.png"}),
    ("miwae", {"latent_dim": 2, "impute_k": 3}, {"imputations.png", "reconstructions.png"})])
def test_a_run_draws_the_pictures_of_its_capabilities(name, options, drawn, tmp_path):
    from PIL import Image
    from tinyvae import train as T
    T.train(name, options, T.RunOptions(epochs=1, batch_size=32, train_size=96, test_size=40), str(tmp_path),
            progress=False, log=lambda *a: None)
    for picture in drawn:
        with Image.open(tmp_path / picture) as image:
            assert image.size[0] > 100 and image.size[1] > 100


def test_the_imputation_picture_shows_missing_pixels_grey_then_the_imputation_then_the_truth():
    from tinyvae import pictures
    model = models.build("miwae", {"latent_dim": 2, "impute_k": 3}, SPEC, np.random.default_rng(0))
    x = images(3).astype(np.float32)
    split = data.Split(SPEC, x, np.zeros(3, np.int64))
    split = data.Split(SPEC, x, split.y, model.derived(split, np.random.default_rng(1)))
    grid = pictures.imputation_picture(model, split, np.random.default_rng(2), columns=3)
    def tile(row, col):                  # 8×8 tiles, 2 pixels apart, each pixel drawn 2×2
        top, left = 2 * (2 + row * 10), 2 * (2 + col * 10)
        return grid[top:top + 16:2, left:left + 16:2] / 255
    mask = data.unpack_mask(split.fields["observed"], SPEC.size).reshape(3, 8, 8)
    for col in range(3):
        truth = x[col].reshape(8, 8)
        np.testing.assert_allclose(tile(0, col), np.where(mask[col] == 1, truth, 0.5), atol=1 / 255)
        np.testing.assert_allclose(tile(2, col), truth, atol=1 / 255)
        np.testing.assert_allclose(tile(1, col)[mask[col] == 1], truth[mask[col] == 1], atol=1 / 255)


def test_a_runs_masks_share_no_draws_with_the_other_split_or_any_evaluation():
    """The derived arrays of each split come from a generator of their own: not the other
    split's, not an evaluation's ([seed, epoch], whose test binarization once reused a mask's
    uniforms)."""
    from tinyvae import train as T
    model = models.build("miwae", {"latent_dim": 2}, SPEC, np.random.default_rng(0))
    split = data.Split(SPEC, images(20).astype(np.float32), np.zeros(20, np.int64))
    masks = {name: T.with_derived(model, split, 5, name=name).fields["observed"] for name in ("train", "test")}
    assert not np.array_equal(masks["train"], masks["test"])
    for epoch in range(1, 100):
        assert not np.array_equal(model.derived(split, np.random.default_rng([5, epoch]))["observed"], masks["test"])


@pytest.mark.parametrize("share", [0.0, 0.1, 0.5])
def test_m2_epochs_visit_the_labelled_examples_often_enough_to_fill_their_share(share):
    labels = data.load_split("mnist", "train").y
    model = models.build("m2", {"labels": 100, "labelled_share": share, "hidden": 3, "latent_dim": 2},
                         data.SPECS["mnist"], np.random.default_rng(0))
    labelled = balanced_subset(labels, 100, 10, np.random.default_rng(1))
    split = data.Split(data.SPECS["mnist"], np.zeros((len(labels), 1), np.float32), labels, {"labelled": labelled})
    visits = model.visits(split)
    assert np.all(visits[labelled == 0] == 1) and len(set(visits[labelled == 1])) == 1
    # whole repeats: within one repeat of the labelled examples (100 rows) of the share asked,
    # or once each at share 0
    assert visits[labelled == 1].sum() / visits.sum() == pytest.approx(max(share, 100 / len(labels)),
                                                                       abs=100 / visits.sum())
    order = np.concatenate(list(data.batches(len(labels), 100, np.random.default_rng(2), visits=visits)))
    assert np.array_equal(np.bincount(order, minlength=len(labels)), visits)


def test_miwae_top_half_hides_the_top_rows_of_about_the_share_of_images_asked():
    model = models.build("miwae", {"latent_dim": 2, "missing": "top-half", "missing_rate": 0.3}, data.SPECS["mnist"],
                         np.random.default_rng(0))
    split = data.Split(data.SPECS["mnist"], np.zeros((2000, 784), np.float32), np.zeros(2000, np.int64))
    mask = data.unpack_mask(model.derived(split, np.random.default_rng(1))["observed"], 784).reshape(-1, 28, 28)
    hidden = mask[:, :14].sum(axis=(1, 2)) == 0
    assert np.all(mask[:, 14:] == 1) and np.all(mask[~hidden] == 1)
    assert abs(hidden.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 2000)


def test_miwae_imputation_errors_are_averaged_over_the_missing_pixels_alone():
    """With nothing trained, the mean imputation guesses 0 everywhere, so its error is the
    share of 1s among the missing (binarized) pixels, however many images miss none."""
    from tinyvae import train as T
    model = models.build("miwae", {"latent_dim": 2, "missing": "top-half", "missing_rate": 0.5, "impute_k": 2},
                         SPEC, np.random.default_rng(0))
    split = data.Split(SPEC, np.random.default_rng(1).random((40, SPEC.size)).astype(np.float32), np.zeros(40, int))
    split = T.with_derived(model, split, 3)
    result = T.evaluate(model, split, np.random.default_rng(4), batch_size=7)
    missing = data.unpack_mask(split.fields["observed"], SPEC.size) == 0
    assert 0 < missing.any(axis=1).sum() < 40
    pixels = split.binarized(np.random.default_rng(4)).x
    assert result["test_mean_imputation_mse"] == pytest.approx(pixels[missing].mean(), rel=1e-6)
    assert 0 < result["test_imputation_mse"] < 1
