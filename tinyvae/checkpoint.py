"""Checkpoints: ``save(path, obj)`` / ``load(path)`` for nested dicts of arrays and plain data.

Format: a safetensors file. Arrays are stored as tensors under their "/"-joined key path;
everything else (numbers, strings, lists, nested dicts, None) is JSON in the file's
metadata, with a SHA-256 over that JSON and every array's name, dtype, shape and bytes, so
an edit anywhere in the file is caught (format 1, written before 2026-12-02, hashed the
arrays alone; it is still read). Nothing is ever unpickled, so loading a file cannot run code. Writes go to a temporary file in the same folder, are fsynced, and
renamed over the target, so a crash never leaves a half-written checkpoint under the real
name. A truncated or altered file is rejected with ``CheckpointError``.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from . import backend
from .atomic import write_atomic

_META_KEY = "tinyvae.meta"
_HASH_KEY = "tinyvae.sha256"
_FORMAT_KEY = "tinyvae.format"
_FORMAT = "2"
_READABLE = ("1", "2")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or not a tinyvae checkpoint."""


def _split(obj: Any, path: str, arrays: dict) -> Any:
    """Replace every array in ``obj`` by {"__array__": key}, collecting the arrays."""
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str) or "/" in k:
                raise TypeError(f"checkpoint keys must be strings without '/', got {k!r} at {path or '/'}")
        return {k: _split(v, f"{path}/{k}" if path else k, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{path}/{i}", arrays) for i, v in enumerate(obj)]
    if hasattr(obj, "__array_interface__") or hasattr(obj, "__cuda_array_interface__"):
        arrays[path] = np.ascontiguousarray(backend.to_device(obj, "cpu"))
        return {"__array__": path}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store {type(obj).__name__} at {path or '/'}")


def _join(meta: Any, arrays: dict) -> Any:
    if isinstance(meta, dict):
        if set(meta) == {"__array__"}:
            return arrays[meta["__array__"]]
        return {k: _join(v, arrays) for k, v in meta.items()}
    if isinstance(meta, list):
        return [_join(v, arrays) for v in meta]
    return meta


def _digest(arrays: dict, meta: str = None) -> str:
    """SHA-256 of the metadata JSON (format 2) and the arrays."""
    h = hashlib.sha256()
    if meta is not None:
        h.update(f"meta|{len(meta)}|".encode() + meta.encode())
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: str, obj: dict) -> None:
    """Write ``obj`` atomically to ``path``."""
    from safetensors.numpy import save as st_save
    arrays: dict = {}
    meta = json.dumps(_split(obj, "", arrays))
    blob = st_save(arrays, metadata={_FORMAT_KEY: _FORMAT, _META_KEY: meta, _HASH_KEY: _digest(arrays, meta)})
    write_atomic(path, blob)


def load(path: str) -> dict:
    """Read a checkpoint written by ``save``; arrays come back as NumPy arrays."""
    from safetensors import SafetensorError, safe_open
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:   # tensor by tensor from a memory map: the arrays cost their own size, the file is not read twice
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({e})") from None
    form, meta = header.get(_FORMAT_KEY), header.get(_META_KEY)
    if form not in _READABLE or not isinstance(meta, str):
        raise CheckpointError(f"{path} is not a tinyvae checkpoint (format {form!r})")
    if _digest(arrays, meta if form == "2" else None) != header.get(_HASH_KEY):
        raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match its checksum")
    try:
        return _join(json.loads(meta), arrays)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata ({e})") from None
