"""Keep freed memory for reuse on Linux (glibc), instead of returning it to the OS.

By default glibc serves every allocation over ~128 KiB-32 MiB with a fresh ``mmap`` and
unmaps it on free, so each training step pays page faults to re-zero the same im2col
buffers, activations and gradients: measured on the conv benchmark, that was over half
of a 1→32 conv layer's step. Raising the mmap and trim thresholds lets those blocks be
reused from the heap (PyTorch gets the same effect from its own caching allocator).

Applied once when tinyvae is imported; set TINYVAE_KEEP_MALLOC_DEFAULTS=1 to skip it.
"""
import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Return True if the glibc thresholds were raised."""
    if not sys.platform.startswith("linux") or os.environ.get("TINYVAE_KEEP_MALLOC_DEFAULTS"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (musl, ...): nothing to tune
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)          # glibc's maximum for this setting
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**30)
    ok &= mallopt(_M_TOP_PAD, 64 * 2**20)
    return bool(ok)
