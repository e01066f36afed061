"""VAE training benchmark (issue: the VAE). Trains the preset with tinyvae and, where PyTorch is
installed, the same architecture in PyTorch with the same settings (batch 128, Adam lr 1e-3,
dynamic binarization, one-sample analytic-KL ELBO), in the same run, on the same threads.
Prints one JSON line: median seconds per epoch (training loop only; the two trainers take
turns epoch by epoch), test ELBO and test NLL (IWAE with --iwae-k samples) for both, and
the ratios.

Run: TINYVAE_DATA=../shared/data python bench/vae_mnist.py --epochs 10 [--model conv] [--iwae-k 100]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import add_target_option, emit, machine, rerun_for_target, try_import_torch

import argparse
import math
import os
import time

import numpy as np

from tinyvae import data, models, optim
from tinyvae.models.base import StepContext
from tinyvae.train import evaluate

BATCH, LR = 128, 1e-3


def train_ours(args, train: data.Split, test: data.Split, iwae_k):
    """Generator: yields each epoch's training seconds, then returns (test ELBO, test NLL).
    The model's own loss, in a bare loop (no checkpoints, metrics or pictures to time)."""
    rng = np.random.default_rng(args.seed)
    model = models.build(args.model, {}, train.spec, rng)
    opt = optim.Adam(model.parameters(), lr=LR)
    step = 0
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        for batch in data.batch_dicts(train, BATCH, rng, binary=True):
            loss = model.loss(batch, StepContext(step=step, epoch=epoch, rng=rng))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        yield time.perf_counter() - t0
    result = evaluate(model, test, np.random.default_rng(123), iwae_k=iwae_k)
    return result["test_elbo"], result.get("test_nll_iwae")


def torch_model(torch, preset: str, latent: int):
    nn = torch.nn
    if preset == "mlp":
        enc = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 2 * latent))
        dec = nn.Sequential(nn.Linear(latent, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 784))
    else:
        enc = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(),
                            nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 2 * latent))
        dec = nn.Sequential(nn.Linear(latent, 3136), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)),
                            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1),
                            nn.Flatten())
    return enc, dec


def torch_terms(torch, enc, dec, x, latent, k=None):
    """(recon, kl) per example (k None) or log importance weights [k, N], mirroring tinyvae's model."""
    F = torch.nn.functional
    h = enc(x)
    mu, logvar = h[:, :latent], 20 * torch.tanh(h[:, latent:] / 20)   # the same soft clamp
    if k is None:
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        recon = -F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(1)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1 - logvar).sum(1)
        return recon, kl
    rows = []
    for _ in range(k):
        eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_q = (-0.5 * (math.log(2 * math.pi) + logvar + eps * eps)).sum(1)
        log_p = (-0.5 * (math.log(2 * math.pi) + z * z)).sum(1)
        rows.append(-F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(1) + log_p - log_q)
    return torch.stack(rows)


def train_torch(torch, args, latent, train_pixels, test_pixels, iwae_k):
    """Generator, as train_ours."""
    torch.manual_seed(args.seed)
    enc, dec = torch_model(torch, args.model, latent)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=LR)
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        for idx in data.batches(len(train_pixels), BATCH, rng):
            x = torch.from_numpy(data.binarize(train_pixels[idx], rng))
            recon, kl = torch_terms(torch, enc, dec, x, latent)
            loss = -(recon - kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        yield time.perf_counter() - t0
    binary = torch.from_numpy(data.binarize(test_pixels, np.random.default_rng(123)))
    elbo, iwae = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(binary), 500):
            x = binary[start:start + 500]
            recon, kl = torch_terms(torch, enc, dec, x, latent)
            elbo += float((recon - kl).sum())
            if iwae_k:
                done = []
                for c in range(0, iwae_k, 100):
                    done.append(torch.logsumexp(torch_terms(torch, enc, dec, x, latent, min(100, iwae_k - c)), 0))
                iwae += float((torch.logsumexp(torch.stack(done), 0) - math.log(iwae_k)).sum())
    return elbo / len(binary), (-iwae / len(binary) if iwae_k else None)


def run_alternating(runs: dict) -> dict:
    """Advance the trainers one epoch each in turn, so a busy moment on a shared machine
    slows both rather than one; return {name: (epoch seconds, (test ELBO, test NLL))}."""
    seconds = {name: [] for name in runs}
    results = {}
    while len(results) < len(runs):
        for name, gen in runs.items():
            if name in results:
                continue
            try:
                seconds[name].append(next(gen))
            except StopIteration as done:
                results[name] = done.value
    return {name: (seconds[name], results[name]) for name in runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--model", choices=["mlp", "conv"], default="mlp")
    ap.add_argument("--iwae-k", type=int, default=100, help="IWAE samples for the test NLL (0: skip)")
    ap.add_argument("--test-size", type=int, default=None, help="evaluate on the first N test images")
    ap.add_argument("--seed", type=int, default=0)
    add_target_option(ap)
    args = ap.parse_args()
    rerun_for_target(args.target)
    train, test = data.load_split("mnist", "train"), data.load_split("mnist", "test", args.test_size)
    threads = os.cpu_count()
    torch = try_import_torch(threads)
    runs = {"ours": train_ours(args, train, test, args.iwae_k)}
    if torch is not None:
        latent = models.build(args.model).latent_dim
        runs["torch"] = train_torch(torch, args, latent, train.x, test.x, args.iwae_k)
    done = run_alternating(runs)
    seconds, (elbo, nll) = done["ours"]
    rec = dict(what="vae_mnist_training", model=args.model, epochs=args.epochs, batch_size=BATCH, lr=LR,
               dtype="float32", device="cpu", machine=machine(), threads=threads, protocol="alternating epochs",
               sec_per_epoch=float(np.median(seconds)), test_elbo=elbo, test_nll_iwae=nll,
               iwae_k=args.iwae_k, test_images=len(test))
    if torch is not None:
        t_seconds, (t_elbo, t_nll) = done["torch"]
        rec.update(torch_sec_per_epoch=float(np.median(t_seconds)), torch_test_elbo=t_elbo, torch_test_nll_iwae=t_nll,
                   sec_per_epoch_ratio_vs_torch=float(np.median(seconds) / np.median(t_seconds)),
                   test_elbo_gap_vs_torch=elbo - t_elbo)
    emit(**rec)


if __name__ == "__main__":
    main()
