"""What a run draws (issue 15): learning curves, the latent scatter, the manifold with its axis
values, labelled reconstructions and per-epoch samples, each epoch and by ``tinyvae plot``;
TensorBoard logs read back from the event file; timestamps in metrics.jsonl."""
import json
import struct
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from tinyvae import cli, models, plots
from tinyvae.data import load_split

SMALL = ["--train-size", "128", "--test-size", "64", "--batch-size", "64", "--no-progress", "--seed", "3"]


def run(*argv):
    return cli.main([str(a) for a in argv])


def drawn(path):
    """The image as an array, and that it is not one flat colour."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), np.float64)
    assert pixels.std() > 2, f"{path} is blank"
    return pixels


@pytest.fixture(scope="module")
def two_d(tmp_path_factory):
    out = tmp_path_factory.mktemp("pictures") / "run"
    assert run("train", "--epochs", 2, "--latent-dim", 2, "--out", out, "--tensorboard", *SMALL) == 0
    return out


def test_every_epoch_writes_the_pictures(two_d):
    for name in ("learning_curves.png", "latent.png", "manifold.png", "reconstructions.png", "samples.png",
                 "samples_epoch001.png", "samples_epoch002.png"):
        drawn(two_d / name)
    assert drawn(two_d / "learning_curves.png").shape[1] >= 1000          # several panels side by side


def test_keep_samples_last_keeps_one(tmp_path):
    assert run("train", "--epochs", 2, "--keep-samples", "last", "--out", tmp_path, *SMALL) == 0
    assert (tmp_path / "samples.png").is_file() and not list(tmp_path.glob("samples_epoch*"))


def test_plot_command_draws_a_run_again(two_d, tmp_path, capsys):
    assert run("plot", two_d, "-o", tmp_path) == 0
    assert "learning_curves.png" in capsys.readouterr().out
    for name in ("learning_curves.png", "latent.png", "manifold.png", "reconstructions.png", "samples.png"):
        drawn(tmp_path / name)


def test_the_latent_scatter_says_what_its_axes_show(tmp_path):
    split = load_split("mnist", "test", 200)
    wide = models.build("vae", {"latent_dim": 5}, rng=np.random.default_rng(0))
    axes = plots.latent_scatter(wide, split, str(tmp_path / "wide.png"))
    assert axes.startswith("PC1 of the 5-D latent means (") and "% of variance" in axes
    flat = models.build("vae", {"latent_dim": 2}, rng=np.random.default_rng(0))
    assert plots.latent_scatter(flat, split, str(tmp_path / "flat.jpg")) == "z[0] / z[1]"   # as manifold.png names them
    with Image.open(tmp_path / "flat.jpg") as img:
        assert img.format == "JPEG"


def test_learning_curves_overlay_several_runs(two_d, tmp_path):
    history = [json.loads(line) for line in (two_d / "metrics.jsonl").read_text().splitlines()]
    other = [{**r, "train_loss": r["train_loss"] + 50} for r in history]
    plots.learning_curves({"a": history, "b": other}, str(tmp_path / "both.png"))
    drawn(tmp_path / "both.png")


def test_the_kl_of_each_latent_dimension_is_recorded_and_sums_to_the_kl(two_d):
    for line in (two_d / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert len(record["kl_per_dim"]) == 2
        assert sum(record["kl_per_dim"]) == pytest.approx(record["test_kl"], rel=1e-5)


def test_metrics_lines_carry_wall_clock_time(two_d):
    for line in (two_d / "metrics.jsonl").read_text().splitlines():
        stamp = datetime.strptime(json.loads(line)["time"], "%Y-%m-%dT%H:%M:%S%z")
        assert abs((datetime.now(stamp.tzinfo) - stamp).days) < 1


def events(folder):
    """Every Event in the TFRecord files of a TensorBoard folder: [length u64][crc u32][data][crc u32]."""
    from tensorboardX.proto import event_pb2
    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        blob, at = path.read_bytes(), 0
        while at < len(blob):
            (length,) = struct.unpack("<Q", blob[at:at + 8])
            event = event_pb2.Event()
            event.ParseFromString(blob[at + 12:at + 12 + length])
            found.append(event)
            at += 12 + length + 4
    return found


def test_tensorboard_logs_read_back(two_d):
    pytest.importorskip("tensorboardX", reason="the tensorboard extra is not installed")
    tags = {}
    for event in events(two_d / "tensorboard"):
        for value in event.summary.value:
            tags.setdefault(value.tag, []).append((event.step, value))
    steps = [step for step, _ in tags["step/loss"]]
    assert steps == [0, 1, 2, 3]                                   # 2 epochs of 2 steps
    first_loss = json.loads((two_d / "metrics.jsonl").read_text().splitlines()[0])["train_loss"]
    assert np.mean([v.simple_value for _, v in tags["step/loss"][:2]]) == pytest.approx(first_loss, rel=1e-5)
    assert [step for step, _ in tags["epoch/test_elbo"]] == [1, 2]
    assert {"samples", "reconstructions", "learning_curves", "latent", "manifold"} <= set(tags)
    assert tags["samples"][0][1].image.height > 100
    assert any(tag.startswith("config") for tag in tags)
