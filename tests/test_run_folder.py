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
    return [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in records]


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
    assert run("train", "--epochs", 3, "--out", tmp_path, "--beta", 2, "--overwrite", *SMALL) == 1
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


# ---- diverging runs (case 2) -------------------------------------------------------------------

def one_line(capsys, code, expected_code, pattern):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.count("\n") == 1 and err.startswith("tinyvae: error:") and "Traceback" not in err, err
    assert pattern in err, err
    return err


def test_an_update_that_makes_weights_non_finite_is_never_saved(tmp_path, monkeypatch, capsys):
    """The last step of epoch 2 diverges (NaN written by the update): the run stops, epoch 2's
    checkpoint is never written, and the message names the checkpoint really on disk."""
    from tinyvae import optim
    real = optim.Adam.update

    def diverging(self, p, g, buf):
        real(self, p, g, buf)
        if self.steps == 4:                     # 2 steps per epoch: the last step of epoch 2
            p.data[...] = np.nan
    monkeypatch.setattr(optim.Adam, "update", diverging)
    code = run("train", "--epochs", 3, "--out", tmp_path, *SMALL)
    one_line(capsys, code, 1, "the update made")
    assert [r["epoch"] for r in lines(tmp_path)] == [1]
    state = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert state["epoch"] == 1 and all(np.isfinite(a).all() for a in state["model"].values())


def test_an_update_that_makes_weights_non_finite_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    from tinyvae import optim
    real = optim.Adam.update

    def diverging(self, p, g, buf):
        real(self, p, g, buf)
        if self.steps == 4:
            p.data[...] = np.inf
    monkeypatch.setattr(optim.Adam, "update", diverging)
    one_line(capsys, run("train", "--epochs", 3, "--out", tmp_path, *SMALL), 1,
             "at epoch 2, step 4; training stopped and the last checkpoint written (epoch 1, every weight finite) "
             "is intact")


def test_a_loss_that_explodes_but_stays_finite_stops_the_run(tmp_path, capsys):
    """--lr 1e4: the loss reaches ~1e12 and stays finite; before, the run went on to the end."""
    code = run("train", "--epochs", 30, "--lr", 1e4, "--out", tmp_path, *SMALL)
    err = one_line(capsys, code, 1, "the loss stayed above 100 x its running median")
    assert "for 10 steps" in err and "the run diverged" in err
    assert len(lines(tmp_path)) < 30


def test_the_divergence_guard_can_be_turned_off(tmp_path, capsys):
    assert run("train", "--epochs", 2, "--lr", 1e4, "--divergence-factor", 0, "--out", tmp_path, *SMALL) == 0


def test_updates_with_outsized_gradients_are_skipped_and_counted(tmp_path, capsys):
    assert run("train", "--epochs", 1, "--skip-grad-norm", 1e12, "--out", tmp_path / "big", *SMALL) == 0
    assert lines(tmp_path / "big")[0]["skipped_steps"] == 0
    code = run("train", "--epochs", 1, "--skip-grad-norm", 1e-9, "--out", tmp_path / "tiny", *SMALL)
    out = capsys.readouterr()
    assert code == 1 and "update skipped, gradient norm" in out.out
    assert "every update of the epoch was skipped" in out.err and out.err.count("\n") == 1


def test_guards_count_non_finite_numbers_and_measure_the_gradient():
    from tinyvae.guards import DivergenceGuard, count_non_finite, grad_norm
    a = np.ones(10, np.float32)
    a[[2, 5]] = [np.nan, -np.inf]
    assert count_non_finite([a, np.ones(3), np.full(4, 3e38, np.float32)]) == 2   # an overflowing sum is not a NaN
    p, q = tv.tensor(np.zeros(2), requires_grad=True), tv.tensor(np.zeros(1), requires_grad=True)
    p.grad, q.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert grad_norm([p, q]) == 5.0
    guard = DivergenceGuard(factor=10, patience=3)
    assert [guard(v) for v in (100, 90, 95, 5000, 80)] == [None] * 5        # one spike: the streak restarts
    assert [guard(v) is not None for v in (5000, 5000, 5000)] == [False, False, True]


# ---- resume takes the run's own options (issue 15) and refuses early on a read-only folder ----

