"""The ``tinyvae`` command (also ``python -m tinyvae``): models, train, sweep, eval, plot, report,
sample, reconstruct, manifold, interpolate, traverse. ``train``'s options are generated from the trainer's
``RunOptions`` and every registered family's ``Options``; an option the chosen model does not
take is refused. Bad input gets one line on stderr and exit status 2; a run that cannot go on
(non-finite loss, missing or corrupt data or checkpoint) gets one line and status 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import MISSING, fields
from typing import Optional

import numpy as np

from . import __version__, data, models, molecules, parallel, pictures, quality, records, saved_run, smiles, sweep
from . import train as T
from .atomic import write_atomic
from .checkpoint import CheckpointError
from .data import DataError
from .run_folder import RunFolderBusy
from .options import flag, value_type
from .parallel import ParallelError, exit_after
from .report import write_report
from .viz import image_format, save_image

PICTURES = {   # command: (help, its count option, default, most, example)
    "sample": ("decoded samples from the prior", "n", 64, 1024, "--n 100 -o samples.png"),
    "reconstruct": ("test images and their reconstructions", "n", 32, 512, "--n 16 -o recon.jpg"),
    "manifold": ("decoded grid over two latent axes", "grid", 20, 64, "--grid 15 -o manifold.png"),
    "interpolate": ("latent interpolations between test images", "pairs", 8, 64, "--pairs 4 -o interp.png"),
    "traverse": ("latent traversals: each dimension (most KL first) from -3 to 3 around a test image's code",
                 "dims", 10, 64, "--dims 8 -o traverse.png")}
PICTURE_COUNTS = {"n": "how many images", "grid": "points per side of the grid",
                  "pairs": "pairs of test images, one row each",
                  "dims": "latent dimensions, one row each, the most informative first"}
EVAL_LABELS = {"test_elbo": "test ELBO (nats)", "test_recon": "reconstruction log p(x|z)",
               "test_kl": "KL(q(z|x) || p(z))", "test_nll_iwae": "NLL, IWAE K={iwae_k}", "active_units": "active units",
               "sample_fd": "sample FD ({fd_samples} samples)",
               "cond_sample_accuracy": "label of samples given it", "test_accuracy": "accuracy of q(y|x)",
               "test_label_accuracy": "label from the image alone", "test_imputation_mse": "imputation MSE",
               "test_mean_imputation_mse": "mean imputation MSE",
               "kl_per_dim": "KL per dimension (nats)", "test_recon_accuracy": "exact greedy reconstructions",
               "nelbo_per_token": "-ELBO per token (nats)", "mutual_info": "mutual information I(x; z)",
               "valid": "valid ({fd_samples} samples)", "unique": "unique among valid", "novel": "novel among unique"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line instead of usage + error
        self.exit(2, f"tinyvae: error: {message}\n")


def _default_text(value) -> str:
    return "none" if value is None else str(value)


def _add_option(group, cls, f, text: str, listed: bool = False) -> None:
    """``--flag`` for field ``f`` of dataclass ``cls``. Its default stays out of the namespace
    (argparse.SUPPRESS), so what was typed can be told from what was not. ``listed``: it
    takes a comma-separated list of values (``tinyvae sweep``)."""
    choices = f.metadata.get("choices")
    convert = value_type(cls, f.name)
    if convert is bool:                  # bool("false") is True: read the word instead
        convert, choices = boolean, None
    if listed:
        convert, choices = _listed(convert, choices), None
    group.add_argument(flag(f.name), dest=f.name, type=convert, default=argparse.SUPPRESS,
                       choices=choices, help=text.replace("%", "%%"),
                       metavar=None if choices else "true|false" if convert is boolean else f.name.upper())


def boolean(text: str) -> bool:
    """true/false (also yes/no, 1/0), in any case; argparse names it "boolean" when it is neither."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise ValueError(text)
    return words[text.lower()]


