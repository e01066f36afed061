"""Posterior training-step benchmark (issue 18): one step (loss, backward, Adam) of tinyvae's
``vae`` with each ``--posterior`` (full covariance, IAF, von Mises–Fisher) against the diagonal
Gaussian's step, same network, batch and latent size, timed in turns in the same run. Prints
one JSON line per posterior: best-of-N seconds per step, images per second, and the ratio to
the diagonal step (target: ≤ 1.5 for full and IAF).

Run: python bench/posterior_step.py [--batch 128] [--latent 50] [--arch mlp] [--repeats 40]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import best_of_each, emit, machine, model_step

import argparse

import numpy as np

from tinyvae import models

POSTERIORS = ("diagonal", "full", "iaf", "vmf")


def step_of(posterior: str, args, x):
    return model_step(models.build("vae", {"arch": args.arch, "latent_dim": args.latent, "posterior": posterior},
                                   rng=np.random.default_rng(0)), x)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--latent", type=int, default=50)
    p.add_argument("--arch", choices=("mlp", "conv"), default="mlp")
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    x = (np.random.default_rng(0).random((args.batch, 784)) < 0.3).astype(np.float32)
    best = best_of_each({name: step_of(name, args, x) for name in POSTERIORS}, repeats=args.repeats, warmup=3)
    for name in POSTERIORS:
        emit(what=f"vae training step, --posterior {name} (loss, backward, Adam)", shape=[args.batch, 784],
             arch=args.arch, latent=args.latent, dtype="float32", device="cpu", processor=machine(),
             repeats=args.repeats, seconds=best[name], images_per_second=args.batch / best[name],
             peer="tinyvae --posterior diagonal", peer_seconds=best["diagonal"],
             ratio=best[name] / best["diagonal"])


if __name__ == "__main__":
    main()
