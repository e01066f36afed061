"""One training loop for every model family, and the evaluation and run records behind the
``tinyvae`` command.

    batches → model.loss → backward, one optimizer step per parameter group → model.after_step
    → per epoch: metrics line, checkpoint, pictures

The loop knows nothing of KL terms, β, binarization or image sizes: the model declares what
it needs (``models.base``). One seeded NumPy generator drives everything random in training
(shuffling, binarization, the models' noise); its state is saved in every checkpoint with the
model and optimizers, so ``resume`` continues exactly where an uninterrupted run would be.
Evaluation draws from generators seeded by (seed, epoch), so it never disturbs training.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np

from . import backend, checkpoint, data, models, optim, pictures, records, run_folder
from .atomic import write_atomic
from .autograd import no_grad
from .models.base import StepContext
from .options import check, option

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
LR_SCHEDULES = ("constant", "iwae")
RESUME_MUST_MATCH = ("dataset", "batch_size", "seed", "train_size", "lr_schedule", "parent")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible checkpoint, ...)."""


@dataclass
class RunOptions:
    """The trainer's options (the model's are its family's ``Options``)."""
    dataset: str = option("mnist", "data set", choices=data.DATASETS)
    epochs: int = option(10, "epochs to train (with --resume: the total)", minimum=1)
    batch_size: int = option(128, "examples per optimizer step", minimum=1)
    lr: float = option(1e-3, "Adam's learning rate", positive=True)
    lr_schedule: str = option("constant", "constant, or iwae: the IWAE paper's 8 stages of 3^i epochs at "
                              "10^(-i/7) x --lr (3280 epochs)", choices=LR_SCHEDULES)
    seed: int = option(0, "seed of the weights, the data order and every random draw")
    device: str = option("cpu", "cpu, or cuda (CuPy on a GPU)", choices=backend.DEVICES)
    train_size: Optional[int] = option(None, "use only the first N training examples", minimum=1)
    test_size: Optional[int] = option(None, "use only the first N test examples", minimum=1)
    data_dir: Optional[str] = option(None, "folder holding <dataset>/*.gz (else $TINYVAE_DATA, the cache)")
    parent: Optional[str] = option(None, "run folder of the trained model a second-stage model builds on")

    def validate(self) -> None:
        check(self)
        if self.device == "cuda" and not backend.cuda_available():
            raise ValueError("--device cuda needs CuPy and a CUDA GPU; none is available here")


def lr_schedule(run: RunOptions, steps_per_epoch: int):
    """Step number → multiplier of --lr."""
    return optim.IWAEStages(steps_per_epoch) if run.lr_schedule == "iwae" else optim.Constant()


def load_split(run: RunOptions, split: str) -> data.Split:
    return data.load_split(run.dataset, split, run.train_size if split == "train" else run.test_size, run.data_dir)


@no_grad()
def evaluate(model, split: data.Split, rng: np.random.Generator, batch_size: int = 500, iwae_k: int = 0,
             device: str = "cpu") -> dict:
    """Test-set averages of the model's per-example metrics (``test_<name>``, nats per example),
    with ``iwae_k`` where the model reports an IWAE bound, and its whole-set metrics. A
    binary-pixel model's test set is binarized once with ``rng``. The model's mode is restored."""
    was_training = model.training
    model.eval()
    if model.inputs == "binary":
        split = split.binarized(rng)
    ctx = StepContext(step=0, epoch=0, rng=rng, training=False)
    sums, kept = {}, {}
    for batch in data.batch_dicts(split, batch_size, rng, shuffle=False, device=device):
        metrics, keep = model.eval_batch(batch, ctx, iwae_k)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value.sum().item())
        for key, value in keep.items():
            kept.setdefault(key, []).append(backend.to_device(value.data, "cpu"))
    out = {f"test_{key}": total / len(split) for key, total in sums.items()}
    if "test_nll_iwae" in out:
        out["iwae_k"] = iwae_k
    out.update(model.eval_summary({key: np.concatenate(parts) for key, parts in kept.items()}))
    model.train(was_training)
    return out


