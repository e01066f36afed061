"""A run folder belongs to one trainer at a time: ``lock`` takes an OS file lock on
``DIR/.lock`` (released by the OS on any exit, a kill included) and writes the holder's
process id there; a second trainer is refused in one line naming it. Holding the lock, the
trainer checks that it can create files there (before any work, not after an epoch) and
removes temporary files that a killed writer left (``atomic.write_atomic`` names them
``.tmp-*``)."""
from __future__ import annotations

import contextlib
import fcntl
import os

LOCK = ".lock"


class RunFolderBusy(RuntimeError):
    """Another process is training in this run folder, or it cannot be written."""


@contextlib.contextmanager
def lock(out_dir: str):
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunFolderBusy(f"--out {out_dir} is a file, not a folder; choose a folder for the run")
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd = os.open(os.path.join(out_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunFolderBusy(f"cannot write in {out_dir}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusy(f"{out_dir} is in use by another tinyvae train (process {holder}); "
                                f"wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _check_writable(out_dir)
        remove_stale_temporaries(out_dir)
        yield
    finally:
        os.close(fd)                       # releases the lock


def _check_writable(out_dir: str) -> None:
    """Create and remove a file: an existing lock file opens even in a read-only folder."""
    probe = os.path.join(out_dir, f".tmp-probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.unlink(probe)
    except OSError as e:
        raise RunFolderBusy(f"cannot write in {out_dir}: {e.strerror}") from None


def remove_stale_temporaries(out_dir: str) -> list:
    """Delete the ``.tmp-*`` files in ``out_dir`` (only the lock holder writes there, so any
    found at the start are a dead writer's); the names removed."""
    stale = [name for name in os.listdir(out_dir) if name.startswith(".tmp-")]
    for name in stale:
        os.unlink(os.path.join(out_dir, name))
    return stale
