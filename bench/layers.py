"""Layer benchmark (issue: nn toolkit): forward+backward time of the MNIST conv VAE layers
and a Linear 784→512 at batch 128, float32, against PyTorch (CPU, same threads) in the same
run when it is installed; and the peak extra memory of a conv forward+backward, measured
with tracemalloc (NumPy reports its allocations there) over several steps, to show it
stays at the size of the im2col buffer instead of growing.

Run: python bench/layers.py [--repeats N]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import add_target_option, best_of_each, emit, machine, rerun_for_target, try_import_torch

import argparse
import os
import tracemalloc

import numpy as np

import tinyvae as tv
from tinyvae import nn


CASES = [  # name, our layer, torch factory, input shape
    ("Conv2d 1->32 k4 s2 p1", lambda: nn.Conv2d(1, 32, 4, 2, 1), lambda t: t.nn.Conv2d(1, 32, 4, 2, 1), (128, 1, 28, 28)),
    ("Conv2d 32->64 k4 s2 p1", lambda: nn.Conv2d(32, 64, 4, 2, 1), lambda t: t.nn.Conv2d(32, 64, 4, 2, 1),
     (128, 32, 14, 14)),
    ("ConvTranspose2d 64->32 k4 s2 p1", lambda: nn.ConvTranspose2d(64, 32, 4, 2, 1),
     lambda t: t.nn.ConvTranspose2d(64, 32, 4, 2, 1), (128, 64, 7, 7)),
    ("ConvTranspose2d 32->1 k4 s2 p1", lambda: nn.ConvTranspose2d(32, 1, 4, 2, 1),
     lambda t: t.nn.ConvTranspose2d(32, 1, 4, 2, 1), (128, 32, 14, 14)),
    ("Linear 784->512", lambda: nn.Linear(784, 512), lambda t: t.nn.Linear(784, 512), (128, 784)),
]


def step_ours(layer, x):
    xt = tv.tensor(x, requires_grad=True)

    def step():
        layer(xt).sum().backward()
        layer.zero_grad()
        xt.grad = None
    return step


def step_torch(torch, layer, x):
    xt = torch.tensor(x, requires_grad=True)

    def step():
        layer(xt).sum().backward()
        layer.zero_grad(set_to_none=True)
        xt.grad = None
    return step


def peak_extra_bytes(step, steps: int) -> int:
    step()                              # warm caches before measuring
    tracemalloc.start()
    for _ in range(steps):
        step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    add_target_option(ap)
    args = ap.parse_args()
    rerun_for_target(args.target)
    threads = os.cpu_count()
    torch = try_import_torch(threads)
    rng = np.random.default_rng(0)
    for name, make, make_torch, shape in CASES:
        x = rng.standard_normal(shape).astype(np.float32)
        layer = make()
        steps = {"ours": step_ours(layer, x)}
        if torch is not None:
            tl = make_torch(torch)
            with torch.no_grad():
                for (_, p), (_, q) in zip(tl.named_parameters(), layer.named_parameters()):
                    p.copy_(torch.from_numpy(q.data))
            steps["torch"] = step_torch(torch, tl, x)
        best = best_of_each(steps, args.repeats)
        rec = dict(what="layer_fwd_bwd", layer=name, shape=list(shape), dtype="float32", device="cpu",
                   best_ms=best["ours"] * 1e3, machine=machine(), threads=threads,
                   protocol="best of N, in runs taking turns with the peer")
        if torch is not None:
            rec.update(torch_best_ms=best["torch"] * 1e3, ratio_vs_torch=best["ours"] / best["torch"])
        if name.startswith("Conv"):
            win = layer.weight.shape[1] * 16
            out_hw = (shape[2] // 2) ** 2 if name.startswith("Conv2d") else shape[2] ** 2
            im2col_bytes = shape[0] * out_hw * win * 4
            rec["im2col_buffer_mb"] = im2col_bytes / 2**20
            rec["peak_extra_mb_1_step"] = peak_extra_bytes(step_ours(layer, x), 1) / 2**20
            rec["peak_extra_mb_5_steps"] = peak_extra_bytes(step_ours(layer, x), 5) / 2**20
        emit(**rec)


if __name__ == "__main__":
    main()