def _listed(convert, choices):
    """An argparse type: comma-separated values, each converted (and checked against ``choices``)."""
    def one(part: str):
        try:
            return convert(part)
        except ValueError:      # name the value that is wrong, not the whole list
            raise argparse.ArgumentTypeError(f"invalid {values.__name__} value: {part!r}") from None

    def values(text: str) -> list:
        out = [one(part.strip()) for part in text.split(",")]
        wrong = [v for v in out if choices and v not in choices]
        if wrong:
            raise argparse.ArgumentTypeError(f"invalid choice: {wrong[0]!r} (choose from {', '.join(map(str, choices))})")
        return out
    values.__name__ = getattr(convert, "__name__", "value")
    return values


def _add_run_and_model_options(p: argparse.ArgumentParser, listed: bool = False) -> None:
    """The run options and every family's model options, as ``train`` and ``sweep`` take them."""
    group = p.add_argument_group("run options")
    for f in fields(T.RunOptions):
        _add_option(group, T.RunOptions, f, f"{f.metadata['help']} (default {_default_text(f.default)})", listed)
    group = p.add_argument_group("model options (each taken only by the models named)")
    for cls, f, takers in model_option_fields().values():
        helps = {h for _, _, h in takers}       # one meaning, or each family's own (--beta: KL or commitment)
        meaning = helps.pop() if len(helps) == 1 else "; ".join(f"{n}: {h}" for n, _, h in takers)
        _add_option(group, cls, f, f"{meaning}; models: {', '.join(n for n, _, _ in takers)}; default "
                    + ", ".join(f"{_default_text(d)} ({n})" for n, d, _ in takers), listed)


def _integer(minimum: int, maximum: Optional[int] = None, why: str = ""):
    """An argparse type: an integer in [minimum, maximum]; its name is what argparse prints
    for text that is not one ("invalid integer value: 'abc'")."""
    def integer(text: str) -> int:
        value = int(text)
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bound}{why}, got {value}")
        return value
    return integer


