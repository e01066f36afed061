"""The pictures a run draws, for any model, from the capabilities it has (``models.base``):
samples (``sample``), reconstructions (``reconstruct``), a manifold over two latent axes and
interpolations between test examples (``encode`` and ``decode``), and for a hierarchy samples at
several temperatures (``sample_at``) and reconstructions from its top layers (``reconstruct_from``).
A model without the
capability a picture needs gets one line saying so (``MissingCapability``)."""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from .atomic import write_atomic
from .data import Split, unpack_mask
from .viz import image_grid, save_image

NEEDS = {"sample": ("sample",), "reconstruct": ("reconstruct",), "manifold": ("encode", "decode"),
         "interpolate": ("encode", "decode"), "traverse": ("encode", "decode")}


class MissingCapability(ValueError):
    """The model cannot draw this picture."""


def require(model, picture: str) -> None:
    missing = [c for c in NEEDS[picture] if not model.can(c)]
    if missing:
        raise MissingCapability(f"model {model.name!r} cannot {picture}: it has no {' or '.join(missing)} "
                                f"({model.description})")


def _tiles(images: np.ndarray) -> np.ndarray:
    """[N, 1, H, W] images → the [N, H, W] tiles ``image_grid`` draws (greyscale)."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"pictures are drawn for one-channel images, got shape {images.shape}")
    return images[:, 0]


def sample_picture(model, n: int, rng: np.random.Generator) -> np.ndarray:
    require(model, "sample")
    return image_grid(_tiles(model.sample(n, rng)), columns=int(math.ceil(n ** 0.5)))


def reconstruction_picture(model, split: Split, n: int = 32, columns: int = 8) -> np.ndarray:
    """Rows in pairs: originals, then their reconstructions. ``n`` is rounded up to whole rows,
    so each original sits directly above its reconstruction."""
    require(model, "reconstruct")
    n = min(columns * -(-n // columns), len(split))
    originals = _tiles(split.x[:n].reshape(-1, *split.spec.shape))
    recon = _tiles(model.reconstruct(split.x[:n]))
    tiles = []
    for r in range(0, len(originals), columns):
        tiles += list(originals[r:r + columns]) + list(recon[r:r + columns])
    return image_grid(np.stack(tiles), columns)


def labelled_reconstructions(model, split: Split, path: str, n: int = 32, columns: int = 8) -> None:
    """``reconstruction_picture`` with each row named (original / reconstruction), drawn to ``path``."""
    from . import plots
    picture = reconstruction_picture(model, split, n=n, columns=columns)
    rows = picture.shape[0] // ((split.spec.shape[-1] + 2) * 2)
    plots.grid_plot(picture, path, "test images and their reconstructions", split.spec.shape[-1], 2, 2,
                    y_ticks=["original", "reconstruction"] * (rows // 2))


TEMPERATURES = (0.4, 0.6, 0.8, 1.0)


def temperature_picture(model, rng: np.random.Generator, columns: int = 10) -> tuple:
    """(picture, row labels): one row of samples per temperature (the prior's standard
    deviations scaled by it at every layer; lower is smoother and less varied)."""
    rows = [_tiles(model.sample_at(columns, rng, t)) for t in TEMPERATURES]
    return image_grid(np.concatenate(rows), columns), [f"t = {t:g}" for t in TEMPERATURES]


def top_layers_picture(model, split: Split, rng: np.random.Generator, columns: int = 10) -> tuple:
    """(picture, row labels): test images, then for k = L, ..., 0 their reconstructions with
    the top k layers from the posterior and the rest drawn from the prior: what the top
    layers alone keep of an image (the top global shape, the bottom detail)."""
    x = split.x[:columns]
    rows = [_tiles(x.reshape(-1, *split.spec.shape))]
    for top in range(model.layers, -1, -1):
        rows.append(_tiles(model.reconstruct_from(x, top, rng)))
    labels = ["original"] + [f"top {k} from q" for k in range(model.layers, -1, -1)]
    return image_grid(np.concatenate(rows), columns), labels


def by_label_picture(model, rng: np.random.Generator, columns: int = 10) -> np.ndarray:
    """One row of samples per label (``sample_given``), every row drawn from the same
    generator state: a model that keeps the label apart from the style (M2) draws one style
    per column."""
    seed = int(rng.integers(2 ** 32))
    rows = [_tiles(model.sample_given(np.full(columns, label), np.random.default_rng(seed)))
            for label in range(model.spec.classes)]
    return image_grid(np.concatenate(rows), columns)


def analogies_picture(model, split: Split, columns: int = 10) -> np.ndarray:
    """Test images in the first row, then each one's style drawn as every label, a row per
    label (``restyle``; Kingma et al. 2014, fig. 1)."""
    x = split.x[:columns]
    rows = [_tiles(x.reshape(-1, *split.spec.shape))]
    rows += [_tiles(model.restyle(x, np.full(len(x), label))) for label in range(model.spec.classes)]
    return image_grid(np.concatenate(rows), columns)


def imputation_picture(model, split: Split, rng: np.random.Generator, columns: int = 10) -> np.ndarray:
    """Rows: test images with their missing pixels grey (the split's ``observed`` field),
    the model's imputations (``impute``), and the complete images."""
    x = split.x[:columns]
    observed = unpack_mask(split.fields["observed"][:columns], split.spec.size)
    shown = np.where(observed == 1, x, 0.5)
    rows = [shown.reshape(-1, *split.spec.shape), model.impute(x, observed, rng), x.reshape(-1, *split.spec.shape)]
    return image_grid(np.concatenate([_tiles(r) for r in rows]), columns)


def manifold_picture(model, split: Split, n: int = 20, span: float = 2.5) -> tuple:
    """(picture, axes): the decoded grid over two latent axes in [−span, span], the others at
    0. For latents wider than two, the axes are the two whose posterior means vary most."""
    require(model, "manifold")
    means = model.encode(split.x[:2000])
    latent = means.shape[1]
    if latent < 2:
        raise MissingCapability(f"a manifold needs a latent of at least 2 dimensions; this model's has {latent}")
    axes = (0, 1) if latent == 2 else tuple(int(a) for a in np.argsort(-np.var(means, axis=0))[:2])
    ticks = np.linspace(-span, span, n)
    z = np.zeros((n * n, latent))
    z[:, axes[0]] = np.tile(ticks, n)
    z[:, axes[1]] = np.repeat(ticks[::-1], n)
    return image_grid(_tiles(model.decode(z)), columns=n), axes


def latent_order(model, split: Split, history: list) -> np.ndarray:
    """Latent dimensions, most informative first: by the test KL of each dimension where the
    run's last epoch recorded one (``kl_per_dim``), else by the variance of the test set's
    posterior means (models without a KL)."""
    kl = history[-1].get("kl_per_dim") if history else None
    if kl is not None:
        return np.argsort(-np.asarray(kl), kind="stable")
    return np.argsort(-np.var(model.encode(split.x[:2000]), axis=0), kind="stable")


def traverse_picture(model, split: Split, order: np.ndarray, rows: int = 10, steps: int = 9, span: float = 3.0,
                     rng=None) -> tuple:
    """(picture, dimensions): one row per latent dimension of ``order`` (the first ``rows``),
    that dimension varied over [−span, span] while the others stay at the posterior mean of
    one test image (textbook 21.3.1.1's latent traversals)."""
    require(model, "traverse")
    rng = rng or np.random.default_rng(0)
    pick = int(rng.integers(len(split)))
    mean = model.encode(split.x[pick:pick + 1])[0]
    dims = [int(d) for d in order[:rows]]
    z = np.repeat(mean[None], len(dims) * steps, axis=0)
    for row, dim in enumerate(dims):
        z[row * steps:(row + 1) * steps, dim] = np.linspace(-span, span, steps)
    return image_grid(_tiles(model.decode(z)), columns=steps), dims


def latent_lines(model, split: Split, pairs: int, steps: int, rng=None) -> np.ndarray:
    """Latent points [pairs·steps, D]: for each of ``pairs`` pairs of test examples (drawn with
    ``rng``), ``steps`` points on the straight line between their posterior means."""
    require(model, "interpolate")
    rng = rng or np.random.default_rng(0)
    picks = rng.choice(len(split), 2 * pairs, replace=False)
    means = model.encode(split.x[picks])
    t = np.linspace(0, 1, steps)[None, :, None]
    return ((1 - t) * means[0::2, None, :] + t * means[1::2, None, :]).reshape(-1, means.shape[1])


def interpolation_picture(model, split: Split, pairs: int = 8, steps: int = 10, rng=None) -> np.ndarray:
    """Each row: a straight line in latent space between the means of two test examples."""
    return image_grid(_tiles(model.decode(latent_lines(model, split, pairs, steps, rng))), columns=steps)


def molecule_outputs(model, split: Split, out_dir: str, rng: np.random.Generator, history: list) -> list:
    """What a token model draws: samples.txt (64 SMILES from the prior) and interpolation.txt
    (the SMILES decoded along a line in z between two test molecules, one per line), and with
    RDKit their drawings samples.png and interpolation.png; learning_curves.png."""
    from . import molecules, plots, smiles
    chem, written = molecules.rdkit(), []
    outputs = {"samples": smiles.decode(model.sample(64, rng)),
               "interpolation": smiles.decode(model.decode(latent_lines(model, split, 1, 12, rng)))}
    for name, strings in outputs.items():
        write_atomic(os.path.join(out_dir, f"{name}.txt"), "".join(s + "\n" for s in strings).encode())
        written.append(f"{name}.txt")
        if chem is not None:
            molecules.draw(strings[:24], os.path.join(out_dir, f"{name}.png"), chem,
                           legends=[f"{i}" for i in range(12)] if name == "interpolation" else None)
            written.append(f"{name}.png")
    if history:
        plots.learning_curves({"run": history}, os.path.join(out_dir, "learning_curves.png"))
        written.append("learning_curves.png")
    return written


def write_run_pictures(model, test: Split, out_dir: str, rng: np.random.Generator, history: list,
                       epoch: Optional[int] = None) -> list:
    """Every picture the model can draw, into out_dir; the names written:

      samples.png (and samples_epochNNN.png when ``epoch`` is given), reconstructions.png
      with originals and reconstructions labelled, learning_curves.png from ``history``,
      latent.png (test means by label) and manifold.png with its latent values on the axes,
      code_usage.png for a model with discrete codes, samples_by_temperature.png and
      layer_reconstructions.png for a hierarchy, samples_by_label.png and analogies.png for
      a model with labels, imputations.png for one trained with pixels missing; for
      molecules, ``molecule_outputs``.
    """
    from . import plots
    was_training = model.training
    model.eval()
    if test.spec.kind == "tokens":
        written = molecule_outputs(model, test, out_dir, rng, history)
        model.train(was_training)
        return written
    written = []

    def write(name: str, draw) -> None:
        draw(os.path.join(out_dir, name))
        written.append(name)

    def write_rows(name: str, picture: np.ndarray, title: str, rows: list) -> None:
        """A picture of tiles with each row named."""
        write(name, lambda path: plots.grid_plot(picture, path, title, test.spec.shape[-1], 2, 2, y_ticks=rows))

    if model.can("sample"):
        picture = sample_picture(model, 64, rng)
        write("samples.png", lambda path: save_image(path, picture))
        if epoch is not None:
            write(f"samples_epoch{epoch:03d}.png", lambda path: save_image(path, picture))
    if model.can("reconstruct"):
        write("reconstructions.png", lambda path: labelled_reconstructions(model, test, path))
    if model.can("sample_at"):
        picture, labels = temperature_picture(model, rng)
        write_rows("samples_by_temperature.png", picture, "samples at several temperatures", labels)
    if model.can("reconstruct_from"):
        picture, labels = top_layers_picture(model, test, rng)
        write_rows("layer_reconstructions.png", picture,
                   "reconstructions from the top layers (the rest from the prior)", labels)
    classes = [str(label) for label in range(model.spec.classes or 0)]
    if model.can("sample_given"):
        write_rows("samples_by_label.png", by_label_picture(model, rng),
                   "samples given each label (the same noise in every row)", classes)
    if model.can("restyle"):
        write_rows("analogies.png", analogies_picture(model, test), "each test image's style drawn as every label",
                   ["test image"] + classes)
    if model.can("impute") and "observed" in test.fields:
        write_rows("imputations.png", imputation_picture(model, test, rng), "missing pixels (grey) filled in",
                   ["observed", "imputed", "truth"])
    if model.can("codes"):
        write("code_usage.png", lambda path: plots.code_usage(model.codes(test.x[:2000]), model.num_codes, path))
    if history:
        write("learning_curves.png", lambda path: plots.learning_curves({"run": history}, path))
    if all(model.can(c) for c in NEEDS["manifold"]):
        write("latent.png", lambda path: plots.latent_scatter(model, test, path))
        if model.encode(test.x[:1]).shape[1] >= 2:
            n, span = 15, 2.5
            picture, axes = manifold_picture(model, test, n=n, span=span)
            ticks = [f"{v:.1f}" if i % 2 == 0 else "" for i, v in enumerate(np.linspace(-span, span, n))]
            write("manifold.png", lambda path: plots.grid_plot(
                picture, path, "decoded latent grid (other dimensions at 0)", test.spec.shape[-1], 2, 2,
                x_ticks=ticks, y_ticks=ticks[::-1], x_label=f"z[{axes[0]}]", y_label=f"z[{axes[1]}]"))
    model.train(was_training)
    return written
