"""Data loading: the real shared files, checksum rejection, the search order, the download path."""
import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tinyvae import data

# Read once at import: several tests below delete TINYVAE_DATA to test the search order.
REAL_DATA = Path(os.environ.get("TINYVAE_DATA", ""))


def shared_root() -> Path:
    """The folder with the real data files (TINYVAE_DATA; conftest.py fills it in here)."""
    root = REAL_DATA
    if not (root / "mnist").is_dir():
        pytest.fail(f"no MNIST copy at TINYVAE_DATA={str(root)!r}; point TINYVAE_DATA at a folder holding mnist/*.gz")
    return root


def test_mnist_loads_with_the_documented_statistics():
    root = shared_root()
    images, labels = data.load("mnist", "train", str(root))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8 and labels.shape == (60000,)
    pixels = data.to_unit_interval(images)
    assert pixels.shape == (60000, 784)
    assert abs(pixels.mean() - 0.1307) < 1e-4 and abs(pixels.std() - 0.3081) < 1e-4
    test_images, test_labels = data.load("fashion-mnist", "test", str(root))
    assert test_images.shape == (10000, 28, 28) and set(np.unique(test_labels)) == set(range(10))


def _copy_dataset(tmp_path, dataset="mnist"):
    target = tmp_path / dataset
    shutil.copytree(shared_root() / dataset, target)
    return target


def test_truncated_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYVAE_DATA", raising=False)
    folder = _copy_dataset(tmp_path)
    f = folder / "t10k-labels-idx1-ubyte.gz"
    f.chmod(0o644)
    f.write_bytes(f.read_bytes()[:2000])
    with pytest.raises(data.DataError, match="not a readable gzip|SHA-256"):
        data.load("mnist", "test", str(tmp_path), download=False)


def test_altered_content_fails_the_checksum(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYVAE_DATA", raising=False)
    folder = _copy_dataset(tmp_path)
    f = folder / "t10k-labels-idx1-ubyte.gz"
    f.chmod(0o644)
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(data.DataError, match="fails its SHA-256 check"):
        data.load("mnist", "test", str(tmp_path), download=False)


def test_missing_data_names_every_place_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYVAE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data, "MIRRORS", {"mnist": ["file:///nonexistent/"], "fashion-mnist": []})
    with pytest.raises(data.DataError) as err:
        data.load("mnist", "test")
    message = str(err.value)
    for place in ("env/mnist", "home/.cache/tinyvae/mnist", "file:///nonexistent/", "TINYVAE_DATA"):
        assert place in message


def test_a_data_dir_given_is_the_only_place_looked(tmp_path, monkeypatch):
    """--data-dir is never silently completed from $TINYVAE_DATA (which here holds the files)."""
    monkeypatch.setattr(data, "MIRRORS", {"mnist": ["file:///nonexistent/"], "fashion-mnist": []})
    assert os.environ.get("TINYVAE_DATA")
    with pytest.raises(data.DataError) as err:
        data.load("mnist", "test", str(tmp_path / "cli"))
    message = str(err.value)
    assert "cli/mnist" in message and os.environ["TINYVAE_DATA"] not in message


def test_download_fills_the_cache_and_verifies(tmp_path, monkeypatch):
    """The download path, with a local mirror (file:// URL) standing in for the public one."""
    monkeypatch.delenv("TINYVAE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_root() / "mnist", mirror)
    monkeypatch.setattr(data, "MIRRORS", {"mnist": ["file:///broken/", mirror.as_uri() + "/"]})
    images, labels = data.load("mnist", "test")
    assert images.shape == (10000, 28, 28)
    assert (tmp_path / "home/.cache/tinyvae/mnist/t10k-images-idx3-ubyte.gz").is_file()


def test_a_corrupt_download_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYVAE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + b"\x00" * 10004))
    monkeypatch.setattr(data, "MIRRORS", {"mnist": [mirror.as_uri() + "/"]})
    with pytest.raises(data.DataError, match="fails its SHA-256 check"):
        data.locate("mnist", "t10k-labels-idx1-ubyte")
    assert not list((tmp_path / "home/.cache/tinyvae/mnist").glob("*"))


def test_idx_parser_checks_magic_and_size():
    with pytest.raises(data.DataError, match="bad idx magic"):
        data.parse_idx(b"\x00\x00\x00\x07" + b"\x00" * 8, "x")
    with pytest.raises(data.DataError, match="expected"):
        data.parse_idx((2049).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x01\x02", "x")
    np.testing.assert_array_equal(data.parse_idx((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + b"\x07\x09", "x"),
                                  [7, 9])


def test_binarization_and_batches_are_seeded():
    pixels = np.random.default_rng(0).random((100, 784)).astype(np.float32)
    a = data.binarize(pixels, np.random.default_rng(1))
    b = data.binarize(pixels, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1.0} and abs(a.mean() - pixels.mean()) < 0.01
    order = np.concatenate(list(data.batches(10, 3, np.random.default_rng(2))))
    assert sorted(order) == list(range(10))
    assert [len(b) for b in data.batches(10, 3, np.random.default_rng(2))] == [3, 3, 3, 1]


def test_a_gzip_bomb_is_refused_in_bounded_memory(tmp_path, monkeypatch):
    """64 MB of zeros (64 KB compressed) named as the 10,008-byte label file: refused after
    reading one byte past that size, with no large allocation (before: the whole 64 MB)."""
    import tracemalloc
    import zlib
    monkeypatch.delenv("TINYVAE_DATA", raising=False)
    folder = _copy_dataset(tmp_path)
    f = folder / "t10k-labels-idx1-ubyte.gz"
    f.chmod(0o644)
    packer, chunk = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)
    f.write_bytes(b"".join(packer.compress(chunk) for _ in range(64)) + packer.flush())
    tracemalloc.start()
    with pytest.raises(data.DataError, match="decompresses to more than the 10008 bytes"):
        data.load("mnist", "test", str(tmp_path), download=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20           # the test images (7.8 MB) are read and hashed first; no 64 MB
