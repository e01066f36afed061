"""Hierarchical VAE training-step benchmark (issue 19): one step (loss, backward, Adam) of
tinyvae's ``hvae`` (2 layers, top-down inference, residual posterior) against a PyTorch twin of
the same architecture (the same layers, soft-clamped log-variances and KL formulas), timed in
turns in the same run on the same threads. Prints one JSON line per architecture (mlp: 50 units
per layer; conv: 4 channels on 14×14 and 7×7): best-of-N seconds per step, images per second,
the twin's, and the ratio (target ≤ 1.2).

Run: python bench/hvae_step.py [--batch 128] [--repeats 30] [--arch mlp conv]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import emit, machine, model_step, race_pytorch_twin

import argparse

import numpy as np

from tinyvae import models


def twin(torch, arch: str, x: np.ndarray):
    """The PyTorch model of ``hvae --layers 2 --arch ARCH`` and its step."""
    nn, f = torch.nn, torch.nn.functional
    clamp = lambda v: 20 * torch.tanh(v / 20)                                      # noqa: E731

    def gaussian(params):
        mu, logvar = params.chunk(2, dim=1)
        return mu, clamp(logvar)

    def residual(prior, delta):
        return prior[0] + delta[0], clamp(prior[1] + delta[1])

    def draw(mu, logvar):
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def kl_standard(mu, logvar):
        return 0.5 * (mu * mu + torch.exp(logvar) - 1 - logvar).flatten(1).sum(1)

    def kl_residual(q, p):
        d_mu, d_lv = q[0] - p[0], q[1] - p[1]
        return 0.5 * (d_mu * d_mu * torch.exp(-p[1]) + torch.exp(d_lv) - d_lv - 1).flatten(1).sum(1)

    if arch == "mlp":
        h, d = 200, 50
        trunk = nn.Sequential(nn.Linear(784, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        head1, up, head2 = nn.Linear(h, 2 * d), nn.Sequential(nn.Linear(h, h), nn.Tanh()), nn.Linear(h, 2 * d)
        down = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
        prior, merge = nn.Linear(h, 2 * d), nn.Linear(h, 2 * d, bias=False)
        decoder = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 784))
        modules = [trunk, head1, up, head2, down, prior, merge, decoder]

        def forward(xt):
            h1 = trunk(xt)
            h2 = up(h1)
            q2 = gaussian(head2(h2))
            z2 = draw(*q2)
            t = down(z2)
            p1 = gaussian(prior(t))
            q1 = residual(p1, (head1(h1) + merge(t)).chunk(2, dim=1))
            z1 = draw(*q1)
            return decoder(z1), kl_standard(*q2) + kl_residual(q1, p1)
    else:
        c, k = 32, 4

        class Res(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1), nn.ReLU(), nn.Conv2d(c, c, 1))

            def forward(self, v):
                return v + self.body(v)
        stem, downsample, upsample = nn.Conv2d(1, c, 4, 2, 1), nn.Conv2d(c, c, 4, 2, 1), nn.ConvTranspose2d(c, c, 4, 2, 1)
        up_cells, down_cells = nn.ModuleList([Res(), Res()]), nn.ModuleList([Res(), Res()])
        start = nn.Parameter(torch.zeros(1, c, 7, 7))
        prior0 = nn.Conv2d(c, 2 * k, 1)
        posteriors = nn.ModuleList([nn.Conv2d(2 * c, 2 * k, 3, 1, 1) for _ in range(2)])
        inputs = nn.ModuleList([nn.Conv2d(k, c, 1) for _ in range(2)])
        out = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Flatten())
        holder = nn.ParameterList([start])
        modules = [stem, downsample, upsample, up_cells, down_cells, prior0, posteriors, inputs, out, holder]

        def forward(xt):
            n = len(xt)
            h0 = up_cells[0](stem(xt.view(n, 1, 28, 28)))
            h1 = up_cells[1](downsample(f.relu(h0)))
            state = start.expand(n, -1, -1, -1)
            q1 = gaussian(posteriors[1](torch.cat([h1, state], 1)).view(n, 2, -1).flatten(1))
            z1 = draw(*q1)
            state = down_cells[1](state + inputs[1](z1.view(n, k, 7, 7)))
            state = upsample(f.relu(state))
            p0 = gaussian(prior0(state).view(n, 2, -1).flatten(1))
            q0 = residual(p0, posteriors[0](torch.cat([h0, state], 1)).view(n, 2, -1).flatten(1).chunk(2, dim=1))
            z0 = draw(*q0)
            state = down_cells[0](state + inputs[0](z0.view(n, k, 14, 14)))
            return out(state), kl_standard(*q1) + kl_residual(q0, p0)
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    xt = torch.from_numpy(x)

    def step():
        opt.zero_grad()
        logits, kl = forward(xt)
        recon = -f.binary_cross_entropy_with_logits(logits, xt, reduction="none").sum(1)
        (kl - recon).mean().backward()
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--arch", nargs="+", choices=("mlp", "conv"), default=["mlp", "conv"])
    args = p.parse_args()
    x = (np.random.default_rng(0).random((args.batch, 784)) < 0.3).astype(np.float32)
    for arch in args.arch:
        step = model_step(models.build("hvae", {"arch": arch, "layers": 2}, rng=np.random.default_rng(0)), x)
        timing = race_pytorch_twin(step, lambda torch: twin(torch, arch, x), args.repeats, warmup=3)
        record = {"what": f"hvae training step, 2 layers, --arch {arch} (loss, backward, Adam)",
                  "shape": [args.batch, 784], "dtype": "float32", "device": "cpu", "processor": machine(),
                  "repeats": args.repeats, **timing, "images_per_second": args.batch / timing["seconds"]}
        emit(**record)


if __name__ == "__main__":
    main()
