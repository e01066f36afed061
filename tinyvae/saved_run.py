"""A run's checkpoint, ``RUN/checkpoint.safetensors``: what the trainer saves after each epoch
(the model, the optimizers, the generator, every option, and every epoch's metrics), and the
check of every value read back.

``checkpoint.load`` verifies the file's checksum (arrays and metadata); here every value is
checked for type and range, and the model is built from placeholders (``nn.init.placeholders``)
that take the file's arrays only once their names, shapes and dtypes fit. So a damaged or
hostile checkpoint ends in one line (``CheckpointError``; the command exits 1) and costs no
more memory than its own size, whatever its metadata claims.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, fields

import numpy as np

from . import checkpoint, data, models, nn, records
from .checkpoint import CheckpointError
from .guards import count_non_finite
from .options import check
from .run_options import RunOptions, run_options

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"


def path_of(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT)


def save(run_dir: str, model, optimizers: dict, rng: np.random.Generator, run: RunOptions, epoch: int, step: int,
         history: list) -> None:
    checkpoint.save(path_of(run_dir), {
        "model": model.state_dict(), "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "epoch": epoch, "step": step, "rng": rng.bit_generator.state, "run": asdict(run),
        "model_config": model.config(), "history": history})


def load(run_dir: str) -> dict:
    """The checkpoint of the run in ``run_dir``, every value checked, in this version's layout
    (``records.upgrade`` translates those written before model families), with ``history``."""
    path = path_of(run_dir)
    if os.path.isfile(run_dir) and os.path.basename(run_dir) == CHECKPOINT:
        raise CheckpointError(f"{run_dir} is a checkpoint file; give its run folder: {os.path.dirname(run_dir) or '.'}")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint in {run_dir} (expected {path}); train with --out {run_dir} first")
    state = records.upgrade(checkpoint.load(path))
    try:
        _check(state)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} is damaged: {e}") from None
    state.setdefault("history", _history_from_log(run_dir, state["epoch"]))
    return state


def build_model(state: dict, device: str = "cpu", _parents: tuple = ()):
    """The model a checked checkpoint holds, on ``device`` (a second-stage model with its
    parent run's model). Nothing is allocated before the arrays are known to fit."""
    run, config = run_options(state["run"]), state["model_config"]
    parent = None
    if run.parent:
        if os.path.abspath(run.parent) in _parents:
            raise CheckpointError(f"the parent runs of {_parents[0]} form a loop through {run.parent}")
        parent = build_model(load(run.parent), device, _parents + (os.path.abspath(run.parent),)).eval()
    spec = data.SPECS[run.dataset]
    if config.get("vocabulary", []) != list(spec.vocabulary):
        raise CheckpointError(f"the run's {run.dataset} vocabulary ({' '.join(config.get('vocabulary', []))}) is "
                              f"not this version's ({' '.join(spec.vocabulary)}): its token ids would be misread")
    try:
        with nn.init.placeholders():
            model = models.build(config["name"], config["options"], spec, parent=parent)
        model.load_state_dict(state["model"])
    except ValueError as e:
        raise CheckpointError(f"the checkpoint's model does not fit its record: {e}") from None
    return model.to(device)


def load_model(run_dir: str, device: str = "cpu") -> tuple:
    """(model in eval mode, RunOptions) of a trained run."""
    state = load(run_dir)
    return build_model(state, device, (os.path.abspath(run_dir),)).eval(), run_options(state["run"])


# ---- checks -----------------------------------------------------------------------------------

def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _is_int(value, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _arrays(value, where: str) -> dict:
    _require(isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, np.ndarray)
                                             for k, v in value.items()), f"{where} is not a set of named arrays")
    return value


def _check(state: dict) -> None:
    """ValueError or TypeError naming the first value that is missing, of the wrong type or
    out of range."""
    _require(isinstance(state, dict), "it holds no record")
    _require(_is_int(state.get("epoch"), 1), f"epoch {state.get('epoch')!r} is not a positive integer")
    _require(_is_int(state.get("step")), f"step {state.get('step')!r} is not a non-negative integer")
    _require(isinstance(state.get("run"), dict), "the run options are missing")
    unknown = sorted(set(state["run"]) - {f.name for f in fields(RunOptions)})
    _require(not unknown, f"unknown run options {unknown}")
    check(run_options(state["run"]))
    config = state.get("model_config")
    _require(isinstance(config, dict) and isinstance(config.get("name"), str) and isinstance(config.get("options"), dict),
             "the model record (name and options) is missing")
    vocabulary = config.get("vocabulary", [])
    _require(isinstance(vocabulary, list) and all(isinstance(t, str) for t in vocabulary),
             "its vocabulary is not a list of tokens")
    family = models.get(config["name"])
    check(family.Options(**config["options"]))              # TypeError for an option the family lacks
    weights = _arrays(state.get("model"), "the model")
    bad = count_non_finite(weights.values())
    _require(not bad, f"its model has {bad} non-finite weights (the run diverged before it was saved)")
    optimizers = state.get("optimizers")
    _require(isinstance(optimizers, dict) and all(isinstance(o, dict) for o in optimizers.values()),
             "the optimizer states are missing")
    for name, opt in optimizers.items():
        _require(_is_int(opt.get("steps")) and isinstance(opt.get("hyper"), dict)
                 and isinstance(opt.get("buffers"), list), f"optimizer {name!r} is incomplete")
        for i, buffers in enumerate(opt["buffers"]):
            _require(not count_non_finite(_arrays(buffers, f"optimizer {name!r} buffer {i}").values()),
                     f"optimizer {name!r} holds non-finite state")
    _check_rng(state.get("rng"))
    history = state.get("history", [])
    _require(isinstance(history, list) and all(isinstance(r, dict) and _is_int(r.get("epoch"), 1) for r in history),
             "its metrics history is not a list of epoch records")
    epochs = [r["epoch"] for r in history]
    _require(epochs == sorted(set(epochs)) and all(e <= state["epoch"] for e in epochs),
             f"its metrics history has epochs {epochs} for a checkpoint of epoch {state['epoch']}")


def _check_rng(saved) -> None:
    probe = np.random.PCG64()
    try:
        _require(isinstance(saved, dict) and saved.get("bit_generator") == "PCG64", "not a PCG64 state")
        probe.state = saved
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise ValueError(f"its generator state is invalid ({e})") from None


def _history_from_log(run_dir: str, epoch: int) -> list:
    """For a checkpoint written before it carried the metrics: the lines of metrics.jsonl that
    parse, one per epoch up to the checkpoint's."""
    kept: dict = {}
    try:
        with open(os.path.join(run_dir, METRICS)) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and _is_int(record.get("epoch"), 1) and record["epoch"] <= epoch:
                    kept.setdefault(record["epoch"], record)
    except OSError:
        pass
    return [kept[e] for e in sorted(kept)]
