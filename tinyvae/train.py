"""One training loop for every model family, and the evaluation and run records behind the
``tinyvae`` command.

    batches → model.loss → backward, one optimizer step per parameter group → model.after_step
    → per epoch: metrics line, checkpoint, pictures

The loop knows nothing of KL terms, β, binarization or image sizes: the model declares what
it needs (``models.base``). One seeded NumPy generator drives everything random in training
(shuffling, binarization, the models' noise); its state is saved in every checkpoint with the
model and optimizers, so ``resume`` continues exactly where an uninterrupted run would be.
Evaluation draws from generators seeded by (seed, epoch), so it never disturbs training.

Under ``mpiexec -n R`` each rank trains on its share of every batch (``parallel``): gradients
and losses are summed over the ranks, so the run is the one-process run up to the order of
float sums; rank 0 alone holds the run folder and writes to it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import asdict, replace
from typing import Optional

import numpy as np

from . import backend, checkpoint, data, models, optim, parallel, pictures, records, run_folder, saved_run
from .atomic import write_atomic
from .autograd import no_grad
from .guards import DivergenceGuard, count_non_finite, grad_norm
from .models.base import StepContext
from .progress import fmt_seconds, stage as progress_stage
from .run_options import RESUME_MAY_CHANGE, RunOptions, run_options
from .saved_run import CHECKPOINT, METRICS, load_model
from .tensorboard_log import TensorBoardLog

__all__ = ["RunOptions", "run_options", "train", "resume", "evaluate", "with_derived", "load_model",
           "TrainingError", "CHECKPOINT", "METRICS"]


class TrainingError(RuntimeError):
    """Training cannot go on (a diverged run, a folder that holds another run, ...)."""


def lr_schedule(run: RunOptions, steps_per_epoch: int):
    """Step number → multiplier of --lr."""
    return optim.IWAEStages(steps_per_epoch) if run.lr_schedule == "iwae" else optim.Constant()


def load_split(run: RunOptions, split: str) -> data.Split:
    return data.load_split(run.dataset, split, run.train_size if split == "train" else run.test_size, run.data_dir)


def with_derived(model, split: data.Split, seed: int, run_dir: Optional[str] = None, name: str = "test",
                 reuse: bool = True) -> data.Split:
    """``split`` with the arrays the model derives from it (``Model.derived``) as its fields.
    With ``run_dir`` they are kept in ``run_dir/derived-<name>.safetensors`` beside the
    SHA-256 of the pixels and labels they came from, and read back while those match and
    ``reuse`` (a resumed run); a new run computes them afresh."""
    digest = hashlib.sha256(np.ascontiguousarray(split.x).tobytes() + split.y.astype(np.int64).tobytes()
                            + str(seed).encode()).hexdigest()
    path = os.path.join(run_dir, f"derived-{name}.safetensors") if run_dir else None
    if path and reuse and os.path.isfile(path):
        try:
            kept = checkpoint.load(path)
        except checkpoint.CheckpointError:
            kept = {}                                   # damaged: computed again below
        if kept.get("data_sha256") == digest:
            return replace(split, fields=kept["fields"])
    # a generator of its own for each split, apart from the evaluations' [seed, epoch] (the
    # test set's binarization at epoch 3 once drew the very numbers a mask was drawn from)
    fields = model.derived(split, np.random.default_rng([seed, 0, zlib.crc32(name.encode())]))
    if fields and path:
        checkpoint.save(path, {"data_sha256": digest, "fields": fields})
    return replace(split, fields=fields)


@no_grad()
def evaluate(model, split: data.Split, rng: np.random.Generator, batch_size: int = 500, iwae_k: int = 0,
             device: str = "cpu", stage: Optional[str] = None, bar: bool = True,
             world: Optional[parallel.World] = None) -> dict:
    """Test-set averages of the model's per-example metrics (``test_<name>``, nats per example),
    with ``iwae_k`` where the model reports an IWAE bound, and its whole-set metrics. A
    binary-pixel model's test set is binarized once with ``rng``. The model's mode is restored.
    ``stage``: show progress under this name (``progress.stage``). ``world``: with R ranks,
    each evaluates its shard of every batch with the numbers one process would draw for those
    rows (as in training), and the sums and kept arrays are gathered: every rank returns the
    one-process result, up to the order of float sums."""
    world = world or parallel.World()
    was_training = model.training
    model.eval()
    if model.inputs == "binary":
        split = split.binarized(rng)
    sums, kept = {}, {}
    batches = data.batch_dicts(split, batch_size, rng, shuffle=False, device=device, rows=world.rows)
    if stage:
        batches = progress_stage(batches, -(-len(split) // batch_size), stage, bar and world.rank == 0)
    for j, batch in enumerate(batches):
        if not len(batch["y"]):          # a last batch with fewer rows than ranks
            continue
        n = min(batch_size, len(split) - j * batch_size)
        ctx = StepContext(step=0, epoch=0, rng=world.generator(rng, n), training=False)
        metrics, keep = model.eval_batch(batch, ctx, iwae_k)
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value.sum().item())
        for key, value in keep.items():
            kept.setdefault(key, {})[j] = backend.to_device(value.data, "cpu")
    sums, kept = _gathered(world, sums, kept)
    out = {f"test_{key}": total / len(split) for key, total in sums.items()}
    if "test_nll_iwae" in out:
        out["iwae_k"] = iwae_k
    out.update(model.eval_summary({key: np.concatenate([parts[j] for j in sorted(parts)])
                                   for key, parts in kept.items()}))
    model.train(was_training)
    return out


def _gathered(world: parallel.World, sums: dict, kept: dict) -> tuple:
    """Every rank's metric sums added, and each batch's kept arrays joined in rank order, so
    they line up as one process's (one all-gather). ``kept``: {key: {batch: array}}."""
    if world.size == 1:
        return sums, kept
    total, joined = {}, {}
    parts = world.gather([(sums, kept)])
    for rank_sums, _ in parts:
        for key, value in rank_sums.items():
            total[key] = total.get(key, 0.0) + value
    for key in {key for _, rank_kept in parts for key in rank_kept}:
        batches = sorted({j for _, rank_kept in parts for j in rank_kept.get(key, {})})
        joined[key] = {j: np.concatenate([rank_kept[key][j] for _, rank_kept in parts if j in rank_kept.get(key, {})])
                       for j in batches}
    return total, joined


