"""Engine overhead benchmark (issue: the autodiff engine).

1. Per-op overhead: forward+backward of a 200-op elementwise chain on small arrays,
   reported in µs per op.
2. A 3-layer MLP 784-512-512-10, batch 128, float32: forward + backward time.
Both measured for PyTorch (CPU, same threads) in the same run when it is installed.

Run: python bench/engine.py [--repeats N]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import add_target_option, best_of, emit, machine, rerun_for_target, try_import_torch

import argparse
import os

import numpy as np

import tinyvae as tv
from tinyvae import functional as F


CHAIN = 200


def chain_ours(x0: np.ndarray):
    x = tv.tensor(x0, requires_grad=True)

    def step():
        y = x
        for i in range(CHAIN // 4):     # 4 ops per round: mul, add, tanh, sub
            y = F.tanh(y * 0.9 + 0.1) - 0.01
        y.sum().backward()
        x.grad = None
    return step


def chain_torch(torch, x0: np.ndarray):
    x = torch.tensor(x0, requires_grad=True)

    def step():
        y = x
        for i in range(CHAIN // 4):
            y = torch.tanh(y * 0.9 + 0.1) - 0.01
        y.sum().backward()
        x.grad = None
    return step


def mlp_weights(rng):
    sizes = [784, 512, 512, 10]
    return [((rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32), np.zeros(o, np.float32))
            for i, o in zip(sizes[:-1], sizes[1:])]


def mlp_ours(weights, x0, y0):
    params = [(tv.tensor(w, requires_grad=True), tv.tensor(b, requires_grad=True)) for w, b in weights]
    x, y = tv.tensor(x0), tv.tensor(y0)

    def step():
        h = x
        for k, (w, b) in enumerate(params):
            h = h @ w.T + b
            if k < len(params) - 1:
                h = F.relu(h)
        F.cross_entropy(h, y.data).backward()
        for w, b in params:
            w.grad = b.grad = None
    return step


def mlp_torch(torch, weights, x0, y0):
    params = [(torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)) for w, b in weights]
    x, y = torch.tensor(x0), torch.tensor(y0)

    def step():
        h = x
        for k, (w, b) in enumerate(params):
            h = torch.nn.functional.linear(h, w, b)
            if k < len(params) - 1:
                h = torch.relu(h)
        torch.nn.functional.cross_entropy(h, y).backward()
        for w, b in params:
            w.grad = b.grad = None
    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=30)
    add_target_option(ap)
    args = ap.parse_args()
    rerun_for_target(args.target)
    threads = os.cpu_count()
    torch = try_import_torch(threads)
    rng = np.random.default_rng(0)
    where = dict(device="cpu", machine=machine(), threads=threads)

    x0 = rng.standard_normal((8, 8)).astype(np.float32)
    ours = best_of(chain_ours(x0), args.repeats)
    rec = dict(what="elementwise_chain_fwd_bwd", ops=CHAIN, shape=[8, 8], dtype="float32",
               best_s=ours, us_per_op=ours / CHAIN * 1e6, **where)
    if torch is not None:
        peer = best_of(chain_torch(torch, x0), args.repeats)
        rec.update(torch_us_per_op=peer / CHAIN * 1e6, ratio_vs_torch=ours / peer)
    emit(**rec)

    weights = mlp_weights(rng)
    xb = rng.random((128, 784)).astype(np.float32)
    yb = rng.integers(0, 10, 128)
    ours = best_of(mlp_ours(weights, xb, yb), args.repeats)
    flops = 6 * 128 * sum(w.size for w, _ in weights)   # fwd 2·B·W, bwd 4·B·W
    rec = dict(what="mlp_784_512_512_10_fwd_bwd", shape=[128, 784], dtype="float32", best_s=ours,
               gflops=flops / ours / 1e9, **where)
    if torch is not None:
        peer = best_of(mlp_torch(torch, weights, xb, yb), args.repeats)
        rec.update(torch_best_s=peer, ratio_vs_torch=ours / peer)
    emit(**rec)


if __name__ == "__main__":
    main()
