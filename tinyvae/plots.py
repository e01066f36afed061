"""Plots a person would rather look at than read, drawn off-screen with matplotlib: learning
curves from the metrics history (one run or several overlaid), the test set's latent means
coloured by label, the manifold with its latent values on the axes, and reconstructions with
their originals labelled. Each is written atomically, in the format its file name's suffix
names."""
from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np

from .atomic import write_atomic
from .data import Split
from .viz import image_format

SKIP = ("epoch", "step", "seconds", "time", "iwae_k")
TERMS = {"loss": "loss (minimised)", "elbo": "ELBO (nats)", "recon": "log p(x|z) (nats)",
         "kl": "KL(q(z|x) ‖ p(z)) (nats)", "nll_iwae": "NLL, IWAE bound (nats)"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=image_format(path).lower())
    write_atomic(str(path), buffer.getvalue())


def _panels(histories: dict) -> dict:
    """Panel title → [(run index, run, split, epochs, values)]: train_X and test_X share the
    panel of X; every other number (lr, kl_weight, active_units, ...) has its own, unless it
    never changes in any run (a constant schedule says nothing as a curve)."""
    panels: dict = {}
    for i, (run, history) in enumerate(histories.items()):
        keys = [k for k in dict.fromkeys(k for r in history for k in r) if k not in SKIP]
        for key in keys:
            split, term = key.split("_", 1) if key.startswith(("train_", "test_")) else ("", key)
            points = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), (int, float))
                      and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
            if points:
                epochs, values = zip(*points)
                panels.setdefault(TERMS.get(term, term), []).append((i, run, split, epochs, values))
    return {title: lines for title, lines in panels.items()
            if any(line[2] for line in lines) or len({v for line in lines for v in line[4]}) > 1}


def learning_curves(histories: dict, path: str) -> None:
    """One panel per term (train solid, test dashed) and per schedule or count that changes,
    against the epoch; ``histories``: run name → metrics records, one colour per run."""
    from matplotlib.ticker import MaxNLocator
    panels = _panels(histories)
    columns = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    fig = _figure(4.2 * columns, 3.0 * rows)
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, (title, lines) in zip(axes, panels.items()):
        for i, run, split, epochs, values in lines:
            label = " ".join(part for part in (run if len(histories) > 1 else "", split) if part) or None
            ax.plot(epochs, values, color=f"C{i % 10}", marker="o" if len(epochs) < 30 else None, markersize=3,
                    linestyle="--" if split == "test" else "-", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    spare = list(axes[len(panels):])
    if len(histories) == 1 and spare:
        _per_dimension(spare.pop(0), next(iter(histories.values())))
    for ax in spare:
        ax.set_visible(False)
    _save(fig, path)


def _per_dimension(ax, history: list, key: str = "kl_per_dim") -> None:
    """A heat map of a per-dimension metric (the KL of each latent dimension) over the epochs."""
    rows = [(r["epoch"], r[key]) for r in history if isinstance(r.get(key), list) and r[key]]
    if not rows:
        ax.set_visible(False)
        return
    epochs, values = zip(*rows)
    image = ax.imshow(np.array(values, np.float64).T, aspect="auto", origin="lower", cmap="viridis",
                      extent=(epochs[0] - 0.5, epochs[-1] + 0.5, -0.5, len(values[0]) - 0.5), interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label="nats")
    ax.set_title("KL per latent dimension (test)", fontsize=10)
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("dimension")


def latent_scatter(model, split: Split, path: str, n: int = 5000) -> str:
    """The posterior means of up to ``n`` test examples, coloured by label: the latent itself
    when it is 2-D, else its first two principal components (the axes say which). Returns
    what the axes show."""
    means = model.encode(split.x[:n]).astype(np.float64)
    labels = split.y[:n]
    d = means.shape[1]
    if d == 2:
        xy, axes = means, ("z[0]", "z[1]")
    elif d == 1:
        xy, axes = np.column_stack([means[:, 0], labels + np.random.default_rng(0).uniform(-0.3, 0.3, len(labels))]), \
            ("z", "label (jittered)")
    else:
        centred = means - means.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        share = s ** 2 / np.sum(s ** 2)
        xy = centred @ vt[:2].T
        axes = (f"PC1 of the {d}-D latent means ({share[0]:.0%} of variance)",
                f"PC2 ({share[1]:.0%} of variance)")
    fig = _figure(6.4, 5.6)
    ax = fig.subplots()
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=4, alpha=0.7)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(f"test set latent means ({len(labels)} examples)", fontsize=10)
    _save(fig, path)
    return " / ".join(axes)


