"""The tinyvae command: a smoke training run on a slice of MNIST, exact resume, determinism,
evaluation output, pictures, and every error path (one line, no traceback)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinyvae import cli, data
from tinyvae import objectives as O
from tinyvae import train as T

SMALL = ["--train-size", "256", "--test-size", "64", "--batch-size", "64", "--no-progress"]


def run(*argv):
    return cli.main([str(a) for a in argv])


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_time(records):
    return [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in records]


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
    for name in ("checkpoint.safetensors", "config.json", "samples.png", "reconstructions.png"):
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
    assert run("eval", trained, "--iwae-k", 5, "--test-size", 32, "--json", "--fd-samples", 0) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"test_elbo", "test_recon", "test_kl", "test_nll_iwae", "iwae_k", "active_units", "kl_per_dim",
                           "total_correlation"}
    assert result["total_correlation"] > -0.5    # an estimate of a KL: ≥ 0 up to the estimator's bias
    assert result["test_elbo"] < 0 and result["iwae_k"] == 5
    assert len(result["kl_per_dim"]) == 50 and sum(result["kl_per_dim"]) == pytest.approx(result["test_kl"], rel=1e-5)
    assert result["test_nll_iwae"] <= -result["test_elbo"] + 1.0   # IWAE bound is tighter than the ELBO
    assert run("eval", trained, "--iwae-k", 2, "--test-size", 16, "--fd-samples", 0) == 0
    assert "NLL, IWAE K=2" in capsys.readouterr().out


def test_eval_reports_sample_fd_for_models_that_sample(trained, tmp_path, capsys, monkeypatch):
    from tinyvae import quality
    monkeypatch.setenv("HOME", str(tmp_path))                       # the classifier cache
    real = quality.train_classifier
    monkeypatch.setattr(quality, "train_classifier",
                        lambda dataset, data_dir=None, log=print: real(dataset, data_dir, epochs=1, train_size=1024,
                                                                       log=log))
    assert run("eval", trained, "--iwae-k", 2, "--test-size", 200, "--json", "--fd-samples", 300) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert result["fd_samples"] == 300 and 0 < result["sample_fd"] < 1e4
    assert "training the mnist feature classifier" in out.err
    assert run("train", "--model", "ae", "--epochs", 1, "--out", tmp_path / "ae", *SMALL) == 0
    capsys.readouterr()
    assert run("eval", tmp_path / "ae", "--test-size", 50, "--json", "--fd-samples", 300) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"test_recon", "active_units"}
    assert run("train", "--model", "m2", "--labels", 20, "--hidden", 20, "--epochs", 1, "--out", tmp_path / "m2",
               *SMALL) == 0
    capsys.readouterr()
    assert run("eval", tmp_path / "m2", "--test-size", 50, "--json", "--fd-samples", 200) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"test_elbo", "test_accuracy", "sample_fd", "cond_sample_accuracy", "fd_samples"}
    assert 0 <= result["cond_sample_accuracy"] <= 1


@pytest.mark.parametrize("command, count", [("sample", "--n"), ("reconstruct", "--n"), ("manifold", "--grid"),
                                            ("interpolate", "--pairs"), ("traverse", "--dims")])
@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG")])
def test_picture_commands_write_the_format_their_suffix_names(trained, tmp_path, command, count, suffix, fmt, capsys):
    target = tmp_path / f"{command}{suffix}"
    assert run(command, trained, "-o", target, count, 4) == 0
    with Image.open(target) as img:
        assert img.format == fmt and min(img.size) >= 56
    assert f"wrote {target}" in capsys.readouterr().out


def test_traverse_rows_are_the_dimensions_by_kl_each_varied_alone(trained, tmp_path, capsys):
    """Rows in the order of the run's last kl_per_dim (largest first); within a row only that
    dimension moves, from −3 to 3, the rest at one test image's posterior mean."""
    from tinyvae import pictures, saved_run
    state = saved_run.load(str(trained))
    kl = state["history"][-1]["kl_per_dim"]
    assert run("traverse", trained, "-o", tmp_path / "t.png", "--dims", 3) == 0
    expected = [int(d) for d in np.argsort(-np.asarray(kl), kind="stable")[:3]]
    assert f"rows: latent dimensions {', '.join(map(str, expected))}, each from -3 to 3" in capsys.readouterr().out
    model = saved_run.build_model(state).eval()
    seen = []
    decode = model.decode
    model.decode = lambda z: (seen.append(z.copy()), decode(z))[1]
    split = T.load_split(T.run_options(state["run"]), "test")
    pictures.traverse_picture(model, split, np.asarray(expected), rows=3, rng=np.random.default_rng(0))
    z = seen[0].reshape(3, 9, -1)
    for row, dim in enumerate(expected):
        others = np.delete(z[row], dim, axis=1)
        assert np.array_equal(z[row, :, dim], np.linspace(-3, 3, 9)) and (others == others[0]).all()


