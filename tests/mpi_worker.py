"""One training run of the real trainer, started by tests/test_parallel.py under ``mpiexec``
(or alone, as the one-process reference).

    python tests/mpi_worker.py OUT MODEL EPOCHS [--options JSON] [--resume] [--float64] [--guard-writes]

``--float64``: the model, its optimizer state and the data in float64 (the data-parallel run
is compared with one process to 1e-5, which float32 sums would not show); the pictures are
left out (their helpers feed float32). ``--guard-writes``: on ranks other than 0, any file
opened for writing or renamed into OUT fails the run (rank 0 alone writes)."""
import argparse
import builtins
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from helpers import to_float64  # noqa: E402

from tinyvae import data, models, parallel, pictures  # noqa: E402
from tinyvae import train as T  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("model")
parser.add_argument("--options", default="{}", help="the model's options as JSON")
parser.add_argument("epochs", type=int)
parser.add_argument("--resume", action="store_true")
parser.add_argument("--float64", action="store_true")
parser.add_argument("--guard-writes", action="store_true")
parser.add_argument("--batch-size", type=int, default=20)
parser.add_argument("--train-size", type=int, default=207)      # 11 batches of 20, the last of 7
args = parser.parse_args()

if args.float64:
    build, binarize, unit = models.build, data.binarize, data.to_unit_interval
    models.build = lambda *a, **k: to_float64(build(*a, **k))
    data.binarize = lambda pixels, rng: binarize(pixels, rng).astype(np.float64)
    data.to_unit_interval = lambda images: unit(images).astype(np.float64)
    pictures.write_run_pictures = lambda *a, **k: []

if args.guard_writes and parallel.launched_rank() != 0:
    out = os.path.abspath(args.out)
    real_open, real_replace = builtins.open, os.replace

    def guarded(path, mode="r", *a, **k):
        if any(c in mode for c in "wax+") and os.path.abspath(str(path)).startswith(out):
            raise AssertionError(f"rank {parallel.launched_rank()} wrote {path}")
        return real_open(path, mode, *a, **k)

    def guarded_replace(src, dst, *a, **k):
        if os.path.abspath(str(dst)).startswith(out):
            raise AssertionError(f"rank {parallel.launched_rank()} wrote {dst}")
        return real_replace(src, dst, *a, **k)
    builtins.open, os.replace = guarded, guarded_replace

quiet = {"progress": False, "log": lambda *a: None}
if args.resume:
    T.resume(args.out, {"epochs": args.epochs}, **quiet)
else:
    run = T.RunOptions(epochs=args.epochs, batch_size=args.batch_size, train_size=args.train_size, test_size=103,
                       seed=5)
    T.train(args.model, json.loads(args.options), run, args.out, **quiet)
