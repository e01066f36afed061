"""The pictures a run draws, for any model, from the capabilities it has (``models.base``):
samples (``sample``), reconstructions (``reconstruct``), a manifold over two latent axes and
interpolations between test examples (``encode`` and ``decode``). A model without the
capability a picture needs gets one line saying so (``MissingCapability``)."""
from __future__ import annotations

import math
import os

import numpy as np

from .data import Split
from .viz import image_grid, save_image

NEEDS = {"sample": ("sample",), "reconstruct": ("reconstruct",), "manifold": ("encode", "decode"),
         "interpolate": ("encode", "decode")}


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


def interpolation_picture(model, split: Split, pairs: int = 8, steps: int = 10, rng=None) -> np.ndarray:
    """Each row: a straight line in latent space between the means of two test examples."""
    require(model, "interpolate")
    rng = rng or np.random.default_rng(0)
    picks = rng.choice(len(split), 2 * pairs, replace=False)
    means = model.encode(split.x[picks])
    t = np.linspace(0, 1, steps)[None, :, None]
    z = (1 - t) * means[0::2, None, :] + t * means[1::2, None, :]
    return image_grid(_tiles(model.decode(z.reshape(-1, means.shape[1]))), columns=steps)


def write_epoch_pictures(model, test: Split, out_dir: str, rng: np.random.Generator) -> list:
    """samples.png and reconstructions.png, each where the model can draw it; the names written."""
    was_training = model.training
    model.eval()
    written = []
    if model.can("sample"):
        save_image(os.path.join(out_dir, "samples.png"), sample_picture(model, 64, rng))
        written.append("samples.png")
    if model.can("reconstruct"):
        save_image(os.path.join(out_dir, "reconstructions.png"), reconstruction_picture(model, test))
        written.append("reconstructions.png")
    model.train(was_training)
    return written