def test_reconstruct_draws_what_training_draws_by_default(trained, tmp_path):
    assert run("reconstruct", trained, "-o", tmp_path / "r.png") == 0
    with Image.open(tmp_path / "r.png") as mine, Image.open(trained / "reconstructions.png") as training:
        assert mine.size == training.size


@pytest.mark.parametrize("argv, pattern", [
    (["-o", "{tmp}/x.gif"], "cannot write {tmp}/x.gif: name a .png, .jpg or .jpeg file"),
    (["-o", "{tmp}"], "cannot write {tmp}: it is a folder"),
    (["--n", "100000"], "argument --n: must be from 1 to 1024 (the picture would be too large to open), got 100000"),
])
def test_picture_outputs_are_checked_before_any_work(trained, tmp_path, capsys, argv, pattern):
    argv = [a.format(tmp=tmp_path.as_posix()) for a in argv]
    try:
        code = run("sample", trained, *argv)
    except SystemExit as e:
        code = e.code
    one_line_error(capsys, code, 2, pattern.format(tmp=tmp_path.as_posix()))


def test_version_help_texts_and_examples(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip().startswith("tinyvae 0.")
    import argparse
    parser = cli._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                    or action.dest in {f.name for f in cli.fields(cli.T.RunOptions)}:
                assert "default" in action.help, f"{name} {action.option_strings}: no default in its help"
        if name != "models":
            assert "example" in (sub.epilog or ""), f"{name} has no example"


def test_evaluation_says_what_it_is_doing_without_a_terminal(trained, capsys):
    assert run("eval", trained, "--iwae-k", 3, "--test-size", 20, "--fd-samples", 0) == 0
    err = capsys.readouterr().err
    assert "test metrics (IWAE K=3) on 20 images: started (1 batches)" in err and "done in" in err


def test_a_kl_warm_up_longer_than_the_run_is_said(tmp_path, capsys):
    assert run("train", "--epochs", 2, "--kl-anneal", "linear", "--out", tmp_path, *SMALL) == 0
    out = capsys.readouterr().out
    assert "note: --kl-anneal linear warms up over 10000 steps, but the run has 8: the KL weight will end at 0.0008" in out
    assert "epoch 1/2:" in out and "left)" in out


def test_ae_and_conv_models_train(tmp_path, capsys):
    assert run("train", "--model", "ae", "--arch", "conv", "--epochs", 1, "--out", tmp_path / "ae", *SMALL) == 0
    record = metrics(tmp_path / "ae")[0]
    assert "test_recon" in record and "test_kl" not in record and "test_elbo" not in record
    assert not (tmp_path / "ae" / "samples.png").exists() and (tmp_path / "ae" / "reconstructions.png").is_file()
    one_line_error(capsys, run("sample", tmp_path / "ae", "-o", tmp_path / "s.png"), 2,
                   "model 'ae' cannot sample: it has no sample")
    assert run("train", "--model", "conv", "--epochs", 1, "--out", tmp_path / "conv", "--latent-dim", 2, *SMALL) == 0
    assert run("manifold", tmp_path / "conv", "-o", tmp_path / "m.png", "--grid", 5) == 0


def test_training_options_are_applied(tmp_path):
    assert run("train", "--epochs", 1, "--out", tmp_path / "a", "--kl-anneal", "linear", "--warmup-steps", 100,
               "--free-bits", 0.1, "--beta", 0.5, *SMALL) == 0
    assert metrics(tmp_path / "a")[0]["kl_weight"] == pytest.approx(0.5 * 3 / 100)


def test_iwae_training_refuses_the_elbo_only_options(tmp_path, capsys):
    code = run("train", "--epochs", 1, "--out", tmp_path / "a", "--iwae-k", 2, "--beta", 0.5, *SMALL)
    one_line_error(capsys, code, 2, "--iwae-k > 1 trains the IWAE bound, which has no β")


def test_iwae_lr_schedule_is_applied_and_kept_on_resume(tmp_path, capsys):
    out = tmp_path / "staged"
    assert run("train", "--epochs", 2, "--out", out, "--lr", 0.01, "--lr-schedule", "iwae", *SMALL) == 0
    assert [r["lr"] for r in metrics(out)] == pytest.approx([0.01, 0.01 * 10 ** (-1 / 7)])
    code = run("train", "--epochs", 3, "--out", out, "--lr-schedule", "constant", "--resume")
    one_line_error(capsys, code, 1, "was trained with --lr-schedule iwae, this command asks for --lr-schedule constant")
    assert run("train", "--epochs", 3, "--out", out, "--resume") == 0         # every option from the run
    assert [r["lr"] for r in metrics(out)][2] == pytest.approx(0.01 * 10 ** (-1 / 7))


def one_line_error(capsys, code, expected_code, pattern):
    err = capsys.readouterr().err
    assert code == expected_code
    assert err.count("\n") == 1 and err.startswith("tinyvae: error:") and "Traceback" not in err
    assert pattern in err, err
    return err


@pytest.mark.parametrize("argv, pattern", [
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--epochs", "-3"], "--epochs must be at least 1, got -3"),
    (["train", "--epochs", "two"], "invalid int value: 'two'"),
    (["train", "--lr", "0"], "--lr must be positive"),
    (["train", "--lr", "nan"], "--lr must be a finite number"),
    (["train", "--beta", "nan"], "--beta must be a finite number"),
    (["train", "--resume"], "--resume continues the run in --out with its own options: give --out RUN"),
    (["train", "--model", "ae", "--beta", "2"], "model 'ae' does not take --beta (its options: --arch, --code-penalty, --latent-dim)"),
    (["train", "--model", "conv", "--arch", "mlp"], "--model conv means --model vae --arch conv"),
    (["train", "--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
    (["sample", "x", "--n", "0"], "argument --n: must be from 1 to 1024"),
    (["sample", "x", "--n", "abc"], "argument --n: invalid integer value: 'abc'"),
    (["eval", "x", "--seed", "-1"], "argument --seed: must be at least 0, got -1"),
    (["train", "--seed", "-1"], "--seed must be at least 0, got -1"),
    (["sample"], "the following arguments are required: RUN"),
    (["train", "--model", "hvae", "--residual", "maybe"], "argument --residual: invalid boolean value: 'maybe'"),
    (["sweep", "--beta", "1"], "give exactly one option several comma-separated values to sweep"),
    (["sweep", "--beta", "1,2", "--lr", "0.1,0.2"], "(got several: --beta, --lr)"),
    (["sweep", "--beta", "1,x"], "argument --beta: invalid float value: 'x'"),
    (["sweep", "--beta", "1,-2"], "--beta must be at least 0.0, got -2.0"),
    (["sweep", "--posterior", "full,spherical"], "argument --posterior: invalid choice: 'spherical'"),
    (["sweep", "--model", "vqvae", "--beta", "0.25,1"], "model 'vqvae' reports no test_kl, test_recon"),
    (["sweep", "--model", "ae", "--beta", "1,2"], "model 'ae' does not take --beta"),
])
def test_bad_arguments_get_one_line(argv, pattern, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = None
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    one_line_error(capsys, code, 2, pattern)
    assert list(tmp_path.iterdir()) == []                     # refused before any run folder is made


def test_missing_checkpoint(tmp_path, capsys):
    one_line_error(capsys, run("sample", tmp_path / "nothing"), 1, "no checkpoint in")


def test_checkpoint_from_another_model_is_refused(trained, tmp_path, capsys):
    import shutil
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    code = run("train", "--model", "conv", "--epochs", 5, "--out", out, "--seed", 1, "--resume", *SMALL)
    one_line_error(capsys, code, 1, "was trained with --arch mlp, this command asks for --arch conv")
    code = run("train", "--model", "ae", "--epochs", 5, "--out", out, "--seed", 1, "--resume", *SMALL)
    one_line_error(capsys, code, 1, "was trained with --model vae, this command asks for --model ae")


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
    monkeypatch.setattr(O, "training_loss", lambda *a, **k: real(*a, **k) * float("nan"))   # the vae's loss
    code = run("train", "--epochs", 2, "--out", out, "--resume", *SMALL)
    err = one_line_error(capsys, code, 1, "non-finite")
    assert "the last checkpoint written (epoch 1, every weight finite) is intact" in err
    assert (out / "checkpoint.safetensors").read_bytes() == before
    assert len(metrics(out)) == 1


def test_console_script_and_module_entry_points(tmp_path):
    for argv in (["tinyvae", "--help"], [sys.executable, "-m", "tinyvae", "--help"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "train" in done.stdout and "manifold" in done.stdout
    done = subprocess.run([sys.executable, "-m", "tinyvae", "eval", str(tmp_path / "none")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("tinyvae: error: no checkpoint")


def test_models_lists_every_model_and_option(capsys):
    from dataclasses import fields

    from tinyvae import models
    assert run("models") == 0
    text = capsys.readouterr().out
    assert run("models", "--json") == 0
    listing = json.loads(capsys.readouterr().out)
    assert sorted(listing["models"]) == models.names()
    assert listing["aliases"]["conv"] == {"model": "vae", "options": {"arch": "conv"}}
    for name in models.names():
        cls = models.get(name)
        assert f"{name:<6} {cls.description}" in text
        assert list(listing["models"][name]["options"]) == [f.name for f in fields(cls.Options)]
    assert listing["models"]["ae"]["capabilities"] == ["encode", "decode", "reconstruct"]
    assert "sample" in listing["models"]["vae"]["capabilities"]


def test_train_help_shows_every_option_of_every_model():
    from dataclasses import fields

    from tinyvae import models
    from tinyvae.train import RunOptions
    done = subprocess.run([sys.executable, "-m", "tinyvae", "train", "--help"], capture_output=True, text=True,
                          timeout=120)
    flags = {"--" + f.name.replace("_", "-") for name in models.names() for f in fields(models.get(name).Options)}
    flags |= {"--" + f.name.replace("_", "-") for f in fields(RunOptions)}
    assert done.returncode == 0 and all(f in done.stdout for f in flags), sorted(f for f in flags
                                                                               if f not in done.stdout)


def test_config_json_records_the_run_and_reproduces_it(trained, tmp_path):
    record = json.loads((trained / "config.json").read_text())
    assert record["model"] == "vae" and record["model_options"]["arch"] == "mlp"
    assert record["model_options"]["latent_dim"] == 50 and record["run"]["seed"] == 1
    assert record["run"]["epochs"] == 3 and record["run"]["train_size"] == 256
    env = record["environment"]
    assert env["kernels_target"] in ("avx512", "avx2", "sse2") and env["simd_bits"] in (128, 256, 512)
    assert {"tinyvae", "numpy", "numba", "processor", "git_commit"} <= set(env)
    assert record["command"][:2] == ["tinyvae", "train"]
    assert run("train", "--config", trained / "config.json", "--out", tmp_path / "again", "--no-progress") == 0
    assert without_time(metrics(tmp_path / "again")) == without_time(metrics(trained))
    assert run("train", "--config", trained / "config.json", "--epochs", 1, "--out", tmp_path / "short",
               "--no-progress") == 0
    assert without_time(metrics(tmp_path / "short")) == without_time(metrics(trained))[:1]


@pytest.mark.parametrize("content, pattern", [
    ("{not json", "is not valid JSON"),
    ('{"model": 3}', "is not a tinyvae config.json"),
    ('{"model": "gan", "model_options": {}, "run": {}}', "unknown model 'gan'"),
])
def test_bad_config_json_is_refused_in_one_line(tmp_path, capsys, content, pattern):
    path = tmp_path / "config.json"
    path.write_text(content)
    one_line_error(capsys, run("train", "--config", path, "--out", tmp_path / "run", *SMALL), 2, pattern)
    assert not (tmp_path / "run").exists()


def test_checkpoints_from_before_model_families_still_load(tmp_path, capsys):
    """The layout of checkpoints written before model families: model kind and preset, one
    optimizer, one config holding the trainer's and the VAE's options."""
    from tinyvae import checkpoint, models, optim
    model = models.build("vae", {"arch": "mlp", "latent_dim": 4})
    opt = optim.Adam(model.parameters(), lr=1e-3)
    old_config = {"model": "mlp", "dataset": "mnist", "epochs": 1, "batch_size": 64, "lr": 1e-3,
                  "lr_schedule": "constant", "beta": 2.0, "kl_anneal": "none", "warmup_steps": 10000,
                  "free_bits": 0.0, "iwae_k": 1, "latent_dim": 4, "seed": 1, "device": "cpu", "train_size": 256,
                  "test_size": 64, "data_dir": None}
    checkpoint.save(tmp_path / "checkpoint.safetensors", {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1, "step": 4,
        "rng": np.random.default_rng(0).bit_generator.state, "config": old_config,
        "model_config": {"kind": "VAE", "preset": "mlp", "latent_dim": 4}})
    assert run("sample", tmp_path, "-o", tmp_path / "s.png", "--n", 4) == 0
    assert run("train", "--epochs", 2, "--out", tmp_path, "--resume") == 0
    assert [r["epoch"] for r in metrics(tmp_path)] == [2]


def test_a_manifold_of_a_one_dimensional_latent_is_refused_in_one_line(tmp_path, capsys):
    assert run("train", "--epochs", 1, "--latent-dim", 1, "--out", tmp_path, *SMALL) == 0
    capsys.readouterr()
    one_line_error(capsys, run("manifold", tmp_path, "-o", tmp_path / "m.png"), 2,
                   "a manifold needs a latent of at least 2 dimensions; this model's has 1")


def test_a_sweep_is_runs_equal_to_single_runs_and_continues_when_run_again(tmp_path, capsys):
    """Each value's run folder holds what ``train`` with that value writes (the same metrics
    and weights); sweep.jsonl has the last epoch's test metrics of each; run again with more
    epochs, the sweep resumes each run rather than starting over."""
    sweep = ["sweep", "--beta", "0.5,2", "--latent-dim", 3, "--out", tmp_path / "sweep", "--seed", 3, *SMALL]
    assert run(*sweep, "--epochs", 1) == 0
    assert run("train", "--beta", 2, "--latent-dim", 3, "--out", tmp_path / "single", "--seed", 3, "--epochs", 1,
               *SMALL) == 0
    assert without_time(metrics(tmp_path / "sweep" / "beta-2")) == without_time(metrics(tmp_path / "single"))
    swept, single = (T.saved_run.load(tmp_path / d) for d in ("sweep/beta-2", "single"))
    assert all(np.array_equal(swept["model"][k], single["model"][k]) for k in single["model"])
    with open(tmp_path / "sweep" / "sweep.jsonl") as f:
        points = [json.loads(line) for line in f]
    assert [p["beta"] for p in points] == [0.5, 2.0]
    assert points[1]["test_kl"] == metrics(tmp_path / "single")[-1]["test_kl"]
    assert "total_correlation" in points[1]
    with Image.open(tmp_path / "sweep" / "rate_distortion.png") as img:
        assert img.size[0] > 500
    assert run(*sweep, "--epochs", 2) == 0
    assert [r["epoch"] for r in metrics(tmp_path / "sweep" / "beta-0.5")] == [1, 2]
    assert run("train", "--resume", "--out", tmp_path / "single", "--epochs", 2) == 0
    assert without_time(metrics(tmp_path / "sweep" / "beta-2")) == without_time(metrics(tmp_path / "single"))
    capsys.readouterr()
    assert run(*sweep, "--epochs", 2, "--lr", 0.01) == 1
    one_line_error(capsys, 1, 1, "cannot resume: the run in")


def test_a_boolean_option_reads_the_word_typed():
    parser = cli._parser()
    for word, value in (("false", False), ("False", False), ("no", False), ("true", True), ("1", True)):
        args = parser.parse_args(["train", "--model", "hvae", "--residual", word])
        assert cli.train_request(args)[1]["residual"] is value
