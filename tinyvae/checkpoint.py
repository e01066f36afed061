"""Checkpoints: ``save(path, obj)`` / ``load(path)`` for nested dicts of arrays and plain data.

Format: a safetensors file. Arrays are stored as tensors under their "/"-joined key path;
everything else (numbers, strings, lists, nested dicts, None) is JSON in the file's
metadata, with a SHA-256 over all array bytes. Nothing is ever unpickled, so loading a
file cannot run code. Writes go to a temporary file in the same folder, are fsynced, and
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
_FORMAT = "1"


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


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(path: str, obj: dict) -> None:
    """Write ``obj`` atomically to ``path``."""
    from safetensors.numpy import save as st_save
    arrays: dict = {}
    meta = _split(obj, "", arrays)
    blob = st_save(arrays, metadata={_FORMAT_KEY: _FORMAT, _META_KEY: json.dumps(meta),
                                     _HASH_KEY: _digest(arrays)})
    write_atomic(path, blob)


def load(path: str) -> dict:
    """Read a checkpoint written by ``save``; arrays come back as NumPy arrays."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        blob = f.read()
    try:
        arrays = st_load(blob)
        header = _read_metadata(blob)
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({e})") from None
    if header.get(_FORMAT_KEY) != _FORMAT or _META_KEY not in header:
        raise CheckpointError(f"{path} is not a tinyvae checkpoint (format {header.get(_FORMAT_KEY)!r})")
    if _digest(arrays) != header.get(_HASH_KEY):
        raise CheckpointError(f"checkpoint {path} is corrupt: its array data does not match its checksum")
    try:
        return _join(json.loads(header[_META_KEY]), arrays)
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} has corrupt metadata ({e})") from None


def _read_metadata(blob: bytes) -> dict:
    """The ``__metadata__`` of a safetensors blob: 8-byte little-endian header length, then JSON."""
    if len(blob) < 8:
        raise ValueError("file shorter than the safetensors header")
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8: 8 + n]).get("__metadata__", {})
