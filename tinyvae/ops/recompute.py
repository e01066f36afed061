"""Recomputation (gradient checkpointing, Chen et al. 2016): a function whose graph is not kept.

``Recompute(fn, n_inputs, rng)(*inputs, *params)`` runs ``fn(*inputs)`` without recording
and keeps only its inputs. Its backward runs ``fn`` again, recording, on fresh leaves holding
the same input values, and back-propagates through that graph: the inputs' gradients are
returned to the outer graph, and the parameters ``fn`` uses receive theirs in that nested
backward, as leaves always do. Memory: one call's graph at a time however many calls a loss
makes; cost: one more forward per call.

``params`` are passed as inputs only so that the tape notes their versions: an optimizer
step between the forward and the backward would make the recomputation use other weights,
and is refused like any stale input. ``rng``, the generator ``fn`` draws from, is rewound to
where it stood at the forward, so the recomputation draws the same noise, and then put back.
"""
from __future__ import annotations

from ..autograd import Function, enable_grad, no_grad
from ..tensor import Tensor


class Recompute(Function):
    def __init__(self, fn, n_inputs: int, rng=None):
        self.fn, self.n_inputs, self.rng = fn, n_inputs, rng

    def forward(self, *arrays):
        xs = arrays[:self.n_inputs]
        self.rng_state = self.rng.bit_generator.state if self.rng is not None else None
        with no_grad():
            out = self.fn(*[Tensor(x) for x in xs])
        self.saved = xs
        return out.data

    def backward(self, gy):
        leaves = [Tensor(x, requires_grad=self.needs_grad(i)) for i, x in enumerate(self.saved)]
        if self.rng is not None:
            after, self.rng.bit_generator.state = self.rng.bit_generator.state, self.rng_state
        try:
            with enable_grad():
                out = self.fn(*leaves)
        finally:
            if self.rng is not None:
                self.rng.bit_generator.state = after
        if out.requires_grad:
            out.backward(gy)
        grads = tuple(leaf.grad if leaf.requires_grad else None for leaf in leaves)
        return grads + (None,) * (len(self.inputs) - self.n_inputs)
