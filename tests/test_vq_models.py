"""The VQ family end to end: a vqvae run, a PixelCNN prior trained on its codes with --parent,
samples through the parent's decoder; a vqvae2 run and a two-level prior (the bottom given the
top, sampled top then bottom); the parent's codes computed once and kept in the prior's run;
whole-test-set code statistics; k-means initialisation; parents that are missing, of another
kind, or changed since, each refused in one line."""
import math
import shutil

import numpy as np
import pytest

from tinyvae import checkpoint, cli, models
from tinyvae import train as T

SMALL = ["--train-size", "128", "--test-size", "64", "--batch-size", "64", "--no-progress", "--seed", "6"]
TINY_VQ = ["--num-codes", "16", "--code-dim", "4", "--hidden", "8"]


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vq")
    assert run("train", "--model", "vqvae", "--epochs", 1, *TINY_VQ, "--out", root / "vq", *SMALL) == 0
    assert run("train", "--model", "pixelcnn-prior", "--parent", root / "vq", "--channels", 8, "--blocks", 2,
               "--epochs", 2, "--out", root / "prior", *SMALL) == 0
    return root


@pytest.fixture(scope="module")
def two_level_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vq2")
    assert run("train", "--model", "vqvae2", "--epochs", 1, *TINY_VQ, "--out", root / "vq2", *SMALL) == 0
    assert run("train", "--model", "pixelcnn-prior", "--parent", root / "vq2", "--channels", 8, "--blocks", 2,
               "--epochs", 2, "--out", root / "prior", *SMALL) == 0
    return root


def one_line(capsys, code, expected, pattern):
    err = capsys.readouterr().err
    assert code == expected, err
    assert err.count("\n") == 1 and err.startswith("tinyvae: error:") and pattern in err, err


def test_the_prior_learns_the_codes_and_samples_through_the_parent(runs, tmp_path):
    import json
    first, last = [json.loads(line) for line in (runs / "prior" / "metrics.jsonl").read_text().splitlines()]
    assert last["test_nll"] < first["test_nll"] < last["uniform_nll"] == pytest.approx(49 * math.log(16))
    assert last["bits_per_code"] == pytest.approx(last["test_nll"] / 49 / math.log(2))
    assert (runs / "prior" / "samples.png").is_file() and (runs / "vq" / "code_usage.png").is_file()
    model, _ = T.load_model(str(runs / "prior"))
    a, b = model.sample(3, np.random.default_rng(4)), model.sample(3, np.random.default_rng(4))
    assert a.shape == (3, 1, 28, 28) and np.array_equal(a, b)                 # reproducible under the seed


