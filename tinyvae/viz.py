"""Pictures: Graphviz DOT text of a recorded graph (``to_dot``), and grids of images as PNG or JPEG.

No graphviz is needed to produce the DOT text; PNGs are written with Pillow.
"""
from __future__ import annotations

import io
import os

import numpy as np

from .atomic import write_atomic
from .tensor import Tensor


def to_dot(root: Tensor) -> str:
    """DOT text with a box per op and an ellipse per tensor (shape, dtype); edges follow the data.

    Render with ``dot -Tpng graph.dot -o graph.png`` if Graphviz is installed.
    """
    lines = ["digraph tinyvae {", "  rankdir=LR;"]
    seen_t, seen_f = set(), set()
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen_t:
            continue
        seen_t.add(id(t))
        kind = "leaf" if t.creator is None and t.requires_grad else ("const" if t.creator is None else "")
        label = f"{tuple(t.shape)} {t.dtype}" + (f"\\n{kind}" if kind else "")
        lines.append(f'  t{id(t)} [shape=ellipse, label="{label}"];')
        fn = t.creator
        if fn is None:
            continue
        lines.append(f"  f{id(fn)} -> t{id(t)};")
        if id(fn) in seen_f:
            continue
        seen_f.add(id(fn))
        lines.append(f'  f{id(fn)} [shape=box, style=filled, fillcolor=lightblue, label="{fn.name}"];')
        for x in filter(None, fn.inputs):
            lines.append(f"  t{id(x)} -> f{id(fn)};")
            stack.append(x)
    lines.append("}")
    return "\n".join(lines) + "\n"


def image_grid(images: np.ndarray, columns: int, padding: int = 2, scale: int = 2) -> np.ndarray:
    """Tile images [N, H, W] with values in [0, 1] into one uint8 picture: ``columns`` per row,
    ``padding`` grey pixels between tiles, each pixel drawn ``scale``×``scale`` so 28×28 digits
    are large enough to look at. Missing tiles at the end stay grey."""
    images = np.clip(np.asarray(images, np.float64), 0, 1)
    n, h, w = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding), 0.5)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = img
    grid = np.kron(grid, np.ones((scale, scale)))
    return (grid * 255 + 0.5).astype(np.uint8)


IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
MAX_PIXELS = 16_000_000       # well below Pillow's own limit for opening a file (89 megapixels)


def image_format(path: str) -> str:
    """The Pillow format a file name's suffix names; ValueError for a folder or any other suffix."""
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a folder; name a file such as {os.path.join(path, 'picture.png')}")
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"cannot write {path}: name a .png, .jpg or .jpeg file")
    return IMAGE_FORMATS[suffix]


def save_image(path: str, picture: np.ndarray) -> None:
    """Write a uint8 picture (greyscale [H, W] or RGB [H, W, 3]) atomically, in the format its
    suffix names (PNG, JPEG)."""
    from PIL import Image
    fmt = image_format(path)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    write_atomic(str(path), buffer.getvalue())
