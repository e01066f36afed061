"""MNIST and Fashion-MNIST from their standard idx.gz files, and the MOSES molecules (SMILES
strings in csv.gz files, tokenised by ``smiles``).

Files are looked up as ``<root>/<dataset>/<file>.gz`` in ``data_dir`` (``--data-dir``)
alone when it is given, else in ``$TINYVAE_DATA`` and then ``~/.cache/tinyvae``; if absent
they are downloaded there (into ``data_dir``, or the cache) from the standard public mirrors. Every file is checked by
the SHA-256 of its *decompressed* content (the same for every mirror, unlike the .gz
bytes) before any of it is used; a truncated or altered file is rejected.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from . import smiles
from .atomic import write_atomic
from .progress import stage

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}

SHA256 = {   # of the decompressed idx files
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    "moses": {
        "train.csv": "cc9d6e8e9534e25a7a36361529ae739ddda8036e9072b2fc5cea6930a0592144",
        "test.csv": "0248e682a9c29ca7649184dd88a4edc83f48f0e84af6b923990069c3da4501b6",
    },
}

MIRRORS = {   # the locations torchvision / Keras use for MNIST, Zalando's for Fashion-MNIST
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    "moses": [f"https://{host}/molecularsets/moses/master/moses/dataset/data/"       # the package's data folder
              for host in ("media.githubusercontent.com/media", "raw.githubusercontent.com")],
}

DATASETS = tuple(SHA256)

# decompressed sizes, the same in both data sets: a 16-byte idx header and N 28×28 images, or
# an 8-byte header and N labels
SIZES = {"train-images-idx3-ubyte": 16 + 60000 * 28 * 28, "train-labels-idx1-ubyte": 8 + 60000,
         "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28, "t10k-labels-idx1-ubyte": 8 + 10000,
         "train.csv": 58408794, "test.csv": 6490097}      # MOSES: 1,584,663 and 176,074 SMILES lines


@dataclass(frozen=True)
class DataSpec:
    """What a data set holds, for the models to build themselves around: ``shape`` of one
    example (channels, height, width; or positions of a token sequence), ``kind`` ('images':
    pixels in [0, 1], which a binary-pixel model sees binarized; 'tokens': ids into
    ``vocabulary``), and ``classes`` (labels 0..classes−1, or None)."""
    name: str
    shape: tuple
    kind: str = "images"
    classes: Optional[int] = None
    vocabulary: tuple = ()

    @property
    def size(self) -> int:
        """Numbers in one flattened example."""
        return int(np.prod(self.shape))


SPECS = {**{name: DataSpec(name, (1, 28, 28), "images", 10) for name in DATASETS if name != "moses"},
         "moses": DataSpec("moses", (smiles.LENGTH,), "tokens", None, smiles.VOCABULARY)}


@dataclass(frozen=True)
class Split:
    """One split of a data set: ``x`` [N, size] float32 pixels in [0, 1] (or {0, 1} once
    binarized) or int64 token ids, ``y`` [N] int64 labels (0 where the data set has none), and ``fields``: further per-example arrays [N, ...]
    a model derived from them once (``Model.derived``: a prior's codes of its parent run)."""
    spec: DataSpec
    x: np.ndarray
    y: np.ndarray
    fields: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def binarized(self, rng: np.random.Generator) -> "Split":
        """The split with one dynamic binarization of all its pixels (a fixed test set)."""
        return replace(self, x=binarize(self.x, rng))


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """A 0/1 mask [N, size] (which pixels of each example are observed) as packed bits
    [N, ⌈size/8⌉], the form a run keeps it in (``unpack_mask``)."""
    return np.packbits(np.asarray(mask, bool), axis=1)


def unpack_mask(bits: np.ndarray, size: int) -> np.ndarray:
    """The uint8 0/1 mask [N, size] of ``pack_mask``'s bits."""
    return np.unpackbits(bits, axis=1, count=size)


class DataError(RuntimeError):
    """A data file is missing, cannot be downloaded, or fails its checksum."""


def search_roots(data_dir: Optional[str] = None) -> list:
    """Where data files are looked for: ``data_dir`` alone when given (a folder named on the
    command line is never silently completed from another), else $TINYVAE_DATA and the cache."""
    if data_dir:
        return [Path(data_dir)]
    roots = []
    if os.environ.get("TINYVAE_DATA"):
        roots.append(Path(os.environ["TINYVAE_DATA"]))
    roots.append(Path.home() / ".cache" / "tinyvae")
    return roots


def _verified_content(path: Path, dataset: str, name: str) -> bytes:
    """The decompressed bytes of ``path``, read no further than one byte past the file's
    known size (a gzip bomb costs no more memory than the real file), then checked by SHA-256."""
    expected = SIZES[name]
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); delete it and fetch it again") from None
    if len(raw) != expected:
        raise DataError(f"{path} decompresses to {'more' if len(raw) > expected else 'fewer'} than the {expected} "
                        f"bytes of {name}; delete it and fetch it again")
    if hashlib.sha256(raw).hexdigest() != SHA256[dataset][name]:
        raise DataError(f"{path} fails its SHA-256 check (truncated or altered); delete it and fetch it again")
    return raw


