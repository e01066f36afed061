"""Run folders survive kills and careless users: an epoch is committed as one (checkpoint,
then the log rewritten from it), a fresh run leaves the old one intact until its own first
epoch is committed, one trainer at a time, no stale temporary files, strict JSON from eval,
and no model with non-finite weights loads."""
import json
import os

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import checkpoint, cli, run_folder
from tinyvae import objectives as O
from tinyvae import train as T

SMALL = ["--train-size", "128", "--test-size", "32", "--batch-size", "64", "--no-progress", "--seed", "4"]


def run(*argv):
    return cli.main([str(a) for a in argv])


def lines(path):
    with open(path / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_a_kill_between_checkpoint_and_log_leaves_a_consistent_folder(tmp_path, monkeypatch, capsys):
    assert run("train", "--epochs", 3, "--out", tmp_path / "whole", *SMALL) == 0
    real, calls = T._write_metrics, []

    def killed_after_the_second_checkpoint(out_dir, history):
        calls.append(len(history))
        if len(history) == 2:
            raise KeyboardInterrupt                 # the checkpoint of epoch 2 is written, its log line not
        real(out_dir, history)
    monkeypatch.setattr(T, "_write_metrics", killed_after_the_second_checkpoint)
    assert run("train", "--epochs", 3, "--out", tmp_path / "cut", *SMALL) == 130
    assert [r["epoch"] for r in lines(tmp_path / "cut")] == [1]
    monkeypatch.setattr(T, "_write_metrics", real)
    assert run("train", "--epochs", 3, "--out", tmp_path / "cut", "--resume", *SMALL) == 0
    assert without_time(lines(tmp_path / "cut")) == without_time(lines(tmp_path / "whole"))


def test_a_partial_last_line_is_gone_after_resume(tmp_path):
    assert run("train", "--epochs", 1, "--out", tmp_path, *SMALL) == 0
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')                # a full disk in the middle of a line
    assert run("train", "--epochs", 2, "--out", tmp_path, "--resume", *SMALL) == 0
    assert [r["epoch"] for r in lines(tmp_path)] == [1, 2]


def test_a_fresh_run_keeps_the_old_one_until_its_first_epoch_is_committed(tmp_path, monkeypatch, capsys):
    assert run("train", "--epochs", 2, "--out", tmp_path, *SMALL) == 0
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.jsonl", "checkpoint.safetensors",
                                                                 "config.json")}
    real = O.training_loss
    monkeypatch.setattr(O, "training_loss", lambda *a, **k: real(*a, **k) * float("nan"))
    assert run("train", "--epochs", 3, "--out", tmp_path, "--beta", 2, *SMALL) == 1
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_second_trainer_on_the_same_folder_is_refused(tmp_path, capsys):
    with run_folder.lock(str(tmp_path)):
        code = run("train", "--epochs", 1, "--out", tmp_path, *SMALL)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert f"is in use by another tinyvae train (process {os.getpid()})" in err
    assert run("train", "--epochs", 1, "--out", tmp_path, *SMALL) == 0      # released on exit


def test_stale_temporary_files_are_removed_when_a_trainer_starts(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / ".tmp-0123456789ab-checkpoint.safetensors"
    stale.write_bytes(b"x" * 1000)
    assert run("train", "--epochs", 1, "--out", tmp_path, *SMALL) == 0
    assert not stale.exists()


def test_eval_json_is_strict_and_non_finite_weights_are_refused(tmp_path, monkeypatch, capsys):
    assert run("train", "--epochs", 1, "--out", tmp_path, *SMALL) == 0
    capsys.readouterr()
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: {"test_elbo": float("-inf"), "test_kl": float("nan"),
                                                        "active_units": 3})
    assert run("eval", tmp_path, "--json", "--fd-samples", 0) == 0
    assert capsys.readouterr().out.strip() == '{"test_elbo": null, "test_kl": null, "active_units": 3}'
    state = checkpoint.load(tmp_path / "checkpoint.safetensors")
    state["model"]["encoder.0.weight"] = np.full_like(state["model"]["encoder.0.weight"], np.nan)
    checkpoint.save(tmp_path / "checkpoint.safetensors", state)
    assert run("sample", tmp_path, "-o", tmp_path / "s.png") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "non-finite weights" in err


@pytest.mark.parametrize("returns, named", [(3.0, "float"), (np.zeros(2), "ndarray"), (None, "NoneType"),
                                            ([None], "NoneType")])
def test_gradcheck_refuses_outputs_that_are_not_tensors(returns, named):
    x = tv.tensor(np.ones(2), dtype=np.float64, requires_grad=True)
    with pytest.raises(TypeError, match=f"must return a Tensor or a tuple of Tensors, got {named}"):
        tv.gradcheck(lambda t: returns, [x])
