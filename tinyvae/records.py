"""What a run folder records besides its checkpoint: ``config.json`` (every option, the model,
the data set, and where and with what the run was made), and the translation of checkpoints
written before model families into today's layout."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from typing import Optional

from .atomic import write_atomic
from .checkpoint import CheckpointError

CONFIG = "config.json"


def strict(value):
    """``value`` with every float that is not finite replaced by None (JSON's null), through
    lists and dicts: what tinyvae writes as JSON is strict JSON."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _git_commit() -> Optional[str]:
    """The commit of the tinyvae checkout this code runs from, if it is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment() -> dict:
    """Versions, the processor, and the target and vector width the kernels compiled for."""
    import numba
    import numpy

    from kernels._simd import VECTOR_BYTES
    from kernels.targets import current

    from . import __version__
    return {"tinyvae": __version__, "git_commit": _git_commit(), "python": platform.python_version(),
            "numpy": numpy.__version__, "numba": numba.__version__,
            "processor": platform.processor() or platform.machine(), "kernels_target": current(),
            "simd_bits": VECTOR_BYTES * 8}


def write_config(out_dir: str, model_config: dict, run: dict, command: Optional[list]) -> None:
    """out_dir/config.json: the model (name and every option), the trainer's options, a token
    data set's vocabulary, the environment, and the command line (``tinyvae train --config`` reads it back)."""
    record = {"model": model_config["name"], "model_options": model_config["options"], "run": run,
              **{key: model_config[key] for key in ("vocabulary",) if key in model_config},
              "environment": environment(), "command": list(command) if command is not None else sys.argv}
    write_atomic(os.path.join(out_dir, CONFIG), (json.dumps(record, indent=2) + "\n").encode())


def read_config(path: str) -> dict:
    """A config.json as written by ``write_config``; ValueError in one line if it is not one."""
    try:
        with open(path) as f:
            record = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not (isinstance(record, dict) and isinstance(record.get("model"), str)
            and isinstance(record.get("model_options"), dict) and isinstance(record.get("run"), dict)):
        raise ValueError(f"{path} is not a tinyvae config.json (expected model, model_options and run)")
    return record


_LEGACY_KINDS = {"VAE": "vae", "AE": "ae"}
_LEGACY_VAE_OPTIONS = ("beta", "kl_anneal", "warmup_steps", "free_bits", "iwae_k")


def upgrade(state: dict) -> dict:
    """A checkpoint in today's layout. Those written before model families held
    model_config = {kind, preset, latent_dim}, one ``optimizer`` and one ``config`` with the
    trainer's and the VAE's options together."""
    if "run" in state:
        return state
    old, config = state.get("model_config"), state.get("config")
    if not (isinstance(old, dict) and old.get("kind") in _LEGACY_KINDS and isinstance(config, dict)):
        raise CheckpointError("the checkpoint's model record is missing or not one tinyvae wrote")
    name = _LEGACY_KINDS[old["kind"]]
    options = {"arch": old.get("preset"), "latent_dim": old.get("latent_dim")}
    if name == "vae":
        options.update({key: config[key] for key in _LEGACY_VAE_OPTIONS if key in config})
    run = {key: value for key, value in config.items()
           if key not in _LEGACY_VAE_OPTIONS and key not in ("model", "latent_dim")}
    upgraded = {key: value for key, value in state.items() if key not in ("config", "optimizer")}
    upgraded.update(run=run, model_config={"name": name, "options": options},
                    optimizers={"model": state.get("optimizer")})
    return upgraded