def _download(dataset: str, name: str, target: Path) -> list:
    """Try every mirror; return the failure messages (empty on success)."""
    failures = []
    target.parent.mkdir(parents=True, exist_ok=True)
    for base in MIRRORS[dataset]:
        url = base + name + ".gz"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                size = int(response.headers.get("Content-Length") or 0)
                blocks = iter(lambda: response.read(1 << 16), b"")
                blob = b"".join(stage(blocks, -(-size // (1 << 16)) or None, f"downloading {url}",
                                      units="blocks of 64 KB"))
        except (urllib.error.URLError, OSError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        try:       # a file that fails its checksum never takes the target's name
            write_atomic(str(target), blob, check=lambda tmp: _verified_content(Path(tmp), dataset, name))
        except DataError as e:
            failures.append(f"{url}: {e}")
            continue
        return []
    return failures


def locate(dataset: str, name: str, data_dir: Optional[str] = None, download: bool = True) -> Path:
    """Path of ``<name>.gz``: the first found in the search roots, or downloaded (and verified)
    into the cache. Found files are verified by ``read_verified``, where their bytes are read."""
    if dataset not in SHA256:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    roots = search_roots(data_dir)
    candidates = [root / dataset / (name + ".gz") for root in roots]
    for path in candidates:
        if path.is_file():
            return path
    failures = _download(dataset, name, candidates[-1]) if download else ["downloads disabled"]
    if not failures:
        return candidates[-1]
    files = "train.csv.gz and test.csv.gz" if SPECS[dataset].kind == "tokens" else "the four idx .gz files"
    raise DataError(f"{dataset} file {name}.gz not found; looked in {', '.join(str(c) for c in candidates)}; "
                    f"download failed ({'; '.join(failures)}). Put {files} in "
                    f"<dir>/{dataset}/ and pass --data-dir <dir> or set TINYVAE_DATA=<dir>")


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """idx format: magic (2051 images, 2049 labels), big-endian int32 sizes, then uint8 data."""
    magic = int.from_bytes(raw[:4], "big")
    ndim = {2051: 3, 2049: 1}.get(magic)
    if ndim is None:
        raise DataError(f"{name}: bad idx magic number {magic}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{name}: expected {dims} values, found {data.size}")
    return data.reshape(dims)


def load(dataset: str = "mnist", split: str = "train", data_dir: Optional[str] = None,
         download: bool = True) -> tuple:
    """(images [N, 28, 28] uint8, labels [N] uint8) of one split ('train' or 'test')."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    arrays = []
    for kind in ("images", "labels"):
        name = FILES[f"{split}_{kind}"]
        raw = _verified_content(locate(dataset, name, data_dir, download), dataset, name)   # rejects a bad file
        arrays.append(parse_idx(raw, name))
    return tuple(arrays)


def to_unit_interval(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] → float32 [N, 784] in [0, 1] (continuous pixels, Gaussian likelihoods)."""
    return (images.reshape(len(images), -1) / np.float32(255)).astype(np.float32)


def binarize(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dynamic binarization: a fresh Bernoulli(pixel) draw every time (the IWAE paper's protocol)."""
    return (rng.random(pixels.shape, dtype=np.float32) < pixels).astype(np.float32)


def batches(n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True,
            visits: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
    """Index arrays of consecutive batches over a (seeded) permutation of range(n), example i
    in it ``visits[i]`` times (once each if None); the last batch may be short."""
    examples = np.arange(n) if visits is None else np.repeat(np.arange(n), visits)
    order = rng.permutation(examples) if shuffle else examples
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def load_split(dataset: str, split: str, limit: Optional[int] = None, data_dir: Optional[str] = None) -> Split:
    """The first ``limit`` examples (all if None) of a split, pixels scaled to [0, 1], or
    molecules as token ids (``smiles.encode``)."""
    if SPECS.get(dataset, SPECS["mnist"]).kind == "tokens":
        return load_tokens(dataset, split, limit, data_dir)
    images, labels = load(dataset, split, data_dir)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return Split(SPECS[dataset], to_unit_interval(images), labels.astype(np.int64))


def load_strings(dataset: str, split: str, limit: Optional[int] = None, data_dir: Optional[str] = None) -> tuple:
    """(the first ``limit`` SMILES strings of a split's csv, its path), its SHA-256 checked first."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    name = f"{split}.csv"
    path = locate(dataset, name, data_dir)
    text = _verified_content(path, dataset, name).decode("ascii")
    try:
        return smiles.read_csv(text.splitlines(), str(path), limit), path
    except smiles.SmilesError as e:
        raise DataError(str(e)) from None


def load_tokens(dataset: str, split: str, limit: Optional[int] = None, data_dir: Optional[str] = None) -> Split:
    """The first ``limit`` SMILES strings of a split, tokenised (``smiles.encode``)."""
    strings, path = load_strings(dataset, split, limit, data_dir)
    try:
        ids = smiles.encode(strings, where=str(path))
    except smiles.SmilesError as e:
        raise DataError(str(e)) from None
    return Split(SPECS[dataset], ids, np.zeros(len(ids), np.int64))


def batch_dicts(split: Split, batch_size: int, rng: np.random.Generator, shuffle: bool = True,
                binary: bool = False, device: str = "cpu", visits: Optional[np.ndarray] = None,
                rows: Optional[Callable[[int], slice]] = None) -> Iterator[dict]:
    """Batches as named fields: ``x`` (a Tensor [B, size] on ``device``; token ids stay a
    NumPy array [B, T]), ``y`` (labels,
    NumPy [B]) and the split's ``fields`` (NumPy [B, ...]), each example ``visits`` times
    (``batches``). The permutation is drawn first; with ``binary``, each batch is binarized
    with ``rng`` as it is reached (a fresh draw every time an image is used). ``rows``: a
    data-parallel rank's share of a batch of n (``parallel.World.rows``): only those rows are
    yielded, binarized with the numbers the whole batch draws, so every rank's ``rng`` stays alike."""
    from .tensor import tensor
    tokens = split.spec.kind == "tokens"       # ids stay NumPy, as labels do: a model embeds them
    for idx in list(batches(len(split), batch_size, rng, shuffle, visits)):
        pixels = split.x[idx]
        if binary:
            pixels = binarize(pixels, rng)
        if rows is not None:
            idx, pixels = idx[rows(len(idx))], pixels[rows(len(idx))]
        yield {"x": pixels if tokens else tensor(pixels, device=device), "y": split.y[idx],
               **{name: array[idx] for name, array in split.fields.items()}}
