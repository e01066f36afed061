"""Model families by name: ``register`` (a class decorator), ``get``, ``names``, ``build``.

Names are lower-case with hyphens. ``ALIASES`` keeps the names of the presets that came before
families (``--model mlp|conv``) working: each maps to a family and the options it fixes.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Optional

from ..data import SPECS, DataSpec
from ..options import check

_FAMILIES: dict = {}

ALIASES = {"mlp": ("vae", {"arch": "mlp"}), "conv": ("vae", {"arch": "conv"})}


def register(cls):
    """Class decorator: make ``cls`` buildable by its ``name``."""
    if not cls.name or cls.name in _FAMILIES or cls.name in ALIASES:
        raise ValueError(f"model name {cls.name!r} is empty or taken")
    _FAMILIES[cls.name] = cls
    return cls


def names() -> list:
    return sorted(_FAMILIES)


def get(name: str):
    """The family registered as ``name``; ValueError listing the known names otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())} "
                         f"(and the aliases {', '.join(sorted(ALIASES))})")
    return _FAMILIES[name]


def resolve(name: str, options: Optional[dict] = None) -> tuple:
    """(family name, options) with an alias replaced by its family and fixed options."""
    options = dict(options or {})
    if name in ALIASES:
        family, fixed = ALIASES[name]
        for key, value in fixed.items():
            if options.get(key, value) != value:
                raise ValueError(f"--model {name} means --model {family} --{key} {value}; "
                                 f"it cannot take --{key} {options[key]}")
        return family, {**options, **fixed}
    return name, options


def build(name: str, options: Optional[dict] = None, spec: DataSpec = SPECS["mnist"], rng=None, parent=None):
    """A family's model from its name (or an alias) and a dict of options (missing ones take
    their defaults), with ``parent`` (a trained model) for a second-stage family; ValueError
    for an unknown name, an option the family does not take, or a parent missing or not wanted."""
    cls, checked = checked_options(name, options)
    check_data(cls, spec)
    if cls.needs_parent != (parent is not None):
        raise ValueError(f"model {cls.name!r} is a second-stage model: give --parent RUN, a trained run it builds on"
                         if cls.needs_parent else f"model {cls.name!r} takes no --parent")
    return cls(checked, spec, rng=rng, **({"parent": parent} if cls.needs_parent else {}))


def check_data(cls, spec: DataSpec) -> None:
    """ValueError in one line when the family cannot read the data set (images or tokens)."""
    if spec.kind not in cls.data_kinds:
        readers = ", ".join(n for n in names() if spec.kind in _FAMILIES[n].data_kinds)
        raise ValueError(f"model {cls.name!r} reads {' or '.join(cls.data_kinds)}; {spec.name} holds {spec.kind} "
                         f"(models for it: {readers})")


def checked_options(name: str, options: Optional[dict] = None) -> tuple:
    """(family class, its Options with every value checked) for a name and an options dict;
    ValueError for an unknown name, an option the family does not take, or a value out of
    range, before anything is built (the trainer asks before it makes a run folder)."""
    family, options = resolve(name, options)
    cls = get(family)
    known = {f.name for f in fields(cls.Options)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"model {family!r} does not take {', '.join('--' + u.replace('_', '-') for u in unknown)}")
    checked = cls.Options(**options)
    check(checked)
    return cls, checked
