"""PixelCNN prior training-step benchmark (issue 16): one step (logits, cross-entropy over the
codes, backward, Adam) of tinyvae's gated PixelCNN (``nn.PixelCNN``, what ``pixelcnn-prior``
trains on a VQ-VAE's cached codes) against PyTorch twins with the same gated blocks and head,
batch and grid, timed in turns in the same run on the same threads. Two twins, one JSON line
each (best-of-N seconds per step for both, code grids per second, ratio): the masked
convolution as PyTorch code usually writes it, the whole k×k kernel times the mask; and the
same products tinyvae computes, only the kernel's window around the mask's ones on an input
padded to match (``nn.MaskedConv2d``).

Run: python bench/pixelcnn_step.py [--batch 128] [--grid 7] [--codes 512] [--channels 64] [--blocks 6]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import emit, machine, race_pytorch_twin

import argparse

import numpy as np

from tinyvae import functional as F
from tinyvae import nn, optim
from tinyvae.nn.pixelcnn import horizontal_mask, vertical_mask


def ours(args, codes):
    net = nn.PixelCNN(args.codes, args.channels, args.blocks, args.kernel, rng=np.random.default_rng(0))
    opt = optim.Adam(net.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        F.cross_entropy(net(codes), codes).backward()          # logits [N, K, H, W]
        opt.step()
    return step


TWINS = {"full": "the whole k×k kernel times the mask",
         "window": "the kernel's window around the mask's ones, the input padded to match (as tinyvae)"}


def twin(torch, args, codes, variant):
    tnn, c, k = torch.nn, args.channels, args.kernel

    class Masked(tnn.Conv2d):
        def __init__(self, cin, cout, mask):
            super().__init__(cin, cout, mask.shape, padding=(mask.shape[0] // 2, mask.shape[1] // 2))
            self.register_buffer("mask", torch.from_numpy(mask))
            window = nn.MaskedConv2d(1, 1, mask)            # where tinyvae's window and padding come from
            self.window, ((top, bottom), (left, right)) = window.window, window.padding
            self.pad = (left, right, top, bottom)

        def forward(self, x):
            if variant == "full":
                return self._conv_forward(x, self.weight * self.mask, self.bias)
            rows, cols = self.window
            weight = self.weight[:, :, rows, cols] * self.mask[rows, cols]
            return tnn.functional.conv2d(tnn.functional.pad(x, self.pad), weight, self.bias)

    def gate(t):
        return torch.tanh(t[:, :c]) * torch.sigmoid(t[:, c:])

    class Block(tnn.Module):
        def __init__(self, first):
            super().__init__()
            self.first = first
            self.vertical, self.horizontal = Masked(c, 2 * c, vertical_mask(k)), Masked(c, 2 * c, horizontal_mask(k, first))
            self.down, self.out = tnn.Conv2d(2 * c, 2 * c, 1), tnn.Conv2d(c, c, 1)

        def forward(self, v, h):
            v_pre = self.vertical(v)
            shifted = tnn.functional.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]
            h_new = self.out(gate(self.horizontal(h) + self.down(shifted)))
            return gate(v_pre), (h_new if self.first else h + h_new)

    embed = tnn.Embedding(args.codes, c)
    blocks = tnn.ModuleList([Block(i == 0) for i in range(args.blocks)])
    head = tnn.Sequential(tnn.ReLU(), tnn.Conv2d(c, c, 1), tnn.ReLU(), tnn.Conv2d(c, args.codes, 1))
    params = list(embed.parameters()) + list(blocks.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    index = torch.from_numpy(codes)

    def step():
        opt.zero_grad()
        v = h = embed(index).permute(0, 3, 1, 2)
        for block in blocks:
            v, h = block(v, h)
        tnn.functional.cross_entropy(head(h), index).backward()      # logits [N, K, H, W]
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--grid", type=int, default=7)
    p.add_argument("--codes", type=int, default=512)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--repeats", type=int, default=12)
    args = p.parse_args()
    codes = np.random.default_rng(0).integers(0, args.codes, (args.batch, args.grid, args.grid))
    step = ours(args, codes)
    for variant, how in TWINS.items():
        timing = race_pytorch_twin(step, lambda torch: twin(torch, args, codes, variant), args.repeats)
        emit(what="gated PixelCNN prior training step (logits, cross-entropy, backward, Adam)",
             shape=[args.batch, args.grid, args.grid], codes=args.codes, channels=args.channels, blocks=args.blocks,
             kernel=args.kernel, dtype="float32", device="cpu", processor=machine(), repeats=args.repeats,
             peer_masked_convolution=how, **timing, grids_per_second=args.batch / timing["seconds"])


if __name__ == "__main__":
    main()
