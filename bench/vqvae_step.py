"""VQ-VAE training-step benchmark (issue 16): one step (loss, backward, Adam) of tinyvae's
``vqvae`` against a PyTorch twin with the same architecture, batch and codebook rule (EMA),
timed in turns in the same run on the same threads. The twin's nearest-code search is the
usual PyTorch one (``torch.cdist`` then ``argmin``, an N×K matrix); tinyvae's is the search
kernel. Prints one JSON line: best-of-N seconds per step for both, images per second, ratio.

Run: python bench/vqvae_step.py [--batch 128] [--hidden 64] [--codes 512] [--repeats 12]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import emit, machine, model_step, race_pytorch_twin

import argparse

import numpy as np

from tinyvae import models


def ours(args, x):
    return model_step(models.build("vqvae", {"hidden": args.hidden, "num_codes": args.codes, "code_dim": args.code_dim,
                                             "codebook_init": "uniform"}, rng=np.random.default_rng(0)), x)


def twin(torch, args, x):
    nn = torch.nn
    k = args.hidden

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(k, k, 3, 1, 1), nn.ReLU(), nn.Conv2d(k, k, 1))

        def forward(self, h):
            return h + self.body(h)
    enc = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, k, 4, 2, 1), nn.ReLU(), nn.Conv2d(k, k, 4, 2, 1),
                        nn.ReLU(), nn.Conv2d(k, k, 3, 1, 1), Res(), Res(), nn.ReLU(), nn.Conv2d(k, args.code_dim, 1))
    dec = nn.Sequential(nn.Conv2d(args.code_dim, k, 3, 1, 1), Res(), Res(), nn.ReLU(), nn.ConvTranspose2d(k, k, 4, 2, 1),
                        nn.ReLU(), nn.ConvTranspose2d(k, 1, 4, 2, 1), nn.Flatten())
    codebook = torch.rand(args.codes, args.code_dim) / args.codes
    ema_count, ema_sum = torch.ones(args.codes), codebook.clone()
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3)
    xt = torch.from_numpy(x)

    def step():
        nonlocal codebook
        opt.zero_grad()
        z = enc(xt).permute(0, 2, 3, 1).reshape(-1, args.code_dim)
        index = torch.cdist(z.detach(), codebook).argmin(1)
        with torch.no_grad():                     # the same EMA rule, Laplace-smoothed counts
            onehot = torch.nn.functional.one_hot(index, args.codes).float()
            ema_count.mul_(0.99).add_(0.01 * onehot.sum(0))
            ema_sum.mul_(0.99).add_(0.01 * onehot.T @ z.detach())
            total = ema_count.sum()
            codebook = ema_sum / ((ema_count + 1e-5) / (total + args.codes * 1e-5) * total)[:, None]
        e = codebook[index]
        q = z + (e - z).detach()
        out = dec(q.reshape(len(xt), 7, 7, args.code_dim).permute(0, 3, 1, 2))
        loss = ((out - xt) ** 2).mean() + 0.25 * ((z - e) ** 2).mean()
        loss.backward()
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--codes", type=int, default=512)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--repeats", type=int, default=12)
    args = p.parse_args()
    x = np.random.default_rng(0).random((args.batch, 784)).astype(np.float32)
    timing = race_pytorch_twin(ours(args, x), lambda torch: twin(torch, args, x), args.repeats)
    record = {"what": "vqvae training step (loss, backward, Adam)", "shape": [args.batch, 1, 28, 28],
              "hidden": args.hidden, "codes": args.codes, "code_dim": args.code_dim, "dtype": "float32",
              "device": "cpu", "processor": machine(), "repeats": args.repeats, **timing,
              "images_per_second": args.batch / timing["seconds"]}
    emit(**record)


if __name__ == "__main__":
    main()
