"""The sample-quality metric: the Fréchet distance against its closed form, the classifier's
augmentation, cache and accuracy, and `tinyvae eval` reporting sample_fd."""
import numpy as np
import pytest

from tinyvae import quality


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    """With Σ₁ = R D₁ Rᵀ and Σ₂ = R D₂ Rᵀ (one rotation), FD = ‖Δμ‖² + Σ_i (√d₁ᵢ − √d₂ᵢ)²."""
    rng = np.random.default_rng(0)
    d1, d2 = rng.uniform(0.5, 2.0, 4), rng.uniform(0.5, 2.0, 4)
    rotation = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    mu1, mu2 = rng.standard_normal(4), rng.standard_normal(4)

    def draw(mu, d, n=200000):
        return mu + (rng.standard_normal((n, 4)) * np.sqrt(d)) @ rotation.T
    a, b = draw(mu1, d1), draw(mu2, d2)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    assert quality.frechet_distance(a, b) == pytest.approx(expected, abs=0.02)
    assert quality.frechet_distance(a, b) == pytest.approx(quality.frechet_distance(b, a), rel=1e-9)
    assert abs(quality.frechet_distance(a, a)) < 1e-8


def test_shifted_moves_each_image_by_its_own_offset():
    image = np.zeros((28, 28), np.float32)
    image[10, 12] = 1.0
    rng = np.random.default_rng(3)
    out = quality.shifted(np.stack([image.ravel()] * 50), rng).reshape(50, 28, 28)
    dy, dx = np.random.default_rng(3).integers(0, 5, (2, 50))
    for k in range(50):
        assert out[k].sum() == 1.0 and out[k][10 + 2 - dy[k], 12 + 2 - dx[k]] == 1.0
    assert len({(a, b) for a, b in zip(dy, dx)}) > 1


def test_classifier_is_trained_once_cached_and_retrained_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    calls = []
    real = quality.train_classifier

    def small(dataset, data_dir=None, log=print):
        calls.append(dataset)
        return real(dataset, data_dir, epochs=1, train_size=2048, log=log)
    monkeypatch.setattr(quality, "train_classifier", small)
    first, accuracy = quality.load_classifier("mnist", log=lambda m: None)
    assert calls == ["mnist"] and 0.5 < accuracy <= 1 and quality.cache_path("mnist").is_file()
    again, same = quality.load_classifier("mnist", log=lambda m: None)
    assert calls == ["mnist"] and same == accuracy
    images = np.random.default_rng(0).random((5, 784)).astype(np.float32)
    np.testing.assert_array_equal(quality.features(again, images), quality.features(first, images))
    path = quality.cache_path("mnist")
    path.write_bytes(path.read_bytes()[:-50])
    quality.load_classifier("mnist", log=lambda m: None)
    assert calls == ["mnist", "mnist"]


@pytest.mark.slow
@pytest.mark.parametrize("dataset, target", [("mnist", 0.99), ("fashion-mnist", 0.90)])
def test_feature_classifier_reaches_its_test_accuracy(dataset, target):
    _, accuracy = quality.train_classifier(dataset, log=lambda m: None)
    assert accuracy >= target


def test_conditional_accuracy_asks_for_every_label_in_turn_and_scores_each_sample(monkeypatch):
    """A model whose sample for label c lights pixel c (but draws 3 as a 4), scored by a
    classifier that reads the lit pixel: 9 of every 10 samples are right."""
    class Drawer:
        spec = quality.data.SPECS["mnist"]
        asked = []

        def sample_given(self, labels, rng):
            self.asked.extend(labels.tolist())
            images = np.zeros((len(labels), 784), np.float32)
            images[np.arange(len(labels)), np.where(labels == 3, 4, labels)] = 1
            return images.reshape(-1, 1, 28, 28)
    monkeypatch.setattr(quality, "predictions", lambda classifier, images: images.reshape(len(images), -1).argmax(1))
    model = Drawer()
    assert quality.conditional_accuracy(model, np.random.default_rng(0), None, n=1000, batch_size=300) == 0.9
    assert model.asked == [i % 10 for i in range(1000)]
