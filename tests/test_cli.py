"""The tinyvae command: a smoke training run on a slice of MNIST, exact resume, determinism,
evaluation output, pictures, and every error path (one line, no traceback)."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from tinyvae import cli, data
from tinyvae import objectives as O

SMALL = ["--train-size", "256", "--test-size", "64", "--batch-size", "64", "--no-progress"]


def run(*argv):
    return cli.main([str(a) for a in argv])


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlp"
    assert run("train", "--epochs", 3, "--out", out, "--seed", 1, *SMALL) == 0
    return out


def test_smoke_training_writes_files_and_the_loss_falls(trained):
    records = metrics(trained)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["test_elbo"] > records[0]["test_elbo"]
    for key in ("train_recon", "train_kl", "test_elbo", "test_recon", "test_kl", "active_units", "seconds"):
        assert key in records[0]
    for name in ("checkpoint.safetensors", "samples.png", "reconstructions.png"):
        assert (trained / name).is_file()
    with Image.open(trained / "samples.png") as img:
        assert img.mode == "L" and img.size[0] > 200


def test_same_seed_gives_identical_metrics(trained, tmp_path):
    assert run("train", "--epochs", 3, "--out", tmp_path / "again", "--seed", 1, *SMALL) == 0
    assert without_time(metrics(tmp_path / "again")) == without_time(metrics(trained))


def test_resume_continues_exactly(trained, tmp_path):
    out = tmp_path / "resumed"
    assert run("train", "--epochs", 1, "--out", out, "--seed", 1, *SMALL) == 0
    assert run("train", "--epochs", 3, "--out", out, "--seed", 1, "--resume", *SMALL) == 0
    assert without_time(metrics(out)) == without_time(metrics(trained))


def test_eval_json_has_the_documented_keys(trained, capsys):
    assert run("eval", trained, "--iwae-k", 5, "--test-size", 32, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"test_elbo", "test_recon", "test_kl", "test_nll_iwae", "iwae_k", "active_units"}
    assert result["test_elbo"] < 0 and result["iwae_k"] == 5
    assert result["test_nll_iwae"] <= -result["test_elbo"] + 1.0   # IWAE bound is tighter than the ELBO
    assert run("eval", trained, "--iwae-k", 2, "--test-size", 16) == 0
    assert "NLL, IWAE K=2" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["sample", "reconstruct", "manifold", "interpolate"])
def test_picture_commands_write_pngs(trained, tmp_path, command, capsys):
    target = tmp_path / f"{command}.png"
    assert run(command, trained, "-o", target, "--n", 8) == 0
    with Image.open(target) as img:
        assert img.format == "PNG" and min(img.size) >= 56
    assert f"wrote {target}" in capsys.readouterr().out


def test_ae_and_conv_models_train(tmp_path):
    assert run("train", "--model", "ae", "--epochs", 1, "--out", tmp_path / "ae", *SMALL) == 0
    assert metrics(tmp_path / "ae")[0]["test_kl"] == 0
    assert run("train", "--model", "conv", "--epochs", 1, "--out", tmp_path / "conv", "--latent-dim", 2, *SMALL) == 0
    assert run("manifold", tmp_path / "conv", "-o", tmp_path / "m.png", "--n", 5) == 0


def test_training_options_are_applied(tmp_path):
    assert run("train", "--epochs", 1, "--out", tmp_path / "a", "--kl-anneal", "linear", "--warmup-steps", 100,
               "--free-bits", 0.1, "--iwae-k", 2, "--beta", 0.5, *SMALL) == 0
    assert metrics(tmp_path / "a")[0]["kl_weight"] == pytest.approx(0.5 * 3 / 100)


def test_iwae_lr_schedule_is_applied_and_kept_on_resume(tmp_path, capsys):
    out = tmp_path / "staged"
    assert run("train", "--epochs", 2, "--out", out, "--lr", 0.01, "--lr-schedule", "iwae", *SMALL) == 0
    assert [r["lr"] for r in metrics(out)] == pytest.approx([0.01, 0.01 * 10 ** (-1 / 7)])
    code = run("train", "--epochs", 3, "--out", out, "--lr", 0.01, "--resume", *SMALL)
    one_line_error(capsys, code, 1, "trained with lr_schedule='iwae', this run asks for 'constant'")


def one_line_error(capsys, code, expected_code, pattern):
    err = capsys.readouterr().err
    assert code == expected_code
    assert err.count("\n") == 1 and err.startswith("tinyvae: error:") and "Traceback" not in err
    assert pattern in err, err
    return err


@pytest.mark.parametrize("argv, pattern", [
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--epochs", "-3"], "must be a positive integer"),
    (["train", "--epochs", "two"], "invalid _positive_int value"),
    (["train", "--lr", "0"], "--lr must be positive"),
    (["sample"], "the following arguments are required: run_dir"),
])
def test_bad_arguments_get_one_line(argv, pattern, capsys):
    code = None
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    one_line_error(capsys, code, 2, pattern)


def test_missing_checkpoint(tmp_path, capsys):
    one_line_error(capsys, run("sample", tmp_path / "nothing"), 1, "no checkpoint in")


def test_checkpoint_from_another_model_is_refused(trained, tmp_path, capsys):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    code = run("train", "--model", "conv", "--epochs", 5, "--out", out, "--seed", 1, "--resume", *SMALL)
    one_line_error(capsys, code, 1, "was trained with model='mlp', this run asks for 'conv'")


def test_corrupt_checkpoint_is_refused(trained, tmp_path, capsys):
    import shutil
    out = tmp_path / "corrupt"
    shutil.copytree(trained, out)
    ckpt = out / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    one_line_error(capsys, run("sample", out, "-o", tmp_path / "x.png"), 1, "truncated or corrupt")


def test_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    from tinyvae import backend
    if backend.cuda_available():
        pytest.skip("a GPU is present: --device cuda is valid here")
    one_line_error(capsys, run("train", "--device", "cuda", "--out", tmp_path, *SMALL), 2, "needs CuPy and a CUDA GPU")


def test_missing_data_is_explained(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYVAE_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "MIRRORS", {"mnist": ["file:///no/such/mirror/"], "fashion-mnist": []})
    code = run("train", "--epochs", 1, "--out", tmp_path / "run", *SMALL)
    one_line_error(capsys, code, 1, "not found; looked in")


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(tmp_path, capsys, monkeypatch):
    out = tmp_path / "nan"
    assert run("train", "--epochs", 1, "--out", out, *SMALL) == 0
    before = (out / "checkpoint.safetensors").read_bytes()
    real = O.training_loss
    monkeypatch.setattr(O, "training_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    code = run("train", "--epochs", 2, "--out", out, "--resume", *SMALL)
    err = one_line_error(capsys, code, 1, "non-finite")
    assert "the last good checkpoint (epoch 1) is intact" in err
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert len(metrics(out)) == 1


def test_console_script_and_module_entry_points(tmp_path):
    for argv in (["tinyvae", "--help"], [sys.executable, "-m", "tinyvae", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "train" in done.stdout and "manifold" in done.stdout
    done = subprocess.run([sys.executable, "-m", "tinyvae", "eval", str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("tinyvae: error: no checkpoint")
