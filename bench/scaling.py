"""Data-parallel scaling (tinyvae/parallel.py): training steps per second and examples per
second for R ranks × T threads each, on the mlp VAE and the conv VAE, with the time of the
gradient all-reduce per step measured apart. One JSON line per configuration.

Each configuration is its own ``mpiexec -n R`` run (threads set through OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and NUMBA_NUM_THREADS, which must be set before NumPy and Numba load);
a rank takes the trainer's step on its shard of one fixed MNIST batch: the model's loss, its
backward, ``World.reduce_gradients`` (the bucketed all-reduce), an Adam step and
``World.sync_state``. Times are the best of --repeats steps after --warmup, on rank 0 (each
step ends when rank 0's update is done; ranks are in step through the all-reduce). ``speedup``
is against the first configuration (1 rank × 1 thread), measured in the same run.

Run: TINYVAE_DATA=../shared/data python bench/scaling.py [--configs 1x1,1x2,2x1] [--models mlp,conv]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import emit, machine

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

BATCH = {"mlp": 128, "conv": 64}


def worker(args) -> None:
    """One rank of one configuration: print rank 0's timings as JSON."""
    import numpy as np

    from tinyvae import data, models, optim, parallel
    from tinyvae.models.base import StepContext
    world = parallel.world()
    split = data.load_split("mnist", "train", 1000, None)
    rng = np.random.default_rng(0)
    model = models.build(args.model, {}, split.spec, np.random.default_rng(1))
    opt = optim.Adam(list(model.parameters()), lr=1e-3)
    n = BATCH[args.model]
    batch = next(data.batch_dicts(split, n, rng, binary=True, rows=world.rows))
    share = len(batch["y"]) / n
    grad_bytes = sum(p.data.nbytes for p in model.parameters())
    steps, comm = [], []
    for i in range(args.warmup + args.repeats):
        before = world.comm_seconds
        t0 = time.perf_counter()
        loss = model.loss(batch, StepContext(step=i, epoch=1, rng=world.generator(rng, n)))["loss"]
        opt.zero_grad()
        loss.backward()
        world.reduce_gradients(opt.params, share)
        opt.step()
        world.sync_state(model, rng)
        steps.append(time.perf_counter() - t0)
        comm.append(world.comm_seconds - before)
    if world.rank == 0:
        best = int(np.argmin(steps[args.warmup:])) + args.warmup
        print(json.dumps({"step_s": steps[best], "comm_s": comm[best], "median_step_s": float(np.median(steps[args.warmup:])),
                          "median_comm_s": float(np.median(comm[args.warmup:])), "grad_bytes": grad_bytes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="1x1,1x2,2x1", help="ranks x threads per rank, comma-separated")
    parser.add_argument("--models", default="mlp,conv")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="mlp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for model in args.models.split(","):
        base = None
        for config in args.configs.split(","):
            ranks, threads = map(int, config.split("x"))
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
                   "NUMBA_NUM_THREADS": str(threads)}
            command = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model,
                       "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
            done = subprocess.run([mpiexec, "-n", str(ranks), *command] if ranks > 1 else command, env=env,
                                  capture_output=True, text=True, check=True)
            got = json.loads(done.stdout.strip().splitlines()[-1])
            base = base or got["step_s"]
            n = BATCH[model]
            emit(what="data-parallel training step", model=f"vae {model}", ranks=ranks, threads_per_rank=threads,
                 global_batch=n, dtype="float32", device="cpu", processor=machine(), best_of=args.repeats,
                 step_s=got["step_s"], steps_per_s=1 / got["step_s"], examples_per_s=n / got["step_s"],
                 allreduce_s=got["comm_s"], median_step_s=got["median_step_s"],
                 median_allreduce_s=got["median_comm_s"], grad_bytes=got["grad_bytes"],
                 compute_s_per_example=(got["step_s"] - got["comm_s"]) * ranks / n,
                 speedup_vs_1x1=base / got["step_s"])


if __name__ == "__main__":
    main()