def model_option_fields() -> dict:
    """Option name → (a family's Options class, field, [(model, default, help), ...]) over every family."""
    merged = {}
    for name in models.names():
        cls = models.get(name).Options
        for f in fields(cls):
            entry = merged.setdefault(f.name, (cls, f, []))
            entry[2].append((name, f.default if f.default is not MISSING else None, f.metadata["help"]))
    return merged


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tinyvae", description="Train and inspect variational autoencoders.",
                epilog="examples:\n  tinyvae train --epochs 5 --out runs/mnist\n  tinyvae train --resume --out runs/mnist "
                       "--epochs 10\n  tinyvae eval runs/mnist\n  tinyvae sample runs/mnist -o samples.png\n"
                       "  tinyvae models\n",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"tinyvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    m = sub.add_parser("models", help="list the registered models and their options")
    m.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    t = sub.add_parser("train", help="train a model; writes DIR/metrics.jsonl, config.json, checkpoint and PNGs",
                       epilog="examples:\n  tinyvae train --epochs 5 --out runs/mnist\n"
                              "  tinyvae train --model vae --arch conv --beta 4 --kl-anneal linear --dataset fashion-mnist\n"
                              "  tinyvae train --resume --out runs/mnist --epochs 10\n"
                              "  tinyvae train --config runs/mnist/config.json --out runs/again\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--model", default=argparse.SUPPRESS, choices=models.names() + sorted(models.ALIASES),
                   help="registered model (tinyvae models), or an alias: mlp = vae --arch mlp, conv = vae --arch conv "
                        "(default vae)")
    t.add_argument("--config", default=None, help="a run's config.json: its model, options and run options "
                                                  "(further flags override them)")
    t.add_argument("--out", default=None, help="run folder (default: a new folder runs/<model>-<dataset>-<time>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out with the options it was trained with (--epochs: the new total)")
    t.add_argument("--overwrite", action="store_true", help="replace the run that --out holds")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard logs into DIR/tensorboard (needs tinyvae[tensorboard])")
    t.add_argument("--no-progress", action="store_true", help="no progress bars: one plain line per epoch")
    _add_run_and_model_options(t)

    w = sub.add_parser("sweep", help="one run per value of one option, then rate against distortion "
                                     "(DIR/sweep.jsonl, DIR/rate_distortion.png)",
                       epilog="example:\n  tinyvae sweep --model vae --beta 0.1,0.25,0.5,1,2,4,8 --epochs 20 "
                              "--out runs/beta-sweep\n(each value's run is DIR/<option>-<value>, a run folder like "
                              "train's; run the same command again to continue a sweep cut short)\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("--model", default=argparse.SUPPRESS, choices=models.names() + sorted(models.ALIASES),
                   help="registered model or alias, as train takes it (default vae)")
    w.add_argument("--config", default=None, help="a run's config.json to start from, as train takes it")
    w.add_argument("--out", default=None, help="the sweep's folder (default: a new folder runs/sweep-<model>-<option>-<time>)")
    w.add_argument("--overwrite", action="store_true", help="replace runs the folder already holds")
    w.add_argument("--no-progress", action="store_true", help="no progress bars: one plain line per epoch")
    _add_run_and_model_options(w, listed=True)

    e = sub.add_parser("eval", help="the model's test metrics (VAE: ELBO, reconstruction, KL, IWAE NLL, active units)",
                       epilog="example: tinyvae eval runs/vae-mnist-20261202-101500 --iwae-k 100 --json\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run_dir", metavar="RUN", help="a run folder (holding checkpoint.safetensors)")
    e.add_argument("--iwae-k", type=_integer(1), default=5000,
                   help="samples per example of the IWAE bound, where the model has one (default 5000)")
    e.add_argument("--fd-samples", type=_integer(0), default=10000,
                   help="samples for sample_fd, where the model samples images, for cond_sample_accuracy, "
                        "where it samples given a label, and for valid, unique and novel (RDKit), where it samples "
                        "molecules; 0 skips them (default 10000)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    e.add_argument("--test-size", type=_integer(1), default=None, help="use only the first N test images (default all)")
    e.add_argument("--batch-size", type=_integer(1), default=100, help="test images per batch (default 100)")
    e.add_argument("--seed", type=_integer(0), default=0, help="seed of the binarization and the samples (default 0)")
    e.add_argument("--data-dir", default=None, help="folder holding <dataset>/*.gz (default: the run's)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar: one line per evaluation stage")

    pl = sub.add_parser("plot", help="every picture of a run: learning curves, latent scatter, manifold, samples, "
                                     "reconstructions", epilog="example: tinyvae plot runs/mnist -o plots/\n",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pl.add_argument("run_dir", metavar="RUN", help="a run folder (holding checkpoint.safetensors)")
    pl.add_argument("-o", "--out", default=None, help="folder to write them into (default: the run folder)")
    pl.add_argument("--seed", type=_integer(0), default=0, help="seed of the samples (default 0)")
    pl.add_argument("--data-dir", default=None, help="folder holding <dataset>/*.gz (default: the run's)")

    r = sub.add_parser("report", help="one self-contained HTML page comparing runs",
                       epilog="example: tinyvae report runs/beta1 runs/beta4 -o report.html\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("run_dirs", metavar="RUN", nargs="+", help="run folders to compare")
    r.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")

    for name, (helptext, count, default, maximum, example) in PICTURES.items():
        s = sub.add_parser(name, help=helptext, epilog=f"example: tinyvae {name} RUN {example}\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        s.add_argument("run_dir", metavar="RUN", help="a run folder (holding checkpoint.safetensors)")
        s.add_argument("-o", "--output", default=f"{name}.png",
                       help=f"image file to write, .png or .jpg (default {name}.png)")
        s.add_argument(f"--{count}", dest="count", type=_integer(1, maximum, " (the picture would be too large to open)"),
                       default=default, help=f"{PICTURE_COUNTS[count]} (default {default}, at most {maximum})")
        s.add_argument("--seed", type=_integer(0), default=0, help="seed of the samples or the images picked (default 0)")
        s.add_argument("--data-dir", default=None, help="folder holding <dataset>/*.gz (default: the run's)")
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
    then the flags typed; with --parent and no data set named, the parent's. An option the
    model does not take is a ValueError."""
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
    if run.get("parent") and "dataset" not in run:         # a second stage models its parent's data
        run["dataset"] = T.run_options(saved_run.load(run["parent"])["run"]).dataset   # its record, no model built
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
        T.resume(args.out, asked, progress=not args.no_progress, command=command, tensorboard=args.tensorboard)
    else:
        name, options, run = train_request(args)
        if args.out is None:      # the ranks of one run may start a second apart: rank 0's name for all
            args.out = parallel.world(run.device).from_root(lambda: os.path.join(
                "runs", f"{models.resolve(name)[0]}-{run.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"))
            _root_print(f"run folder: {args.out}")
        T.train(name, options, run, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                command=command, tensorboard=args.tensorboard)
    _root_print(f"wrote {os.path.join(args.out, T.METRICS)}, {records.CONFIG}, {T.CHECKPOINT} and the pictures")


def _root_print(line: str) -> None:
    """Print on rank 0 only: one line for the run, however many ranks train it."""
    if parallel.launched_rank() == 0:
        print(line)


def _sweep(args) -> None:
    """The one option typed with several values is the sweep's axis; each value's request is
    what ``train`` would make of the same flags with that value (train_request)."""
    given = vars(args)
    options = [*model_option_fields(), *(f.name for f in fields(T.RunOptions))]
    listed = {key: given[key] for key in options if key in given}
    axes = [key for key, value in listed.items() if len(value) > 1]
    if len(axes) != 1:
        raise ValueError("give exactly one option several comma-separated values to sweep, e.g. --beta 0.5,1,4"
                         + (f" (got several: {', '.join(flag(k) for k in axes)})" if axes else ""))
    axis = axes[0]
    requests = []
    for value in listed[axis]:
        one = {**given, **{key: v[0] for key, v in listed.items()}, axis: value}
        requests.append((value, *train_request(argparse.Namespace(**one))))
    name = requests[0][1]
    if args.out is None:
        args.out = os.path.join("runs", f"sweep-{models.resolve(name)[0]}-{axis}-{time.strftime('%Y%m%d-%H%M%S')}")
        print(f"sweep folder: {args.out}")
    sweep.sweep(requests, axis, args.out, overwrite=args.overwrite, progress=not args.no_progress,
                command=["tinyvae", *args.argv])
    print(f"wrote {os.path.join(args.out, sweep.POINTS)} and {os.path.join(args.out, sweep.PICTURE)}")


def _eval(args) -> None:
    model, run = T.load_model(args.run_dir)
    run.test_size, run.data_dir = args.test_size, args.data_dir or run.data_dir
    cache = args.run_dir if parallel.launched_rank() == 0 else None        # rank 0 alone writes
    test = T.with_derived(model, T.load_split(run, "test"), run.seed, cache, "test")
    iwae_k = args.iwae_k if model.can("log_weights") else 0
    world = parallel.world(run.device)         # under mpiexec each rank takes its share of every batch
    result = T.evaluate(model, test, np.random.default_rng(args.seed), batch_size=args.batch_size, iwae_k=iwae_k,
                        stage=f"test metrics{f' (IWAE K={iwae_k})' if iwae_k else ''} on {len(test)} "
                        f"{'molecules' if model.spec.kind == 'tokens' else 'images'}",
                        bar=not args.no_progress, world=world)
    if world.rank:
        return
    if args.fd_samples > 0 and model.spec.kind == "tokens":
        result.update(_chemistry(model, run, args))
    elif args.fd_samples > 0 and (model.can("sample") or model.can("sample_given")):
        classifier, _ = quality.load_classifier(run.dataset, run.data_dir, log=lambda m: print(m, file=sys.stderr))
        if model.can("sample"):
            result["sample_fd"] = quality.sample_fd(model, test, np.random.default_rng([args.seed, 1]), classifier,
                                                    n=args.fd_samples, show=not args.no_progress)
        if model.can("sample_given"):
            result["cond_sample_accuracy"] = quality.conditional_accuracy(
                model, np.random.default_rng([args.seed, 2]), classifier, n=args.fd_samples)
        result["fd_samples"] = args.fd_samples
    if args.json:    # strict JSON: a value that is not finite is null
        print(json.dumps(records.strict(result), allow_nan=False))
        return
    for key, value in result.items():
        if key in ("iwae_k", "fd_samples"):
            continue
        label = EVAL_LABELS.get(key, key).format(iwae_k=result.get("iwae_k"), fd_samples=result.get("fd_samples"))
        if isinstance(value, list):        # one number per latent dimension: its range here, all of them in --json
            print(f"{label:<28} {min(value):>10.2f} to {max(value):.2f} over {len(value)} dimensions")
        else:
            print(f"{label:<28} {value:>10.2f}" if isinstance(value, float) else f"{label:<28} {value:>10}")


def _chemistry(model, run, args) -> dict:
    """MOSES's valid, unique and novel of ``--fd-samples`` molecules from the prior (RDKit), or
    nothing and one line saying why."""
    chem = molecules.rdkit()
    if chem is None:
        print(f"note: {molecules.NO_RDKIT}", file=sys.stderr)
        return {}
    samples = smiles.decode(model.sample(args.fd_samples, np.random.default_rng([args.seed, 1])))
    training, _ = data.load_strings(run.dataset, "train", None, run.data_dir)     # novel: against all of it
    return {**molecules.generation_metrics(samples, training, chem), "fd_samples": args.fd_samples}


def _plot(args) -> None:
    state = T.saved_run.load(args.run_dir)              # read once: the model and its metrics
    model = T.saved_run.build_model(state).eval()
    run = T.run_options(state["run"])
    run.data_dir, run.test_size = args.data_dir or run.data_dir, None
    out = args.out or args.run_dir
    os.makedirs(out, exist_ok=True)
    history = state["history"]
    written = pictures.write_run_pictures(model, T.load_split(run, "test"), out, np.random.default_rng(args.seed),
                                          history)
    print(f"wrote {', '.join(os.path.join(out, name) for name in written)}")


def _report(args) -> None:
    if not args.output.lower().endswith((".html", ".htm")):
        raise ValueError(f"cannot write {args.output}: name an .html file")
    write_report(args.run_dirs, args.output)
    print(f"wrote {args.output}")


def _picture(args) -> None:
    state = T.saved_run.load(args.run_dir)
    model, run = T.saved_run.build_model(state).eval(), T.run_options(state["run"])
    pictures.require(model, args.command)
    run.data_dir, run.test_size = args.data_dir or run.data_dir, None
    rng = np.random.default_rng(args.seed)
    if model.spec.kind == "tokens":
        return _molecule_output(model, run, args, rng)
    image_format(args.output)       # a bad file name is refused before any work
    test = T.load_split(run, "test") if args.command != "sample" else None
    if args.command == "sample":
        save_image(args.output, pictures.sample_picture(model, args.count, rng))
    elif args.command == "reconstruct":      # the picture training draws, its rows named
        pictures.labelled_reconstructions(model, test, args.output, n=args.count)
    elif args.command == "manifold":
        picture, axes = pictures.manifold_picture(model, test, n=args.count)
        if model.latent_dim != 2:
            print(f"latent is {model.latent_dim}-D: varying dimensions {axes[0]} and {axes[1]} "
                  f"(the most active), the rest held at 0")
        save_image(args.output, picture)
    elif args.command == "traverse":
        order = pictures.latent_order(model, test, state["history"])
        picture, dims = pictures.traverse_picture(model, test, order, rows=args.count, rng=rng)
        print(f"rows: latent dimensions {', '.join(map(str, dims))}, each from -3 to 3")
        save_image(args.output, picture)
    else:
        save_image(args.output, pictures.interpolation_picture(model, test, pairs=args.count, rng=rng))
    print(f"wrote {args.output}")


def _molecule_output(model, run, args, rng) -> None:
    """``sample`` and ``interpolate`` of a model of molecules: SMILES, one per line (.txt or
    .smi), or their drawings (.png, with RDKit); interpolations: ``--pairs`` lines of 10 steps."""
    if args.command not in ("sample", "interpolate"):
        raise ValueError(f"model {model.name!r} makes molecules, not pictures: it has no {args.command}; "
                         f"tinyvae sample and tinyvae interpolate write SMILES (.txt, .smi) or drawings (.png)")
    suffix = os.path.splitext(args.output)[1].lower()
    if suffix not in (".txt", ".smi", ".png") or os.path.isdir(args.output):
        raise ValueError(f"cannot write {args.output}: name a .txt or .smi file (SMILES) or a .png (drawings)")
    chem = molecules.rdkit()
    if suffix == ".png" and chem is None:
        raise ValueError(molecules.NO_RDKIT)
    if args.command == "sample":
        ids = model.sample(args.count, rng)
    else:
        ids = model.decode(pictures.latent_lines(model, T.load_split(run, "test"), args.count, 10, rng))
    strings = smiles.decode(ids)
    if suffix == ".png":
        molecules.draw(strings, args.output, chem, per_row=10 if args.command == "interpolate" else 6)
    else:
        write_atomic(args.output, "".join(s + "\n" for s in strings).encode())
    print(f"wrote {args.output}")


def _on_disk(args) -> str:
    """What an interrupted command leaves behind, read from the disk rather than assumed."""
    if args.command == "sweep":
        return f"the runs finished are in {args.out}; run the same command again to continue the sweep"
    if args.command != "train":
        return "nothing was written"
    if args.out is None or not os.path.exists(os.path.join(args.out, T.CHECKPOINT)):
        return "no epoch was completed, so no checkpoint was written"
    try:
        epoch = T.saved_run.load(args.out)["epoch"]
    except CheckpointError as e:
        return f"the checkpoint in {args.out} cannot be read ({e})"
    return f"{args.out} holds the checkpoint of epoch {epoch}; continue with: tinyvae train --resume --out {args.out}"


def _say(error: Exception, alone: bool = False) -> None:
    """One line on stderr, from rank 0 only when every rank meets the same error (bad options,
    a refused run folder); ``alone``: an error of this rank's own (its data, its disk)."""
    rank = parallel.launched_rank()
    if rank == 0 or alone:
        print(f"tinyvae: error: {error}" if rank == 0 else f"tinyvae: error: rank {rank}: {error}", file=sys.stderr)


def main(argv: Optional[list] = None) -> int:
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    args = _parser().parse_args(argv)
    args.argv = argv
    handlers = {"models": _models, "train": _train, "sweep": _sweep, "eval": _eval, "plot": _plot, "report": _report}
    try:
        handlers.get(args.command, _picture)(args)
    except ParallelError as e:            # a rank died or hangs: say so and leave without MPI's goodbyes
        exit_after(e)
    except (T.TrainingError, RunFolderBusy, CheckpointError, DataError, OSError) as e:   # first: CheckpointError
        _say(e, alone=isinstance(e, (DataError, OSError)))
        return 1
    except (ValueError, TypeError) as e:
        _say(e)
        return 2
    except KeyboardInterrupt:
        print(f"tinyvae: interrupted; {_on_disk(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