def test_code_statistics_are_over_the_whole_test_set():
    model = models.build("vqvae", {"num_codes": 4, "code_dim": 2, "hidden": 2})
    summary = model.eval_summary({"codes": np.array([[0, 0], [1, 0]])})
    assert summary["codes_used"] == 0.5
    assert summary["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_kmeans_initialisation_happens_once_and_is_kept(runs):
    state = checkpoint.load(runs / "vq" / "checkpoint.safetensors")
    assert state["model"]["initialised"].tolist() == [1]
    model, _ = T.load_model(str(runs / "vq"))
    book = model.quantizer.codebook_array()
    assert len(np.unique(book.round(6), axis=0)) == 16                        # distinct codes from data


def test_a_missing_parent_is_refused(tmp_path, capsys):
    code = run("train", "--model", "pixelcnn-prior", "--parent", tmp_path / "none", "--out", tmp_path / "p", *SMALL)
    one_line(capsys, code, 1, "no checkpoint in")


def test_a_parent_without_codes_is_refused(tmp_path, capsys):
    assert run("train", "--epochs", 1, "--latent-dim", 2, "--out", tmp_path / "vae", *SMALL) == 0
    capsys.readouterr()
    code = run("train", "--model", "pixelcnn-prior", "--parent", tmp_path / "vae", "--out", tmp_path / "p", *SMALL)
    one_line(capsys, code, 2, "pixelcnn-prior needs a parent run with discrete codes (a vqvae, vqvae2, vqgan or dvae run); the parent is a 'vae'")


def test_a_prior_whose_parent_changed_is_refused(runs, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(runs, copy)
    parent = copy / "vq" / "checkpoint.safetensors"
    state = checkpoint.load(parent)
    state["model"]["decoder.0.bias"] = state["model"]["decoder.0.bias"] + 1      # another parent, valid checksum
    checkpoint.save(parent, state)
    config = checkpoint.load(copy / "prior" / "checkpoint.safetensors")
    config["run"]["parent"] = str(copy / "vq")
    checkpoint.save(copy / "prior" / "checkpoint.safetensors", config)
    one_line(capsys, run("sample", copy / "prior", "-o", tmp_path / "s.png"), 1, "the parent run has changed")


def test_dead_code_restarts_draw_from_the_runs_generator():
    """Restarts take encoder outputs picked with the step's generator: the same seed restarts
    the same codes with the same vectors, another seed other vectors (the catalog's resume
    test then shows a resumed run restarting exactly as an uninterrupted one)."""
    import tinyvae as tv
    from tinyvae.models.base import StepContext
    x = tv.tensor(np.random.default_rng(0).random((16, 784)).astype(np.float32))

    def codebook_after(seed, dead_code_steps):
        model = models.build("vqvae", {"num_codes": 32, "code_dim": 3, "hidden": 4, "codebook_init": "uniform",
                                       "dead_code_steps": dead_code_steps}, rng=np.random.default_rng(1))
        rng = np.random.default_rng(seed)
        for step in range(2):
            model.loss({"x": x, "y": np.zeros(16, np.int64)}, StepContext(step=step, epoch=1, rng=rng))
        return model.quantizer.codebook_array().copy()

    never, a, b, other = (codebook_after(5, 0), codebook_after(5, 1), codebook_after(5, 1), codebook_after(6, 1))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, never) and not np.array_equal(a, other)


def test_a_two_level_prior_learns_both_levels_and_samples_top_then_bottom(two_level_runs):
    import json
    first, last = [json.loads(line) for line in (two_level_runs / "prior" / "metrics.jsonl").read_text().splitlines()]
    positions = 7 * 7 + 14 * 14                                               # top and bottom grids
    assert last["test_nll"] < first["test_nll"] and last["uniform_nll"] == pytest.approx(positions * math.log(16))
    assert last["bits_per_code"] == pytest.approx(last["test_nll"] / positions / math.log(2))
    vq2 = json.loads((two_level_runs / "vq2" / "metrics.jsonl").read_text())
    assert {"test_mse", "codes_used_top", "codes_used_bottom", "perplexity_top", "perplexity_bottom"} <= set(vq2)
    model, _ = T.load_model(str(two_level_runs / "prior"))
    a, b = model.sample(3, np.random.default_rng(4)), model.sample(3, np.random.default_rng(4))
    assert a.shape == (3, 1, 28, 28) and np.array_equal(a, b)
    assert (two_level_runs / "prior" / "samples.png").is_file() and (two_level_runs / "vq2" / "code_usage.png").is_file()


def test_the_bottom_prior_sees_the_top_codes_and_no_later_bottom_code(two_level_runs):
    """Logits at bottom position (i, j): unchanged when a later bottom code changes, changed
    when a top code does (the bottom is conditioned on the whole top grid)."""
    model, _ = T.load_model(str(two_level_runs / "prior"))
    rng = np.random.default_rng(0)
    top, bottom = rng.integers(0, 16, (1, 7, 7)), rng.integers(0, 16, (1, 14, 14))
    labels = np.zeros(1, np.int64)
    base = model.logits(1, [top, bottom], labels).numpy()[0]
    for i, j in [(0, 0), (5, 9), (13, 12)]:
        later = bottom.copy()
        later.reshape(-1)[i * 14 + j:] = (later.reshape(-1)[i * 14 + j:] + 1) % 16
        assert np.array_equal(model.logits(1, [top, later], labels).numpy()[0][:, i, j], base[:, i, j])
    for (i, j), (k, m) in [((0, 0), (1, 1)), ((13, 13), (6, 6)), ((4, 6), (3, 4))]:     # bottom, top cells
        moved = top.copy()
        moved[0, k, m] = (moved[0, k, m] + 1) % 16
        assert not np.allclose(model.logits(1, [moved, bottom], labels).numpy()[0][:, i, j], base[:, i, j])


def test_the_parents_codes_are_computed_once_and_kept_in_the_prior_run(runs, tmp_path):
    from tinyvae import data
    kept = checkpoint.load(runs / "prior" / "derived-train.safetensors")
    parent, run_options = T.load_model(str(runs / "vq"))
    train = T.load_split(run_options, "train")
    assert np.array_equal(kept["fields"]["codes_0"], parent.codes(train.x)[0])
    prior, _ = T.load_model(str(runs / "prior"))
    calls = []

    class Counting:
        def derived(self, split, rng):
            calls.append(len(split))
            return prior.derived(split, rng)

    shutil.copy(runs / "prior" / "derived-train.safetensors", tmp_path)
    again = T.with_derived(Counting(), train, 6, str(tmp_path), "train")
    assert calls == [] and np.array_equal(again.fields["codes_0"], kept["fields"]["codes_0"])
    other = data.Split(train.spec, train.x[::-1].copy(), train.y[::-1].copy())     # other data: computed anew
    assert np.array_equal(T.with_derived(Counting(), other, 6, str(tmp_path), "train").fields["codes_0"],
                          kept["fields"]["codes_0"][::-1])
    assert calls == [len(train)]
    assert T.with_derived(Counting(), train, 6, str(tmp_path), "train", reuse=False) and calls == [128, 128]