def train(model_name: str, model_options: dict, run: RunOptions, out_dir: str, overwrite: bool = False,
          progress: bool = True, log=print, command: Optional[list] = None, tensorboard: bool = False) -> list:
    """Train a new model, committing each epoch to out_dir: the checkpoint (model, optimizers,
    generator and the metrics of every epoch so far), then metrics.jsonl rewritten from it,
    then config.json (every file written atomically, so after any kill the folder holds one
    consistent epoch), then the model's pictures (and, with ``tensorboard``, TensorBoard logs).
    The folder is locked while training; one that already holds a run is refused unless
    ``overwrite``. Returns the epoch metrics."""
    run.validate()
    cls, _ = models.checked_options(model_name, model_options)      # a bad option or data set makes no run folder
    models.check_data(cls, data.SPECS[run.dataset])
    parent, parent_run = load_model(run.parent, run.device) if run.parent else (None, None)
    if parent_run is not None and parent_run.dataset != run.dataset:     # its codes of other images mean nothing
        raise TrainingError(f"the parent run {run.parent} was trained on {parent_run.dataset}, so a model built on "
                            f"it needs --dataset {parent_run.dataset}, not {run.dataset}")
    world = parallel.world(run.device)
    with _run_folder(world, out_dir):
        world.from_root(lambda: _refuse_held(out_dir, overwrite))
        rng = np.random.default_rng(run.seed)
        model = models.build(model_name, model_options, data.SPECS[run.dataset], rng, parent).to(run.device)
        optimizers = _optimizers(model, run)
        return _epochs(model, optimizers, rng, run, out_dir, 1, 0, [], progress, log, command, tensorboard, world)


