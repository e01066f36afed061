"""The ``tinyvae`` command (also ``python -m tinyvae``): train, eval, sample, reconstruct,
manifold, interpolate. Bad input gets one line on stderr and exit status 2; a run that
cannot go on (non-finite loss, missing or corrupt checkpoint) gets one line and status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

import numpy as np

from . import train as T
from .checkpoint import CheckpointError
from .data import DataError
from .viz import save_png


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line instead of usage + error
        self.exit(2, f"tinyvae: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinyvae", description="Train and inspect variational autoencoders on MNIST.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model; writes DIR/metrics.jsonl, checkpoint and PNGs")
    t.add_argument("--model", choices=["mlp", "conv", "ae"], default="mlp")
    t.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    t.add_argument("--epochs", type=_positive_int, default=10)
    t.add_argument("--batch-size", type=_positive_int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-schedule", choices=T.LR_SCHEDULES, default="constant",
                   help="iwae: the IWAE paper's 8 stages of 3^i epochs at 10^(-i/7) x --lr (3280 epochs)")
    t.add_argument("--beta", type=float, default=1.0, help="weight of the KL term (β-VAE)")
    t.add_argument("--kl-anneal", choices=["none", "linear", "cyclical"], default="none")
    t.add_argument("--warmup-steps", type=_positive_int, default=10000,
                   help="length of the linear KL warm-up, or of one annealing cycle")
    t.add_argument("--free-bits", type=float, default=0.0, help="λ in nats per latent dimension")
    t.add_argument("--iwae-k", type=_positive_int, default=1, help="train on the IWAE bound with K samples")
    t.add_argument("--latent-dim", type=_positive_int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--out", default="runs/vae", help="run folder (default runs/vae)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--train-size", type=_positive_int, default=None, help="use only the first N training images")
    t.add_argument("--test-size", type=_positive_int, default=None, help="use only the first N test images")
    t.add_argument("--no-progress", action="store_true")

    e = sub.add_parser("eval", help="test ELBO, reconstruction, KL, IWAE NLL and active units")
    e.add_argument("run_dir")
    e.add_argument("--iwae-k", type=_positive_int, default=5000)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--test-size", type=_positive_int, default=None)
    e.add_argument("--batch-size", type=_positive_int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--data-dir", default=None)

    for name, helptext in (("sample", "decoded samples from the prior"),
                           ("reconstruct", "test images and their reconstructions"),
                           ("manifold", "decoded grid over two latent axes"),
                           ("interpolate", "latent interpolations between test images")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("run_dir")
        s.add_argument("-o", "--output", default=f"{name}.png")
        s.add_argument("--n", type=_positive_int, default=64 if name == "sample" else 20)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--data-dir", default=None)
    return p


def _train(args) -> None:
    config = T.Config(model=args.model, dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, lr_schedule=args.lr_schedule, beta=args.beta, kl_anneal=args.kl_anneal,
                      warmup_steps=args.warmup_steps, free_bits=args.free_bits, iwae_k=args.iwae_k,
                      latent_dim=args.latent_dim, seed=args.seed, device=args.device, train_size=args.train_size,
                      test_size=args.test_size, data_dir=args.data_dir)
    T.train(config, args.out, resume=args.resume, progress=not args.no_progress)
    print(f"wrote {os.path.join(args.out, T.METRICS)}, {T.CHECKPOINT}, samples.png and reconstructions.png")


def _eval(args) -> None:
    model, config = T.load_model(args.run_dir)
    config.test_size, config.data_dir = args.test_size, args.data_dir or config.data_dir
    result = T.evaluate(model, T.load_pixels(config, "test"), np.random.default_rng(args.seed),
                        batch_size=args.batch_size, iwae_k=args.iwae_k)
    if args.json:
        print(json.dumps(result))
        return
    labels = [("test ELBO (nats)", "test_elbo"), ("reconstruction log p(x|z)", "test_recon"),
              ("KL(q(z|x) || p(z))", "test_kl"), (f"NLL, IWAE K={args.iwae_k}", "test_nll_iwae"),
              ("active units", "active_units")]
    for label, key in labels:
        value = result[key]
        print(f"{label:<28} {value:>10.2f}" if isinstance(value, float) else f"{label:<28} {value:>10}")


def _picture(args) -> None:
    model, config = T.load_model(args.run_dir)
    config.data_dir = args.data_dir or config.data_dir
    rng = np.random.default_rng(args.seed)
    if args.command == "sample":
        picture = T.sample_picture(model, args.n, rng)
    else:
        config.test_size = None
        pixels = T.load_pixels(config, "test")
        if args.command == "reconstruct":
            picture = T.reconstruction_picture(model, pixels, n=args.n)
        elif args.command == "manifold":
            picture, axes = T.manifold_picture(model, pixels, n=args.n)
            if model.latent_dim != 2:
                print(f"latent is {model.latent_dim}-D: varying dimensions {axes[0]} and {axes[1]} "
                      f"(the most active), the rest held at 0")
        else:
            picture = T.interpolation_picture(model, pixels, pairs=max(1, args.n // 2), rng=rng)
    save_png(args.output, picture)
    print(f"wrote {args.output}")


def main(argv: Optional[list] = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"train": _train, "eval": _eval}
    try:
        handlers.get(args.command, _picture)(args)
    except (T.TrainingError, CheckpointError, DataError, OSError) as e:   # before ValueError: CheckpointError is one
        print(f"tinyvae: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:
        print(f"tinyvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinyvae: interrupted; the last completed epoch's checkpoint is intact", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
