"""Atomic file writes: a reader sees the old file or the complete new one, never a part.

The bytes go to a temporary file in the target's folder (a rename is atomic only within one
file system), are flushed to disk, optionally checked, and then renamed over the target; the
folder is synced so the rename itself survives a crash. The temporary file is created with
mode 0666 less the umask, as ``open`` would create the target (``tempfile.mkstemp`` would
leave it readable by its owner only).
"""
from __future__ import annotations

import os
import secrets
from typing import Callable, Optional


def write_atomic(path: str, blob: bytes, check: Optional[Callable[[str], object]] = None) -> None:
    """Write ``blob`` to ``path`` atomically. ``check(temporary_path)`` runs before the rename;
    if it raises, the temporary file is removed, ``path`` is untouched and the error propagates."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".tmp-{secrets.token_hex(6)}-{os.path.basename(path)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