@contextlib.contextmanager
def _run_folder(world: parallel.World, out_dir: str):
    """Rank 0 holds the run folder's lock (``run_folder.lock``); the other ranks learn
    whether it got it, and raise its refusal with it."""
    with contextlib.ExitStack() as stack:
        world.from_root(lambda: stack.enter_context(run_folder.lock(out_dir)))
        yield


def _refuse_held(out_dir: str, overwrite: bool) -> None:
    if not overwrite and os.path.exists(saved_run.path_of(out_dir)):
        raise TrainingError(f"{out_dir} already holds a run; continue it with --resume --out {out_dir}, "
                            f"replace it with --overwrite, or choose another --out")


def resume(out_dir: str, asked: Optional[dict] = None, progress: bool = True, log=print,
           command: Optional[list] = None, tensorboard: bool = False) -> list:
    """Continue the run in out_dir exactly where it stopped, with every option it was trained
    with. ``asked``: the options typed with --resume ("model", model or run options); those
    in RESUME_MAY_CHANGE (epochs: the new total, device, data_dir) are taken, every other must
    agree with the run's, or the run is refused in one line naming the first that differs."""
    with _run_folder(parallel.world(), out_dir):
        state = parallel.world().from_root(lambda: saved_run.load(out_dir))     # read once, sent to every rank
        run = run_options(state["run"])
        asked = asked or {}
        refuse_changes(out_dir, state, run, asked)
        run = replace(run, **{key: value for key, value in asked.items() if key in RESUME_MAY_CHANGE})
        run.validate()
        if state["epoch"] >= run.epochs:
            raise TrainingError(f"nothing to resume: {out_dir} already has {state['epoch']} epochs; "
                                f"ask for more with --epochs")
        model = saved_run.build_model(state, run.device)
        optimizers = _optimizers(model, run)
        if set(state["optimizers"]) != set(optimizers):
            raise saved_run.CheckpointError(f"the checkpoint in {out_dir} has optimizers {sorted(state['optimizers'])}, "
                                            f"its model {sorted(optimizers)}")
        try:
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
        except ValueError as e:
            raise saved_run.CheckpointError(f"the checkpoint in {out_dir} is damaged: {e}") from None
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        history = list(state["history"])
        world = parallel.world(run.device)
        if world.rank == 0:
            _write_metrics(out_dir, history)        # the log agrees with the checkpoint resumed from
        return _epochs(model, optimizers, rng, run, out_dir, state["epoch"] + 1, state["step"], history,
                       progress, log, command, tensorboard, world)


def _optimizers(model, run: RunOptions) -> dict:
    """One Adam per parameter group of the model."""
    return {name: optim.Adam(params, lr=run.lr) for name, params in model.param_groups().items()}


def refuse_changes(out_dir: str, state: dict, run: RunOptions, asked: dict) -> None:
    """A TrainingError naming the first option in ``asked`` that differs from what the run in
    out_dir (its checkpoint ``state``, its RunOptions ``run``) was trained with, other than
    those RESUME_MAY_CHANGE."""
    config = state["model_config"]
    if "model" in asked:
        family, fixed = models.resolve(asked["model"])
        asked = {**fixed, **asked, "model": family}
    trained = {"model": config["name"], **config["options"], **asdict(run)}
    for key, value in asked.items():
        if key not in RESUME_MAY_CHANGE and trained.get(key) != value:
            flag = "--" + key.replace("_", "-")
            raise TrainingError(f"cannot resume: the run in {out_dir} was trained with {flag} {trained.get(key)}, "
                                f"this command asks for {flag} {value}; leave it out to continue as trained")


