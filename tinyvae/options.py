"""Options as dataclass fields: a default, one line of help, and the values allowed. The
trainer's options (``train.RunOptions``) and every model family's are declared this way, and
the command line is generated from them."""
from __future__ import annotations

import math
import typing
from dataclasses import field, fields
from typing import Any, Optional

FLOAT32_MAX = 3.4028234663852886e38
_ACCEPTS = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def option(default: Any, help: str, choices: Optional[tuple] = None, minimum: Optional[float] = None,
           positive: bool = False, maximum: Optional[float] = None):
    """A dataclass field: its default, one line of help, and the values it may take
    (``choices``, numbers ≥ ``minimum`` and ≤ ``maximum``, or > 0 if ``positive``; numbers
    must be finite, and float options within float32's range)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum,
                                            "positive": positive, "maximum": maximum})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def value_type(cls, name: str) -> type:
    """The option's value type: int, float, str or bool (Optional[X] → X)."""
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def check(options) -> None:
    """ValueError naming the first option of the wrong type or outside its allowed values
    (a record read from a file is checked as strictly as the command line)."""
    for f in fields(options):
        value, meta, kind = getattr(options, f.name), f.metadata, value_type(type(options), f.name)
        if value is None and f.default is None:
            continue
        if not isinstance(value, _ACCEPTS[kind]) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{flag(f.name)} must be {kind.__name__ if kind is not str else 'a string'}, "
                             f"got {value!r}")
        if isinstance(value, bool):
            continue
        if meta.get("choices") and value not in meta["choices"]:
            raise ValueError(f"{flag(f.name)} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError(f"{flag(f.name)} must be a finite number, got {value!r}")
            if kind is float and abs(value) > FLOAT32_MAX:        # the arrays it meets are float32
                raise ValueError(f"{flag(f.name)} must be a finite number within float32's range, got {value!r}")
            if meta.get("minimum") is not None and value < meta["minimum"]:
                raise ValueError(f"{flag(f.name)} must be at least {meta['minimum']}, got {value!r}")
            if meta.get("maximum") is not None and value > meta["maximum"]:
                raise ValueError(f"{flag(f.name)} must be at most {meta['maximum']}, got {value!r}")
            if meta.get("positive") and value <= 0:
                raise ValueError(f"{flag(f.name)} must be positive, got {value!r}")
