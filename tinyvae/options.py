"""Options as dataclass fields: a default, one line of help, and the values allowed. The
trainer's options (``train.RunOptions``) and every model family's are declared this way, and
the command line is generated from them."""
from __future__ import annotations

import math
from dataclasses import field, fields
from typing import Any, Optional


def option(default: Any, help: str, choices: Optional[tuple] = None, minimum: Optional[float] = None,
           positive: bool = False):
    """A dataclass field: its default, one line of help, and the values it may take
    (``choices``, numbers ≥ ``minimum``, or > 0 if ``positive``; numbers must be finite)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "positive": positive})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(options) -> None:
    """ValueError naming the first option outside its allowed values."""
    for f in fields(options):
        value, meta = getattr(options, f.name), f.metadata
        if value is None or isinstance(value, bool):
            continue
        if meta.get("choices") and value not in meta["choices"]:
            raise ValueError(f"{flag(f.name)} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError(f"{flag(f.name)} must be a finite number, got {value!r}")
            if meta.get("minimum") is not None and value < meta["minimum"]:
                raise ValueError(f"{flag(f.name)} must be at least {meta['minimum']}, got {value!r}")
            if meta.get("positive") and value <= 0:
                raise ValueError(f"{flag(f.name)} must be positive, got {value!r}")