def train(model_name: str, model_options: dict, run: RunOptions, out_dir: str, resume: bool = False,
          progress: bool = True, log=print, command: Optional[list] = None) -> list:
    """Train, committing each epoch to out_dir: the checkpoint (model, optimizers, generator
    and the metrics of every epoch so far), then metrics.jsonl rewritten from it, then
    config.json (every file written atomically, so after any kill the folder holds one
    consistent epoch), then the model's pictures. The folder is locked while training.
    Returns the epoch metrics."""
    run.validate()
    with run_folder.lock(out_dir):
        return _train(model_name, model_options, run, out_dir, resume, progress, log, command)


def _train(model_name, model_options, run, out_dir, resume, progress, log, command) -> list:
    spec = data.SPECS[run.dataset]
    rng = np.random.default_rng(run.seed)
    parent = load_model(run.parent, run.device)[0] if run.parent else None
    model = models.build(model_name, model_options, spec, rng, parent).to(run.device)
    optimizers = {name: optim.Adam(params, lr=run.lr) for name, params in model.param_groups().items()}
    start_epoch, step, history = 1, 0, []
    if resume:
        start_epoch, step, history = _restore(out_dir, run, model, optimizers, rng)
        _write_metrics(out_dir, history)        # the log agrees with the checkpoint resumed from
    train_split, test_split = load_split(run, "train"), load_split(run, "test")
    schedule = lr_schedule(run, -(-len(train_split) // run.batch_size))
    schedulers = [optim.Scheduler(opt, schedule, start=step, base_lr=run.lr) for opt in optimizers.values()]
    new = []
    for epoch in range(start_epoch, run.epochs + 1):
        t0 = time.perf_counter()
        sums, numbers, count = {}, {}, 0
        batches = data.batch_dicts(train_split, run.batch_size, rng, binary=model.inputs == "binary",
                                   device=run.device)
        bar = _progress(batches, epoch, run.epochs, -(-len(train_split) // run.batch_size), progress)
        for batch in bar:
            ctx = StepContext(step=step, epoch=epoch, rng=rng)
            terms = model.loss(batch, ctx)
            value = terms["loss"].item()
            if not math.isfinite(value):
                kept = (f"the last good checkpoint (epoch {epoch - 1}) is intact in {out_dir}" if epoch > 1
                        else "no checkpoint was written")
                raise TrainingError(f"loss became non-finite ({value}) at epoch {epoch}, step {step + 1}; "
                                    f"training stopped and {kept}")
            for opt in optimizers.values():
                opt.zero_grad()
            terms["loss"].backward()
            lr = next(iter(optimizers.values())).lr
            for opt, scheduler in zip(optimizers.values(), schedulers):
                opt.step()
                scheduler.step()
            model.after_step(ctx)
            step += 1
            n = len(batch["y"])
            count += n
            sums["loss"] = sums.get("loss", 0.0) + value * n
            for key, term in terms.items():
                if key == "loss":
                    continue
                if isinstance(term, (int, float)):
                    numbers[key] = term
                else:
                    sums[key] = sums.get(key, 0.0) + float(term.data.sum())
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix({key: f"{total / count:.2f}" for key, total in sums.items()}, refresh=False)
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "step": step, **{f"train_{key}": total / count for key, total in sums.items()},
                  **numbers, "lr": lr, "seconds": seconds}
        record.update(evaluate(model, test_split, np.random.default_rng([run.seed, epoch]), device=run.device))
        history.append(record)
        new.append(record)
        _save(out_dir, run, model, optimizers, rng, epoch, step, history)       # the commit point
        _write_metrics(out_dir, history)
        records.write_config(out_dir, model.config(), asdict(run), command)
        pictures.write_epoch_pictures(model, test_split, out_dir, np.random.default_rng([run.seed, epoch, 1]))
        tests = "  ".join(f"{key[5:]} {value:.2f}" for key, value in record.items()
                          if key.startswith("test_") and isinstance(value, float))
        log(f"epoch {epoch}/{run.epochs}: loss {record['train_loss']:.2f}  test: {tests}  ({seconds:.1f}s)")
    return new


def _progress(batches, epoch, epochs, total, enabled):
    if not enabled:
        return batches
    from tqdm import tqdm
    return tqdm(batches, desc=f"epoch {epoch}/{epochs}", total=total, unit="batch", leave=False, disable=None)


def _save(out_dir, run, model, optimizers, rng, epoch, step, history) -> None:
    checkpoint.save(os.path.join(out_dir, CHECKPOINT), {
        "model": model.state_dict(), "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "epoch": epoch, "step": step, "rng": rng.bit_generator.state, "run": asdict(run),
        "model_config": model.config(), "history": history})


def _write_metrics(out_dir: str, history: list) -> None:
    """metrics.jsonl, one JSON line per epoch, rewritten whole and atomically: every line parses."""
    write_atomic(os.path.join(out_dir, METRICS), "".join(json.dumps(r) + "\n" for r in history).encode())


def _history_of(out_dir: str, state: dict) -> list:
    """The epochs' metrics a checkpoint carries; for one written before it carried them, the
    lines of metrics.jsonl that parse, up to its epoch."""
    if "history" in state:
        return list(state["history"])
    kept = []
    try:
        with open(os.path.join(out_dir, METRICS)) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("epoch"), int) \
                        and record["epoch"] <= state["epoch"] and record["epoch"] not in [r["epoch"] for r in kept]:
                    kept.append(record)
    except OSError:
        pass
    return kept


def load_checkpoint(run_dir: str) -> dict:
    """The checkpoint of a run, in this version's layout (``records.upgrade`` translates those
    written before model families: model kind and preset, one optimizer, one config)."""
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise TrainingError(f"no checkpoint in {run_dir} (expected {path}); train with --out {run_dir} first")
    return records.upgrade(checkpoint.load(path))


def run_options(saved: dict) -> RunOptions:
    """RunOptions from a saved dict; options newer than the record take their defaults."""
    return RunOptions(**{f.name: saved[f.name] for f in fields(RunOptions) if f.name in saved})


def load_model(run_dir: str, device: str = "cpu") -> tuple:
    """(model, run options) of a trained run, in eval mode (with its parent run's model, for
    a second-stage model)."""
    state = load_checkpoint(run_dir)
    run = run_options(state["run"])
    config = state["model_config"]
    parent = load_model(run.parent, device)[0] if run.parent else None
    model = models.build(config["name"], config["options"], data.SPECS[run.dataset], parent=parent)
    model.load_state_dict(state["model"])
    bad = sum(int((~np.isfinite(backend.to_device(p.data, "cpu"))).sum()) for p in model.parameters())
    if bad:
        raise TrainingError(f"the model in {run_dir} has {bad} non-finite weights (the run diverged before this "
                            f"checkpoint); train it again")
    return model.to(device).eval(), run


def _restore(out_dir, run, model, optimizers, rng) -> tuple:
    state = load_checkpoint(out_dir)
    saved_model, asked_model = state["model_config"], model.config()
    if saved_model["name"] != asked_model["name"]:
        raise TrainingError(f"cannot resume: the checkpoint in {out_dir} was trained with model="
                            f"{saved_model['name']!r}, this run asks for {asked_model['name']!r}")
    for key, asked in asked_model["options"].items():
        trained = saved_model["options"].get(key)
        if trained != asked:
            raise TrainingError(f"cannot resume: the checkpoint in {out_dir} was trained with {key}={trained!r}, "
                                f"this run asks for {asked!r}")
    saved_run = run_options(state["run"])
    for key in RESUME_MUST_MATCH:
        if getattr(saved_run, key) != getattr(run, key):
            raise TrainingError(f"cannot resume: the checkpoint in {out_dir} was trained with "
                                f"{key}={getattr(saved_run, key)!r}, this run asks for {getattr(run, key)!r}")
    model.load_state_dict(state["model"])
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    rng.bit_generator.state = state["rng"]
    if state["epoch"] >= run.epochs:
        raise TrainingError(f"nothing to resume: {out_dir} already has {state['epoch']} epochs; "
                            f"ask for more with --epochs")
    return int(state["epoch"]) + 1, int(state["step"]), _history_of(out_dir, state)
