"""The ``tinyvae`` command (also ``python -m tinyvae``): models, train, eval, sample,
reconstruct, manifold, interpolate. ``train``'s options are generated from the trainer's
``RunOptions`` and every registered family's ``Options``; an option the chosen model does not
take is refused. Bad input gets one line on stderr and exit status 2; a run that cannot go on
(non-finite loss, missing or corrupt data or checkpoint) gets one line and status 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import MISSING, fields
from typing import Optional

import numpy as np

from . import models, pictures, quality, records
from . import train as T
from .checkpoint import CheckpointError
from .data import DataError
from .run_folder import RunFolderBusy
from .options import flag, value_type
from .viz import save_png

PICTURES = {"sample": "decoded samples from the prior", "reconstruct": "test images and their reconstructions",
            "manifold": "decoded grid over two latent axes", "interpolate": "latent interpolations between test images"}
EVAL_LABELS = {"test_elbo": "test ELBO (nats)", "test_recon": "reconstruction log p(x|z)",
               "test_kl": "KL(q(z|x) || p(z))", "test_nll_iwae": "NLL, IWAE K={iwae_k}", "active_units": "active units",
               "sample_fd": "sample FD ({fd_samples} samples)"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line instead of usage + error
        self.exit(2, f"tinyvae: error: {message}\n")


def _default_text(value) -> str:
    return "none" if value is None else str(value)


def _add_option(group, cls, f, text: str) -> None:
    """``--flag`` for field ``f`` of dataclass ``cls``. Its default stays out of the namespace
    (argparse.SUPPRESS), so what was typed can be told from what was not."""
    choices = f.metadata.get("choices")
    group.add_argument(flag(f.name), dest=f.name, type=value_type(cls, f.name), default=argparse.SUPPRESS,
                       choices=choices, help=text.replace("%", "%%"), metavar=None if choices else f.name.upper())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def model_option_fields() -> dict:
    """Option name → (a family's Options class, field, [(model, default), ...]) over every family."""
    merged = {}
    for name in models.names():
        cls = models.get(name).Options
        for f in fields(cls):
            entry = merged.setdefault(f.name, (cls, f, []))
            entry[2].append((name, f.default if f.default is not MISSING else None))
    return merged


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinyvae", description="Train and inspect variational autoencoders.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("models", help="list the registered models and their options")
    m.add_argument("--json", action="store_true", help="print one JSON object")

    t = sub.add_parser("train", help="train a model; writes DIR/metrics.jsonl, config.json, checkpoint and PNGs")
    t.add_argument("--model", default=argparse.SUPPRESS, choices=models.names() + sorted(models.ALIASES),
                   help="registered model (tinyvae models), or an alias: mlp = vae --arch mlp, conv = vae --arch conv "
                        "(default vae)")
    t.add_argument("--config", default=None, help="a run's config.json: its model, options and run options "
                                                  "(further flags override them)")
    t.add_argument("--out", default=None, help="run folder (default: a new folder runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out with the options it was trained with (--epochs: the new total)")
    t.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    t.add_argument("--no-progress", action="store_true")
    group = t.add_argument_group("run options")
    for f in fields(T.RunOptions):
        _add_option(group, T.RunOptions, f, f"{f.metadata['help']} (default {_default_text(f.default)})")
    group = t.add_argument_group("model options (each taken only by the models named)")
    for cls, f, takers in model_option_fields().values():
        _add_option(group, cls, f, f"{f.metadata['help']}; models: {', '.join(n for n, _ in takers)}; default "
                    + ", ".join(f"{_default_text(d)} ({n})" for n, d in takers))

    e = sub.add_parser("eval", help="the model's test metrics (VAE: ELBO, reconstruction, KL, IWAE NLL, active units)")
    e.add_argument("run_dir")
    e.add_argument("--iwae-k", type=_positive_int, default=5000, help="samples of the IWAE bound, where the model has one")
    e.add_argument("--fd-samples", type=int, default=10000,
                   help="samples for sample_fd, where the model samples images (0: skip it)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--test-size", type=_positive_int, default=None)
    e.add_argument("--batch-size", type=_positive_int, default=100)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--data-dir", default=None)

    for name, helptext in PICTURES.items():
        s = sub.add_parser(name, help=helptext)
        s.add_argument("run_dir")
        s.add_argument("-o", "--output", default=f"{name}.png")
        s.add_argument("--n", type=_positive_int, default=64 if name == "sample" else 20)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--data-dir", default=None)
    return p


def _models(args) -> None:
    listing = {}
    for name in models.names():
        cls = models.get(name)
        listing[name] = {"description": cls.description, "section": cls.section, "needs_parent": cls.needs_parent,
                         "capabilities": [c for c in models.CAPABILITIES if cls.can(c)],
                         "options": {f.name: {"default": f.default, "help": f.metadata["help"],
                                              "choices": list(f.metadata["choices"]) if f.metadata.get("choices")
                                              else None} for f in fields(cls.Options)}}
    if args.json:
        print(json.dumps({"models": listing, "aliases": {a: {"model": m, "options": o}
                                                         for a, (m, o) in models.ALIASES.items()}}))
        return
    for name, entry in listing.items():
        print(f"{name:<6} {entry['description']} (textbook {entry['section']}); "
              f"can: {', '.join(entry['capabilities'])}")
        for option, about in entry["options"].items():
            print(f"         {flag(option):<16} {about['help']} (default {_default_text(about['default'])})")
    for alias, (model, fixed) in models.ALIASES.items():
        print(f"alias  {alias} = {model} " + " ".join(f"{flag(k)} {v}" for k, v in fixed.items()))


def train_request(args) -> tuple:
    """(model name, model options, RunOptions) from the defaults, then --config's record,
    then the flags typed. An option the model does not take is a ValueError."""
    given = vars(args)
    record = records.read_config(args.config) if args.config else None
    name = given.get("model") or (record["model"] if record else "vae")
    family, _ = models.resolve(name)
    options = {}
    if record and models.resolve(record["model"])[0] == family:
        options.update(record["model_options"])
    typed = {key: given[key] for key in model_option_fields() if key in given}
    family_fields = {f.name for f in fields(models.get(family).Options)}
    refused = [key for key in typed if key not in family_fields]
    if refused:
        raise ValueError(f"model {family!r} does not take {', '.join(flag(k) for k in refused)} "
                         f"(its options: {', '.join(flag(k) for k in sorted(family_fields))})")
    options.update(typed)
    run = dict(record["run"]) if record else {}
    run.update({f.name: given[f.name] for f in fields(T.RunOptions) if f.name in given})
    return name, options, T.run_options(run)


def _train(args) -> None:
    command = ["tinyvae", *args.argv]
    if args.resume:
        if args.out is None or args.config:
            raise ValueError("--resume continues the run in --out with its own options: give --out RUN, "
                             "and no --config")
        given = vars(args)
        asked = {key: given[key] for key in ["model", *model_option_fields(), *(f.name for f in fields(T.RunOptions))]
                 if key in given}
        T.resume(args.out, asked, progress=not args.no_progress, command=command)
    else:
        name, options, run = train_request(args)
        if args.out is None:
            args.out = os.path.join("runs", f"{models.resolve(name)[0]}-{run.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
            print(f"run folder: {args.out}")
        T.train(name, options, run, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                command=command)
    print(f"wrote {os.path.join(args.out, T.METRICS)}, {records.CONFIG}, {T.CHECKPOINT} and the pictures")


def _eval(args) -> None:
    model, run = T.load_model(args.run_dir)
    run.test_size, run.data_dir = args.test_size, args.data_dir or run.data_dir
    test = T.load_split(run, "test")
    result = T.evaluate(model, test, np.random.default_rng(args.seed), batch_size=args.batch_size,
                        iwae_k=args.iwae_k if model.can("log_weights") else 0)
    if args.fd_samples > 0 and model.can("sample"):
        classifier, _ = quality.load_classifier(run.dataset, run.data_dir, log=lambda m: print(m, file=sys.stderr))
        result["sample_fd"] = quality.sample_fd(model, test, np.random.default_rng([args.seed, 1]), classifier,
                                                n=args.fd_samples)
        result["fd_samples"] = args.fd_samples
    if args.json:    # strict JSON: a value that is not finite is null
        print(json.dumps({k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in result.items()},
                         allow_nan=False))
        return
    for key, value in result.items():
        if key in ("iwae_k", "fd_samples"):
            continue
        label = EVAL_LABELS.get(key, key).format(iwae_k=result.get("iwae_k"), fd_samples=result.get("fd_samples"))
        print(f"{label:<28} {value:>10.2f}" if isinstance(value, float) else f"{label:<28} {value:>10}")


def _picture(args) -> None:
    model, run = T.load_model(args.run_dir)
    pictures.require(model, args.command)
    run.data_dir = args.data_dir or run.data_dir
    rng = np.random.default_rng(args.seed)
    if args.command == "sample":
        picture = pictures.sample_picture(model, args.n, rng)
    else:
        run.test_size = None
        test = T.load_split(run, "test")
        if args.command == "reconstruct":
            picture = pictures.reconstruction_picture(model, test, n=args.n)
        elif args.command == "manifold":
            picture, axes = pictures.manifold_picture(model, test, n=args.n)
            if model.latent_dim != 2:
                print(f"latent is {model.latent_dim}-D: varying dimensions {axes[0]} and {axes[1]} "
                      f"(the most active), the rest held at 0")
        else:
            picture = pictures.interpolation_picture(model, test, pairs=max(1, args.n // 2), rng=rng)
    save_png(args.output, picture)
    print(f"wrote {args.output}")


def _on_disk(args) -> str:
    """What an interrupted command leaves behind, read from the disk rather than assumed."""
    if args.command != "train":
        return "nothing was written"
    if args.out is None or not os.path.exists(os.path.join(args.out, T.CHECKPOINT)):
        return "no epoch was completed, so no checkpoint was written"
    try:
        epoch = T.saved_run.load(args.out)["epoch"]
    except CheckpointError as e:
        return f"the checkpoint in {args.out} cannot be read ({e})"
    return f"{args.out} holds the checkpoint of epoch {epoch}; continue with: tinyvae train --resume --out {args.out}"


def main(argv: Optional[list] = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    args = _parser().parse_args(argv)
    args.argv = argv
    handlers = {"models": _models, "train": _train, "eval": _eval}
    try:
        handlers.get(args.command, _picture)(args)
    except (T.TrainingError, RunFolderBusy, CheckpointError, DataError, OSError) as e:   # first: CheckpointError
        print(f"tinyvae: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError) as e:
        print(f"tinyvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinyvae: interrupted; {_on_disk(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
