"""``Module`` and ``Parameter``: the bookkeeping that turns tensors into a trainable model.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it, in order, so
``named_parameters()`` and ``state_dict()`` keys read like PyTorch's ("0.weight",
"encoder.fc.bias"). Buffers are plain arrays that belong to the state but get no gradient
(BatchNorm's running statistics).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that a Module trains (requires_grad=True)."""
    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad)


class Module:
    training: bool = True

    def __init__(self):
        object.__setattr__(self, "_params", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})

    def __setattr__(self, name, value):
        if "_params" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before "
                                 f"assigning {name!r}")
        for registry in (self._params, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._params[name] = value
            value.name = name
        elif isinstance(value, Module):
            self._modules[name] = value
            for inner, p in value.named_parameters(f"{name}."):    # names as in state_dict, for errors
                p.name = inner
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array, constant: bool = False) -> None:
        """A state array without a gradient; ``constant`` if training never changes it (a mask)."""
        self._buffers[name] = constant
        object.__setattr__(self, name, array)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal ---------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}{name}.")

    def named_parameters(self, prefix: str = ""):
        for mod_prefix, m in self.named_modules(prefix):
            for name, p in m._params.items():
                yield mod_prefix + name, p

    def parameters(self) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters())

    def named_buffers(self, prefix: str = ""):
        for mod_prefix, m in self.named_modules(prefix):
            for name in m._buffers:
                yield mod_prefix + name, getattr(m, name)

    def state_items(self):
        """(dotted name, array) of every parameter and buffer, on their device."""
        yield from ((name, p.data) for name, p in self.named_parameters())
        yield from self.named_buffers()

    def stepped_state(self):
        """The arrays a training step may change other than through the optimizer: every buffer
        not registered constant (BatchNorm's running statistics, EMA codebooks), and the own
        parameters of the modules that hold one (a VQ layer's codebook, which dead-code restarts
        rewrite). Data-parallel ranks copy these from rank 0 after every step."""
        for mod_prefix, m in self.named_modules():
            changing = [name for name, constant in m._buffers.items() if not constant]
            if changing:
                yield from ((mod_prefix + name, p.data) for name, p in m._params.items())
                yield from ((mod_prefix + name, getattr(m, name)) for name in changing)

    # ---- modes and gradients ------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for _, m in self.named_modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def to(self, device: str) -> "Module":
        """Move every parameter and buffer to ``device`` in place."""
        for _, m in self.named_modules():
            for p in m._params.values():
                if p.device != device:
                    p.data = backend.to_device(p.data, device)
                    p.mark_written()
                p.grad = None if p.grad is None else backend.to_device(p.grad, device)
            for name in m._buffers:
                object.__setattr__(m, name, backend.to_device(getattr(m, name), device))
        return self

    # ---- state ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Parameter and buffer arrays by dotted name (copies on the CPU)."""
        state = {name: backend.to_device(p.data, "cpu").copy() for name, p in self.named_parameters()}
        state.update({name: backend.to_device(b, "cpu").copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers; errors name every missing, unexpected,
        mis-shaped and mis-typed key (an array must have the dtype it replaces), and nothing is
        changed unless all of them fit."""
        targets = dict(self.named_parameters())
        buffers = dict(self.named_buffers())
        expected = {name: (tuple(t.shape), t.dtype) for name, t in targets.items()}
        expected.update({name: (tuple(b.shape), b.dtype) for name, b in buffers.items()})
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        given = {k: (tuple(np.shape(state[k])), getattr(state[k], "dtype", None)) for k in expected if k in state}
        wrong = [f"{k}: checkpoint {given[k][0]} vs model {shape}" for k, (shape, _) in expected.items()
                 if k in given and given[k][0] != shape]
        mistyped = [f"{k}: checkpoint {given[k][1]} vs model {dtype}" for k, (_, dtype) in expected.items()
                    if k in given and given[k][1] != dtype]
        problems = []
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if wrong:
            problems.append(f"shape mismatch {wrong}")
        if mistyped:
            problems.append(f"dtype mismatch {mistyped}")
        if problems:
            raise ValueError("load_state_dict: " + "; ".join(problems))
        for name, p in targets.items():
            if name in state:
                xp = backend.array_module(p.data)
                p.data = xp.array(backend.to_device(state[name], p.device), copy=True)
                p.mark_written()
        for prefix_name, b in buffers.items():
            if prefix_name in state:
                owner, attr = self._owner_of(prefix_name)
                object.__setattr__(owner, attr, backend.to_device(state[prefix_name], backend.device_of(b)).copy())

    def _owner_of(self, dotted: str):
        *path, attr = dotted.split(".")
        owner = self
        for part in path:
            owner = owner._modules[part]
        return owner, attr

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            lines.append(f"  ({name}): " + repr(m).replace("\n", "\n  "))
        return lines[0] + (")" if len(lines) == 1 else "\n" + "\n".join(lines[1:]) + "\n)")

    def extra_repr(self) -> str:
        return ""


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ..."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            setattr(self, str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)


class ModuleList(Module):
    """A list of modules whose parameters are registered ("0.weight", ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m: Module) -> None:
        setattr(self, str(len(self._modules)), m)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __iter__(self):
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)