def _epochs(model, optimizers, rng, run, out_dir, start_epoch, step, history, progress, log, command,
            tensorboard=False, world: Optional[parallel.World] = None) -> list:
    world = world or parallel.World()
    root = world.rank == 0                  # writes the run folder, logs and shows progress
    if not root:
        progress, log, tensorboard = False, lambda *_: None, False
    train_split, test_split = (with_derived(model, load_split(run, name), run.seed, out_dir if root else None, name,
                                            start_epoch > 1) for name in ("train", "test"))
    visits = model.visits(train_split)
    examples = len(train_split) if visits is None else int(visits.sum())
    steps_per_epoch = -(-examples // run.batch_size)
    if 0 < examples % run.batch_size < world.size:
        raise TrainingError(f"each epoch's last batch would have {examples % run.batch_size} examples, fewer than "
                            f"the {world.size} ranks: change --batch-size or --train-size so it has at least "
                            f"{world.size} (or none)")
    schedule = lr_schedule(run, steps_per_epoch)
    schedulers = {name: optim.Scheduler(opt, schedule, start=step, base_lr=run.lr) for name, opt in optimizers.items()}
    params = [p for opt in optimizers.values() for p in opt.params]
    guard = DivergenceGuard(run.divergence_factor, run.divergence_steps)
    for note in model.notes(steps_per_epoch * run.epochs):
        log(f"note: {note}")
    board = TensorBoardLog(out_dir, {"model": model.config(), "run": asdict(run)}) if tensorboard else None
    new, started = [], time.perf_counter()
    for epoch in range(start_epoch, run.epochs + 1):
        t0 = time.perf_counter()
        sums, numbers, count, skipped = {}, {}, 0, 0
        mine, terms_sum = 0, {}                 # this rank's rows and its per-example term sums

        def stop(reason: str):
            kept = (f"the last checkpoint written (epoch {epoch - 1}, every weight finite) is intact in {out_dir}"
                    if epoch > 1 else "no checkpoint was written")
            return TrainingError(f"{reason} at epoch {epoch}, step {step + 1}; training stopped and {kept}")

        batches = data.batch_dicts(train_split, run.batch_size, rng, binary=model.inputs == "binary",
                                   device=run.device, visits=visits, rows=world.rows)
        eta = "" if epoch == start_epoch else \
            f", run ETA {fmt_seconds((time.perf_counter() - started) / (epoch - start_epoch) * (run.epochs - epoch + 1))}"
        bar = _progress(batches, f"epoch {epoch}/{run.epochs}{eta}", steps_per_epoch, progress)
        for j, batch in enumerate(bar):
            world.sync_state(model, rng)            # what the last step changed besides the weights
            n = min(run.batch_size, examples - j * run.batch_size)     # the whole batch's rows
            share = len(batch["y"]) / n                                  # this rank's: n_r / n
            ctx = StepContext(step=step, epoch=epoch, rng=world.generator(rng, n))
            terms = model.loss(batch, ctx)
            # one loss for every group, or {group: its loss} (a GAN's generator and discriminator)
            plan = list(terms["loss"].items()) if isinstance(terms["loss"], dict) else [(None, terms["loss"])]
            values = {group: loss.item() for group, loss in plan}
            if world.size > 1:                                           # L = Σ_r (n_r/n) L_r
                values = dict(zip(values, world.sum(np.array(list(values.values())) * share).tolist()))
            value = sum(values.values())
            if not math.isfinite(value):
                if run.skip_grad_norm is None:
                    raise stop(f"the loss became non-finite ({value})")
                if not skipped:                                      # VD-VAE's rule; said once an epoch
                    log(f"epoch {epoch}, step {step + 1}: update skipped, the loss is {value}")
                skipped += 1
                continue
            diverged = guard(value)
            if diverged:
                raise stop(diverged)
            lr = next(iter(optimizers.values())).lr
            stepped = 0
            for i, (group, loss) in enumerate(plan):
                for opt in optimizers.values():
                    opt.zero_grad()
                loss.backward(retain_graph=i < len(plan) - 1)
                names = list(optimizers) if group is None else [group]
                world.reduce_gradients([p for name in names for p in optimizers[name].params], share)
                if run.skip_grad_norm is not None:
                    norm = grad_norm([p for name in names for p in optimizers[name].params])
                    if not norm <= run.skip_grad_norm:
                        if not skipped:
                            log(f"epoch {epoch}, step {step + 1}: update skipped, gradient norm {norm:.4g} > "
                                f"--skip-grad-norm {run.skip_grad_norm:g}")
                        skipped += 1
                        continue
                for name in names:
                    optimizers[name].step()
                    schedulers[name].step()
                stepped += 1
            if not stepped:
                continue
            bad = count_non_finite(p.data for p in params)
            if bad:    # this state is never saved: the run stops with the last checkpoint written
                raise stop(f"the update made {bad} weights non-finite (lr {lr:g})")
            model.after_step(ctx)
            if board:
                board.step(step, {"loss": value, "lr": lr, **{k: v for k, v in terms.items() if isinstance(v, (int, float))}})
            step += 1
            count, mine = count + n, mine + len(batch["y"])
            sums["loss"] = sums.get("loss", 0.0) + value * n
            for key, term in terms.items():
                if key == "loss":
                    for group, v in values.items():
                        if group is not None:
                            sums[f"loss_{group}"] = sums.get(f"loss_{group}", 0.0) + v * n
                    continue
                if isinstance(term, (int, float)):
                    numbers[key] = term
                else:
                    terms_sum[key] = terms_sum.get(key, 0.0) + float(term.data.sum())
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix({**{key: f"{total / count:.2f}" for key, total in sums.items()},
                                 **{key: f"{total / mine:.2f}" for key, total in terms_sum.items()}}, refresh=False)
        world.sync_state(model, rng)
        sums.update(zip(terms_sum, world.sum(np.array(list(terms_sum.values()))).tolist()))
        if not count:
            raise stop(f"every update of the epoch was skipped (gradient norm above {run.skip_grad_norm:g})")
        if count_non_finite(b for opt in optimizers.values() for buf in opt.buffers for b in buf.values()):
            raise stop("the optimizer state became non-finite")
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "step": step, **{f"train_{key}": total / count for key, total in sums.items()},
                  **numbers, "lr": lr, "seconds": seconds, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if run.skip_grad_norm is not None:
            record["skipped_steps"] = skipped
        differ = world.replicas_differ(model, epoch)
        if differ:
            raise TrainingError(f"{differ}; training stopped and the last checkpoint written is intact in {out_dir}")
        record.update(evaluate(model, test_split, np.random.default_rng([run.seed, epoch]), device=run.device,
                               world=world))
        record = records.strict(record)
        history.append(record)
        new.append(record)
        if not root:
            continue
        saved_run.save(out_dir, model, optimizers, rng, run, epoch, step, history)      # the commit point
        _write_metrics(out_dir, history)
        records.write_config(out_dir, model.config(), asdict(run), command)
        drawn = pictures.write_run_pictures(model, test_split, out_dir, np.random.default_rng([run.seed, epoch, 1]),
                                            history, epoch if run.keep_samples == "every" else None)
        if board:
            board.epoch(record, {name[:-4]: os.path.join(out_dir, name) for name in drawn if "_epoch" not in name})
        tests = "  ".join(f"{key[5:]} {_short(value)}" for key, value in record.items()
                          if key.startswith("test_") and isinstance(value, float))
        left = (time.perf_counter() - started) / (epoch - start_epoch + 1) * (run.epochs - epoch)
        log(f"epoch {epoch}/{run.epochs}: loss {_short(record['train_loss'])}  test: {tests}  ({seconds:.1f}s"
            + (f", about {fmt_seconds(left)} left)" if epoch < run.epochs else ")"))
    if board:
        board.close()
    return new


def _short(value: float) -> str:
    """Two decimals for nats per image (−121.00), four significant digits for small numbers
    such as a per-pixel squared error (0.008231)."""
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4g}"


def _progress(batches, what: str, total: int, enabled: bool):
    """A bar over an epoch's batches on a terminal (the epoch's own line is the log's)."""
    if not enabled:
        return batches
    from tqdm import tqdm
    return tqdm(batches, desc=what, total=total, unit="batch", leave=False, disable=None)


def _write_metrics(out_dir: str, history: list) -> None:
    """metrics.jsonl, one JSON line per epoch, rewritten whole and atomically: every line parses."""
    write_atomic(os.path.join(out_dir, METRICS), "".join(json.dumps(r) + "\n" for r in history).encode())