def grid_plot(picture: np.ndarray, path: str, title: str, tile: int, padding: int, scale: int,
              x_ticks: Optional[list] = None, y_ticks: Optional[list] = None, x_label: str = "",
              y_label: str = "") -> None:
    """A picture of tiles (``viz.image_grid``) with tick labels at the tiles' centres."""
    height, width = picture.shape
    fig = _figure(max(4.0, width / 90), max(3.0, height / 90) + 0.6)
    ax = fig.subplots()
    ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    centre = lambda i: (padding + i * (tile + padding) + tile / 2) * scale - 0.5   # noqa: E731
    for ticks, set_ticks, set_labels in ((x_ticks, ax.set_xticks, ax.set_xticklabels),
                                         (y_ticks, ax.set_yticks, ax.set_yticklabels)):
        if ticks is None:
            set_ticks([])
        else:
            set_ticks([centre(i) for i in range(len(ticks))])
            set_labels(ticks, fontsize=7)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def code_usage(levels: list, num_codes: int, path: str) -> None:
    """For each level of codes (grids [N, h, w], coarsest first; the test set's): how often
    each of ``num_codes`` codes is used, sorted from the most used, with the share of the
    codebook never used; and the code grids of the first test images coloured by code index."""
    fig = _figure(10, 3.6 * len(levels))
    for row, codes in zip(fig.subplots(len(levels), 1, squeeze=False)[:, 0], levels):
        left, right = row.get_subplotspec().subgridspec(1, 2, width_ratios=[2, 1]).subplots()
        row.remove()
        counts = np.bincount(codes.ravel(), minlength=num_codes)
        order = np.sort(counts)[::-1]
        where = f"{codes.shape[1]}×{codes.shape[2]} grid: " if len(levels) > 1 else ""
        left.bar(np.arange(num_codes), order, width=1.0, color="C0")
        left.set_yscale("log" if order.max() > 0 else "linear")
        left.set_xlabel("codes, most used first")
        left.set_ylabel("uses in the test set")
        left.set_title(f"{where}{(counts > 0).mean():.0%} of {num_codes} codes used", fontsize=10)
        right.imshow(np.concatenate([np.pad(g, 1, constant_values=-1) for g in codes[:8]], axis=1),
                     cmap="nipy_spectral", vmin=-1, vmax=num_codes, interpolation="nearest")
        right.set_axis_off()
        right.set_title("code grids of 8 test images", fontsize=10)
    _save(fig, path)


def rate_distortion(points: list, axis: str, path: str) -> None:
    """A sweep's final test metrics, one point per value of the swept option ``axis``
    (``points``: dicts with it, test_kl and test_recon, and total_correlation where the model
    reports it): distortion D = −E log p(x|z) against rate R = KL (Alemi et al. 2018; textbook
    21.3.1.1), with the isolines of −ELBO = D + R through the points; and TC against the value."""
    rates = np.array([p["test_kl"] for p in points])
    distortions = np.array([-p["test_recon"] for p in points])
    tcs = [p.get("total_correlation") for p in points]
    with_tc = all(isinstance(v, float) for v in tcs)
    fig = _figure(10.0 if with_tc else 5.6, 4.6)
    axes = np.atleast_1d(fig.subplots(1, 2 if with_tc else 1))
    ax = axes[0]
    span = np.array([0.0, max(rates.max(), 1.0) * 1.1])
    for level in sorted({round(v, 1) for v in rates + distortions}):
        ax.plot(span, level - span, color="0.75", linewidth=0.8, zorder=0)
    ax.plot(rates, distortions, marker="o", color="C0")
    for p, r, d in zip(points, rates, distortions):
        ax.annotate(f"{axis} {p[axis]:g}", (r, d), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlim(span)
    ax.set_ylim(distortions.min() - 0.1 * np.ptp(distortions) - 1, distortions.max() + 0.1 * np.ptp(distortions) + 1)
    ax.set_xlabel("rate: KL(q(z|x) ‖ p(z)) (nats)")
    ax.set_ylabel("distortion: −log p(x|z) (nats)")
    ax.set_title("rate against distortion (grey: −ELBO = D + R through each point)", fontsize=10)
    ax.grid(alpha=0.3)
    if with_tc:
        values = [p[axis] for p in points]
        axes[1].plot(values, tcs, marker="o", color="C1")
        if min(values) > 0:
            axes[1].set_xscale("log")
            axes[1].minorticks_off()
        axes[1].set_xticks(values, [f"{v:g}" for v in values])
        axes[1].set_xlabel(axis)
        axes[1].set_ylabel("total correlation of q(z) (nats)")
        axes[1].set_title("total correlation (minibatch-weighted sampling)", fontsize=10)
        axes[1].grid(alpha=0.3)
    _save(fig, path)
