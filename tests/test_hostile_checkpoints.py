"""Checkpoints edited by hand or by an attacker (issue 14, case 1): the checksum covers the
metadata too; every value read back is checked for type and range; shapes and dtypes are
compared with the model's before anything is allocated; each failure is one line, exit 1."""
import json
import shutil
import tracemalloc

import numpy as np
import pytest

from tinyvae import checkpoint, cli

SMALL = ["--train-size", "128", "--test-size", "32", "--batch-size", "64", "--no-progress", "--seed", "2"]


def run(*argv):
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "run"
    assert run("train", "--epochs", 1, "--latent-dim", 3, "--out", out, *SMALL) == 0
    return out


def edited(trained, tmp_path, edit):
    """A copy of the run whose checkpoint went through ``edit(state)`` and was saved again
    (so its checksum is valid: only the checks of values stand in the way)."""
    out = tmp_path / "edited"
    shutil.copytree(trained, out)
    state = checkpoint.load(out / "checkpoint.safetensors")
    edit(state)
    checkpoint.save(out / "checkpoint.safetensors", state)
    return out


def refused(capsys, code, pattern):
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.count("\n") == 1 and err.startswith("tinyvae: error:") and "Traceback" not in err, err
    assert pattern in err, err


def test_metadata_edited_with_the_arrays_checksum_kept_is_refused(trained, tmp_path, capsys):
    out = tmp_path / "tampered"
    shutil.copytree(trained, out)
    path = out / "checkpoint.safetensors"
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = json.loads(header["__metadata__"]["tinyvae.meta"])
    meta["epoch"] = 7
    header["__metadata__"]["tinyvae.meta"] = json.dumps(meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n:])
    refused(capsys, run("sample", out, "-o", tmp_path / "s.png"), "do not match its checksum")


def _set_option(key, value):
    return lambda state: state["model_config"]["options"].__setitem__(key, value)


@pytest.mark.parametrize("edit, pattern", [
    (_set_option("latent_dim", 0), "--latent-dim must be at least 1, got 0"),
    (_set_option("latent_dim", "3"), "--latent-dim must be int, got '3'"),
    (_set_option("arch", "resnet"), "--arch must be one of mlp, conv"),
    (_set_option("depth", 3), "unexpected keyword argument 'depth'"),
    (lambda s: s.pop("model_config"), "the model record (name and options) is missing"),
    (lambda s: s.__setitem__("model_config", ["vae"]), "the model record (name and options) is missing"),
    (lambda s: s["model_config"].__setitem__("name", "gan"), "unknown model 'gan'"),
    (lambda s: s.__setitem__("epoch", "1"), "epoch '1' is not a positive integer"),
    (lambda s: s.__setitem__("step", -1), "step -1 is not a non-negative integer"),
    (lambda s: s["run"].__setitem__("batch_size", 0), "--batch-size must be at least 1"),
    (lambda s: s["run"].__setitem__("dataset", "cifar"), "--dataset must be one of"),
    (lambda s: s["rng"]["state"].__setitem__("state", -5), "its generator state is invalid"),
    (lambda s: s.__setitem__("rng", {"bit_generator": "MT19937"}), "its generator state is invalid"),
    (lambda s: s["history"][0].__setitem__("epoch", 4), "its metrics history has epochs [4]"),
    (lambda s: s["model"].__setitem__("encoder.0.weight", s["model"]["encoder.0.weight"].astype(np.int32)),
     "dtype mismatch ['encoder.0.weight: checkpoint int32 vs model float32']"),
    (lambda s: s["model"].__setitem__("encoder.0.bias", np.zeros(7, np.float32)),
     "shape mismatch ['encoder.0.bias: checkpoint (7,) vs model (200,)']"),
    (lambda s: s["model"]["decoder.0.bias"].__setitem__(0, np.nan), "its model has 1 non-finite weights"),
])
@pytest.mark.parametrize("command", ["sample", "resume"])
def test_every_value_is_checked_and_refused_in_one_line(trained, tmp_path, capsys, edit, pattern, command):
    out = edited(trained, tmp_path, edit)
    argv = (["sample", out, "-o", tmp_path / "s.png"] if command == "sample"
            else ["train", "--resume", "--out", out, "--epochs", 2, "--no-progress"])
    refused(capsys, run(*argv), pattern)


def test_an_optimizer_state_of_the_wrong_dtype_is_refused_on_resume(trained, tmp_path, capsys):
    def edit(state):
        buffers = state["optimizers"]["model"]["buffers"][0]
        buffers["m"] = buffers["m"].astype(np.float64)
    out = edited(trained, tmp_path, edit)
    refused(capsys, run("train", "--resume", "--out", out, "--epochs", 2, "--no-progress"),
            "buffer 'm' is (200, 784) float64, parameter is (200, 784) float32")


@pytest.mark.parametrize("latent_dim", [10 ** 6, 10 ** 9])
def test_a_huge_latent_dim_in_the_metadata_costs_no_memory(trained, tmp_path, capsys, latent_dim):
    """Before: 10^6 allocated 4.6 GB for 15 s before a shape error, 10^9 ended in a traceback
    (1.46 TiB). Now the model is built from placeholders and refused when its shapes do not
    fit the arrays present: the whole command allocates about the checkpoint's own size (its
    arrays are read once, tensor by tensor from a memory map)."""
    out = edited(trained, tmp_path, _set_option("latent_dim", latent_dim))
    tracemalloc.start()
    try:
        code = run("sample", out, "-o", tmp_path / "s.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    refused(capsys, code, "the checkpoint's model does not fit its record: load_state_dict: shape mismatch")
    size = (out / "checkpoint.safetensors").stat().st_size
    assert peak < size + 1e6, f"peak {peak / 1e6:.1f} MB for a file of {size / 1e6:.1f} MB"


def test_a_checkpoint_file_given_as_the_run_folder_is_named(trained, capsys):
    refused(capsys, run("sample", trained / "checkpoint.safetensors"),
            f"is a checkpoint file; give its run folder: {trained}")
