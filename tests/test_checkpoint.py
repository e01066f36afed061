"""Checkpoint files: bit-exact round trips, atomic writes, and rejection of bad files."""
import os

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import nn, optim


def sample_state():
    tv.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt = optim.Adam(model.parameters())
    model(tv.tensor(np.ones((2, 4)))).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 7,
            "rng": np.random.default_rng(5).bit_generator.state, "config": {"lr": 1e-3, "name": "mlp"}}


def test_round_trip_is_bit_exact(tmp_path):
    state = sample_state()
    path = tmp_path / "ckpt.safetensors"
    tv.save(path, state)
    back = tv.load(path)
    for k, v in state["model"].items():
        assert back["model"][k].dtype == v.dtype
        np.testing.assert_array_equal(back["model"][k], v)
    for b_back, b in zip(back["optimizer"]["buffers"], state["optimizer"]["buffers"]):
        for k in b:
            np.testing.assert_array_equal(b_back[k], b[k])
    assert back["step"] == 7 and back["config"] == {"lr": 1e-3, "name": "mlp"}
    g = np.random.default_rng()
    g.bit_generator.state = back["rng"]
    assert g.random() == np.random.default_rng(5).random()


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    tv.save(path, {"a": np.arange(3)})
    original = path.read_bytes()

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        tv.save(path, {"a": np.arange(5)})
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["ckpt"]


def test_truncated_file_is_rejected(tmp_path):
    path = tmp_path / "ckpt"
    tv.save(path, sample_state())
    blob = path.read_bytes()
    for cut in (4, 100, len(blob) - 10):
        path.write_bytes(blob[:cut])
        with pytest.raises(tv.CheckpointError, match="truncated or corrupt"):
            tv.load(path)


def test_altered_array_bytes_are_rejected(tmp_path):
    path = tmp_path / "ckpt"
    tv.save(path, {"w": np.zeros(64, np.float32)})
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(tv.CheckpointError, match="its contents do not match its checksum"):
        tv.load(path)


def test_missing_and_foreign_files_are_rejected(tmp_path):
    with pytest.raises(tv.CheckpointError, match="not found"):
        tv.load(tmp_path / "nope")
    from safetensors.numpy import save_file
    save_file({"x": np.zeros(2)}, str(tmp_path / "foreign"))
    with pytest.raises(tv.CheckpointError, match="not a tinyvae checkpoint"):
        tv.load(tmp_path / "foreign")
    (tmp_path / "pickle").write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    with pytest.raises(tv.CheckpointError):
        tv.load(tmp_path / "pickle")


def test_wrong_shape_in_checkpoint_is_rejected_by_the_model(tmp_path):
    path = tmp_path / "ckpt"
    tv.save(path, {"model": nn.Linear(4, 3).state_dict()})
    with pytest.raises(ValueError, match=r"weight: checkpoint \(3, 4\) vs model \(2, 4\)"):
        nn.Linear(4, 2).load_state_dict(tv.load(path)["model"])


def test_unsupported_values_are_refused():
    with pytest.raises(TypeError, match="cannot store object"):
        tv.save("/tmp/never-written", {"bad": object()})