def test_resume_takes_every_option_from_the_run(tmp_path, capsys):
    out = tmp_path / "beta"
    assert run("train", "--epochs", 1, "--beta", 4, "--kl-anneal", "linear", "--warmup-steps", 100,
               "--free-bits", 0.5, "--latent-dim", 2, "--out", out, *SMALL) == 0
    assert run("train", "--resume", "--out", out, "--epochs", 2, "--no-progress") == 0
    first, second = lines(out)
    assert (first["kl_weight"], second["kl_weight"]) == pytest.approx((4 * 1 / 100, 4 * 3 / 100))  # β 4, annealed
    config = json.loads((out / "config.json").read_text())
    assert config["model_options"]["beta"] == 4 and config["model_options"]["free_bits"] == 0.5
    assert config["run"]["epochs"] == 2
    one_line(capsys, run("train", "--resume", "--out", out, "--epochs", 3, "--beta", 1), 1,
             "was trained with --beta 4.0, this command asks for --beta 1.0; leave it out to continue as trained")


def test_a_folder_that_holds_a_run_is_not_trained_over_without_overwrite(tmp_path, capsys):
    assert run("train", "--epochs", 1, "--out", tmp_path, *SMALL) == 0
    before = (tmp_path / "metrics.jsonl").read_bytes()
    one_line(capsys, run("train", "--epochs", 1, "--out", tmp_path, *SMALL), 1,
             f"{tmp_path} already holds a run; continue it with --resume --out {tmp_path}, replace it with --overwrite")
    assert (tmp_path / "metrics.jsonl").read_bytes() == before
    assert run("train", "--epochs", 1, "--out", tmp_path, "--overwrite", "--beta", 2, *SMALL) == 0


def test_the_default_run_folder_is_new_for_every_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run("train", "--epochs", 1, *SMALL) == 0
    made = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(made) == 1 and made[0].startswith("vae-mnist-")
    assert f"run folder: runs/{made[0]}" in capsys.readouterr().out


def _without_write_permission():
    """argv prefix under which root too obeys file permissions (setpriv drops the capabilities
    that let it ignore them); None where that cannot be arranged."""
    import shutil
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
    return None


def test_a_read_only_run_folder_fails_before_any_work(tmp_path):
    import subprocess
    import sys
    prefix = _without_write_permission()
    if prefix is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made here")
    assert run("train", "--epochs", 1, "--out", tmp_path / "ro", *SMALL) == 0
    os.chmod(tmp_path / "ro", 0o555)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "tinyvae", "train", "--resume", "--out", str(tmp_path / "ro"),
                               "--epochs", "2", "--no-progress"], capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == f"tinyvae: error: cannot write in {tmp_path / 'ro'}: Permission denied"
    assert "epoch 2" not in done.stdout


def test_interruption_messages_say_what_is_on_disk(tmp_path, monkeypatch, capsys):
    real = T._write_metrics

    def interrupt(out_dir, history):
        raise KeyboardInterrupt
    monkeypatch.setattr(T, "load_split", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run("train", "--epochs", 2, "--out", tmp_path / "a", *SMALL) == 130
    assert "no epoch was completed, so no checkpoint was written" in capsys.readouterr().err
    monkeypatch.undo()
    assert run("train", "--epochs", 1, "--out", tmp_path / "b", *SMALL) == 0
    monkeypatch.setattr(T, "_write_metrics", lambda out_dir, history: real(out_dir, history) if len(history) < 2
                        else interrupt(out_dir, history))
    assert run("train", "--resume", "--epochs", 2, "--out", tmp_path / "b", "--no-progress") == 130
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b'} holds the checkpoint of epoch 2; continue with: tinyvae train --resume" in err
    monkeypatch.setattr(T, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run("eval", tmp_path / "b", "--fd-samples", 0) == 130
    assert capsys.readouterr().err.strip() == "tinyvae: interrupted; nothing was written"


def test_options_beyond_float32_are_refused_up_front(tmp_path, capsys):
    one_line(capsys, run("train", "--free-bits", 1e300, "--out", tmp_path, *SMALL), 2,
             "--free-bits must be a finite number within float32's range, got 1e+300")
