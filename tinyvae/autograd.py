"""The reverse-mode tape: ``Function`` (one recorded op) and the backward walk.

A ``Function`` subclass holds one op's maths: ``forward`` takes and returns raw arrays
(NumPy or CuPy), ``backward`` takes the gradient of each output and returns one
gradient per input.  Calling a Function instance on tensors runs ``forward`` and, when
gradients are wanted, records the call so ``backward`` can be run later.

Un-broadcasting happens once, here: ``backward`` may return a gradient with the
broadcast shape of the forward computation, and the walk sums it back to the input's
shape (``sum_to``), so no op does that itself.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional, Sequence

from . import backend
from . import tensor as _tensor   # Tensor is looked up at call time: tensor.py imports this module


class _GradMode:
    """Whether ops are being recorded. One switch, flipped only by ``no_grad`` and ``enable_grad``."""
    enabled = True


class _SetGradMode(contextlib.ContextDecorator):
    """Context manager and decorator: recording set to ``enabled`` inside, restored after."""
    enabled: bool

    def __enter__(self):
        self._prev = _GradMode.enabled
        _GradMode.enabled = self.enabled

    def __exit__(self, *exc):
        _GradMode.enabled = self._prev
        return False


class no_grad(_SetGradMode):
    """Ops inside record nothing and need no memory for backward."""
    enabled = False


class enable_grad(_SetGradMode):
    """Ops inside are recorded even within ``no_grad`` (a recomputation in backward needs its graph)."""
    enabled = True


def is_grad_enabled() -> bool:
    return _GradMode.enabled


def sum_to(g, shape: tuple):
    """Sum ``g`` down to ``shape``: the adjoint of NumPy broadcasting from ``shape`` to ``g.shape``."""
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


class Function:
    """One differentiable op. Subclasses implement ``forward`` and ``backward`` side by side.

    ``forward(*arrays)`` returns an array (or a tuple of arrays for multi-output ops) and
    keeps what backward needs in ``self.saved``; ``backward(*grads)`` returns one gradient
    (or None) per input. ``self.needs_grad(i)`` says whether input i wants a gradient, so a
    backward can skip work nobody needs. ``self.last_use`` is True while a backward runs for
    the last time (no retain_graph): it may then write over arrays it made and saved for
    itself, instead of allocating fresh ones.
    """
    saved: Any = None
    last_use = False
    inputs: Sequence = ()
    versions: tuple = ()       # the inputs' versions when recorded
    out_meta: tuple = ()       # multi-output ops: (shape, dtype) per output, for zero gradients
    freed = False

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError

    def needs_grad(self, i: int) -> bool:
        x = self.inputs[i]
        return x is not None and x.requires_grad

    @property
    def name(self) -> str:
        return type(self).__name__

    def __call__(self, *inputs):
        Tensor = _tensor.Tensor
        arrays, tensors, record = [], [], False
        for x in inputs:
            if isinstance(x, Tensor):
                record = record or x.requires_grad
            elif isinstance(x, (int, float)):
                # Python numbers stay raw: NumPy and CuPy keep the tensor's dtype for them (NEP 50).
                arrays.append(x)
                tensors.append(None)
                continue
            else:
                x = _tensor.as_tensor(x, like=inputs)
            arrays.append(x.data)
            tensors.append(x)
        if backend.cupy is not None:
            _check_same_device(self.name, tensors)
        try:
            out = self.forward(*arrays)
        except ValueError as e:   # broadcasting / shape errors: name the op and the shapes
            shapes = ", ".join(str(getattr(a, "shape", "scalar")) for a in arrays)
            raise ValueError(f"{self.name}: {e} (input shapes {shapes})") from None
        if not (record and _GradMode.enabled):
            return tuple(Tensor(o) for o in out) if isinstance(out, tuple) else Tensor(out)
        self.inputs = tensors
        self.versions = tuple(t.version if t is not None else 0 for t in tensors)
        if isinstance(out, tuple):
            self.out_meta = tuple((o.shape, o.dtype) for o in out)
            return tuple(Tensor(o, True, self, i) for i, o in enumerate(out))
        return Tensor(out, True, self, 0)


def _check_same_device(name: str, ts) -> None:
    devices = {t.device for t in ts if t is not None}
    if len(devices) > 1:
        raise RuntimeError(f"{name}: inputs are on different devices ({' and '.join(sorted(devices))}); "
                           "move them with .to(device) first")


def _topological_order(root_fn: Function) -> list:
    """Functions reachable from ``root_fn``, each after every function that consumes its outputs.

    Iterative depth-first post-order, so a chain of 100,000 ops needs no recursion.
    """
    post: list = []
    visited: set = set()
    stack = [(root_fn, False)]
    while stack:
        fn, expanded = stack.pop()
        if expanded:
            post.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for t in fn.inputs:
            if t is not None and t.creator is not None and id(t.creator) not in visited:
                stack.append((t.creator, False))
    post.reverse()
    return post


def run_backward(root, grad, retain_graph: bool = False, sink=None, taps: Optional[dict] = None) -> None:
    """Accumulate d(root)/d(leaf) · grad into ``.grad`` of every leaf that requires grad; with
    ``sink(leaf, g)``, hand each leaf's gradient to it instead. ``taps``: {id(fn): [(output
    index, tensor), ...]}: each such non-leaf tensor's whole gradient goes to ``sink`` too,
    once every consumer has added to it."""
    sink = sink or _accumulate_leaf
    if root.creator is None:
        sink(root, grad)
        return
    pending = {id(root.creator): {root.index: grad}}   # fn id -> {output index: gradient}
    for fn in _topological_order(root.creator):
        if fn.freed:
            raise RuntimeError(
                f"backward through {fn.name} a second time: its saved values were freed after the "
                "first backward; pass retain_graph=True to the first backward to keep them")
        got = pending.pop(id(fn), None)
        fn.last_use = not retain_graph
        for index, tensor in (taps or {}).get(id(fn), ()):
            if got is not None and index in got:
                sink(tensor, got[index])
        if got is not None:   # None: every consumer returned no gradient for this op's outputs
            _backward_one(fn, got, pending, sink)
        if not retain_graph:
            fn.saved = None
            fn.inputs = ()
            fn.freed = True


def _check_versions(fn: Function) -> None:
    """Refuse a backward whose saved inputs were written in place after the forward."""
    for i, (x, seen) in enumerate(zip(fn.inputs, fn.versions)):
        if x is not None and x.version != seen:
            raise RuntimeError(
                f"backward through {fn.name}: its input {i}, {x.describe()}, was changed in place after the "
                f"forward that used it (version {seen}, now {x.version}: an optimizer step, an initialiser, "
                "load_state_dict or an EMA update); run the forward again after changing it")


def _backward_one(fn: Function, got: dict, pending: dict, sink) -> None:
    _check_versions(fn)
    if fn.out_meta:   # multi-output: outputs that received no gradient get zeros
        xp = backend.array_module(next(iter(got.values())))
        gxs = fn.backward(*[got[i] if i in got else xp.zeros(shape, dtype)
                            for i, (shape, dtype) in enumerate(fn.out_meta)])
    else:
        gxs = fn.backward(got[0])
    if not isinstance(gxs, tuple):
        gxs = (gxs,)
    for x, gx in zip(fn.inputs, gxs):
        if gx is None or x is None or not x.requires_grad:
            continue
        gx = sum_to(gx, x.shape)
        if x.creator is None:
            sink(x, gx)
        else:
            slot = pending.setdefault(id(x.creator), {})
            slot[x.index] = gx if x.index not in slot else slot[x.index] + gx


def _accumulate_leaf(t, g) -> None:
    if g.dtype != t.dtype:
        g = g.astype(t.dtype)
    t.grad = g if t.grad is None else t.grad + g


def grad(output, inputs: Sequence, grad_output=None, retain_graph: bool = False) -> list:
    """d(output)/d(input) · grad_output for each of ``inputs`` (leaves or intermediate tensors
    of ``output``'s graph), as tensors of their shapes, leaving every ``.grad`` untouched
    (zeros for an input the output does not depend on). ``output`` is a scalar unless
    ``grad_output`` is given; ``retain_graph`` keeps the graph for another pass (the VQ-GAN's
    adaptive weight takes two losses' gradients at one layer)."""
    if not output.requires_grad:
        raise RuntimeError("grad() of a tensor that does not require grad (no graph was recorded)")
    xp = backend.array_module(output.data)
    if grad_output is None:
        if output.size != 1:
            raise RuntimeError(f"grad() of a non-scalar output of shape {output.shape} needs grad_output")
        grad_output = xp.ones(output.shape, output.dtype)
    elif isinstance(grad_output, _tensor.Tensor):
        grad_output = grad_output.data
    if tuple(grad_output.shape) != tuple(output.shape):
        raise ValueError(f"grad(): grad_output shape {grad_output.shape} != output shape {output.shape}")
    found = {id(t): None for t in inputs}

    def sink(t, g):
        if id(t) in found:
            found[id(t)] = g if found[id(t)] is None else found[id(t)] + g

    taps: dict = {}
    for t in inputs:
        if t.creator is not None:
            taps.setdefault(id(t.creator), []).append((t.index, t))
    run_backward(output, grad_output, retain_graph, sink, taps)
    return [_tensor.Tensor(found[id(t)].astype(t.dtype, copy=False) if found[id(t)] is not None
                   else xp.zeros(t.shape, t.dtype)) for t in inputs]
