"""``tinyvae sweep``: one training run per value of one option (β, by default use), each an
ordinary run folder ``DIR/<option>-<value>`` trained exactly as ``tinyvae train`` with that
value would train it, then ``DIR/sweep.jsonl`` (one line per value: its final test metrics)
and ``DIR/rate_distortion.png`` (plots.rate_distortion). Run again, a sweep continues: a run
already complete is taken as it is, one cut short is resumed, the rest are trained.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from . import models, plots, saved_run
from . import train as T
from .atomic import write_atomic
from .records import strict

POINTS = "sweep.jsonl"
PICTURE = "rate_distortion.png"
NEEDED = ("test_kl", "test_recon")


def folder_name(axis: str, value) -> str:
    return f"{axis}-{value:g}" if isinstance(value, float) else f"{axis}-{value}"


def sweep(requests: list, axis: str, out_dir: str, overwrite: bool = False, progress: bool = True, log=print,
          command: Optional[list] = None) -> list:
    """``requests``: (value, model name, model options, RunOptions) for each value of ``axis``.
    Returns the points written to sweep.jsonl."""
    family = models.get(models.resolve(requests[0][1])[0])
    missing = [key for key in NEEDED if key not in family.eval_keys]
    if missing:
        raise ValueError(f"a sweep plots rate against distortion, and model {family.name!r} reports no "
                         f"{', '.join(missing)}; sweep a model with a KL term (vae, info-vae, skip-vae)")
    for _, name, options, run in requests:           # every request is checked before any run starts
        run.validate()
        models.checked_options(name, options)
    points = []
    for value, name, options, run in requests:
        folder = os.path.join(out_dir, folder_name(axis, value))
        log(f"{axis} = {value}: {folder}")
        state = None if overwrite or not os.path.exists(saved_run.path_of(folder)) else saved_run.load(folder)
        if state is None:
            history = T.train(name, options, run, folder, overwrite=overwrite, progress=progress, log=log,
                              command=command)
        else:
            asked = {"model": name, **options, **vars(run)}
            T.refuse_changes(folder, state, T.run_options(state["run"]), asked)
            history = state["history"] if state["epoch"] >= run.epochs else \
                T.resume(folder, asked, progress=progress, log=log, command=command)
        last = history[-1]
        points.append({axis: value, "run": folder, **{key: last[key] for key in
                                                      (*NEEDED, "test_elbo", "total_correlation") if key in last}})
    os.makedirs(out_dir, exist_ok=True)
    write_atomic(os.path.join(out_dir, POINTS), "".join(json.dumps(strict(p)) + "\n" for p in points).encode())
    plots.rate_distortion(points, axis, os.path.join(out_dir, PICTURE))
    return points
