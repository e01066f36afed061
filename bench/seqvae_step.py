"""Sequence VAE training-step benchmark (issue 20): one step (loss, backward, Adam) of tinyvae's
``seq-vae`` on a batch of real MOSES molecules against a PyTorch twin (``torch.nn.GRU`` encoder
and decoder, the same sizes, embeddings, z beside every decoder input, masked token
cross-entropy and the Gaussian KL), timed in turns in the same run on the same threads. The
GRU recurrence is the hot spot (kernels/gru_cell.py); target ratio ≤ 1.5.

Run: TINYVAE_DATA=../shared/data python bench/seqvae_step.py [--batch 128] [--repeats 20] [--hidden 256]
"""
from __future__ import annotations

# first: keeps bench/kernels.py from shadowing `kernels`
from common import emit, machine, model_step, race_pytorch_twin

import argparse

import numpy as np

from tinyvae import data, models, smiles


def twin(torch, ids: np.ndarray, o):
    """The PyTorch model of ``seq-vae`` with options ``o`` and its step on token ids [B, T]."""
    nn, f = torch.nn, torch.nn.functional
    vocab = len(smiles.VOCABULARY)
    enc_embed, enc = nn.Embedding(vocab, o.embed_dim), nn.GRU(o.embed_dim, o.hidden, batch_first=True)
    to_q, to_h0 = nn.Linear(o.hidden, 2 * o.latent_dim), nn.Linear(o.latent_dim, o.hidden)
    dec_embed, dec = nn.Embedding(vocab, o.embed_dim), nn.GRU(o.embed_dim + o.latent_dim, o.hidden, batch_first=True)
    head = nn.Linear(o.hidden, vocab)
    modules = [enc_embed, enc, to_q, to_h0, dec_embed, dec, head]
    opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-3)
    lengths = smiles.lengths(ids)
    ids = ids[:, :lengths.max()]
    target = torch.from_numpy(ids)
    inputs = torch.from_numpy(np.concatenate([np.full((len(ids), 1), smiles.BOS), ids[:, :-1]], axis=1))
    last = torch.from_numpy(lengths - 1)
    mask = target != smiles.PAD

    def step():
        opt.zero_grad()
        states, _ = enc(enc_embed(target))
        mu, logvar = to_q(states[torch.arange(len(ids)), last]).chunk(2, dim=1)
        logvar = 20 * torch.tanh(logvar / 20)                             # tinyvae's soft clamp
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        kl = 0.5 * (mu * mu + torch.exp(logvar) - 1 - logvar).sum(1)
        z_each = z[:, None, :].expand(-1, ids.shape[1], -1)
        out, _ = dec(torch.cat([dec_embed(inputs), z_each], 2), torch.tanh(to_h0(z))[None])
        nll = f.cross_entropy(head(out).flatten(0, 1), target.flatten(), reduction="none").view(ids.shape)
        ((nll * mask).sum(1) + kl).mean().backward()
        opt.step()
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--hidden", type=int, default=256)
    args = p.parse_args()
    ids = data.load_split("moses", "train", args.batch).x
    model = models.build("seq-vae", {"hidden": args.hidden, "kl_anneal": "none"}, data.SPECS["moses"],
                         rng=np.random.default_rng(0))
    timing = race_pytorch_twin(model_step(model, ids), lambda torch: twin(torch, ids, model.options), args.repeats)
    longest = int(smiles.lengths(ids).max())
    emit(what=f"seq-vae training step, GRU hidden {args.hidden} (loss, backward, Adam)",
         shape=[args.batch, longest], dtype="float32", device="cpu", processor=machine(), repeats=args.repeats,
         **timing, molecules_per_second=args.batch / timing["seconds"])


if __name__ == "__main__":
    main()
