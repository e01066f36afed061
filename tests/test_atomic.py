"""tinyvae/atomic.py, the one atomic writer behind checkpoints, downloaded data and PNGs."""
import os
import stat

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import viz
from tinyvae.atomic import write_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_follow_the_umask_like_open(tmp_path, umask_022):
    tv.save(tmp_path / "ckpt.safetensors", {"a": np.arange(3)})
    viz.save_image(str(tmp_path / "grid.png"), np.zeros((4, 4), np.uint8))
    write_atomic(str(tmp_path / "raw"), b"x")
    for name in ("ckpt.safetensors", "grid.png", "raw"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644, name


def test_a_failing_check_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "data.gz"
    write_atomic(str(path), b"old")

    def reject(tmp):
        assert open(tmp, "rb").read() == b"new"          # the check sees the complete new bytes
        raise ValueError("bad checksum")
    with pytest.raises(ValueError, match="bad checksum"):
        write_atomic(str(path), b"new", check=reject)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.gz"]


def test_png_is_a_png_and_creates_its_folder(tmp_path):
    viz.save_image(str(tmp_path / "new" / "grid.png"), np.full((3, 5), 255, np.uint8))
    from PIL import Image
    with Image.open(tmp_path / "new" / "grid.png") as image:
        assert image.format == "PNG" and image.size == (5, 3) and np.asarray(image).min() == 255
