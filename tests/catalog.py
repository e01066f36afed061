"""One catalog of differentiable ops; ``test_ops_catalog.py`` runs every check over it.

Each ``OpCase`` declares how many inputs it takes, how their shapes are drawn, the value
domain that keeps the op smooth (away from kinks and poles), the tinyvae call, and a
NumPy reference for the forward value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tinyvae import functional as F

MAX_SIDE = 3


@dataclass
class OpCase:
    name: str
    fn: Callable                 # tinyvae tensors -> tensor (or tuple of tensors)
    ref: Callable                # numpy float64 arrays -> array (or tuple)
    shapes: Callable             # hypothesis draw -> list of input shapes
    domain: str = "real"         # how input values are drawn (see make_values)
    valid: Optional[Callable] = None   # extra guard on drawn arrays (e.g. no near-ties)
    grad_inputs: Optional[tuple] = None  # which inputs to differentiate (default: all)


# ---- shape strategies ----------------------------------------------------------------

def unary(min_dims=0, max_dims=4):
    return lambda draw: [draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, max_side=MAX_SIDE))]


def broadcast(n=2, min_dims=0):
    def draw_shapes(draw):
        return list(draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=min_dims, max_dims=4,
                                                          max_side=MAX_SIDE)).input_shapes)
    return draw_shapes


def matmul_shapes(draw):
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=MAX_SIDE)).input_shapes
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    a = batch[0] + (n, k) if draw(st.booleans()) else (k,)
    b = batch[1] + (k, m) if draw(st.booleans()) else (k,)
    return [a, b]


def linear_shapes(draw):
    lead = draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=MAX_SIDE))
    i, o = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return [lead + (i,), (o, i), (o,)]


def same(n):
    def draw_shapes(draw):
        shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=MAX_SIDE))
        return [shape] * n
    return draw_shapes


def matrix_like(draw):
    return [draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=4))]


# ---- value domains ---------------------------------------------------------------------

def make_values(rng: np.random.Generator, shape, domain: str) -> np.ndarray:
    if domain == "real":
        return rng.standard_normal(shape)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":           # away from a kink at 0
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 2.0, shape)
    if domain == "distinct":          # no near-ties, for max/min selection
        n = int(np.prod(shape))
        return (rng.permutation(n) * 0.25 - n * 0.125 + rng.uniform(0, 0.05, n)).reshape(shape)
    if domain == "unit":              # probabilities / targets in (0, 1)
        return rng.uniform(0.05, 0.95, shape)
    if domain == "clip":              # away from the clip bounds ±0.5
        return rng.choice([-1.0, 1.0], shape) * rng.choice([0.25, 1.0], shape) + rng.uniform(-0.1, 0.1, shape)
    raise ValueError(domain)


def far_apart(a, b):
    return bool(np.all(np.abs(np.subtract(a, b)) > 1e-2))


def _sp(x):
    return np.logaddexp(0, x)


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _erf(x):
    import math
    return np.vectorize(math.erf)(x)


def _lse(x, axis, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _last(x):
    return -1 if x.ndim else None


def _split_ref(x):
    return tuple(np.split(x, [1], axis=0))


def _diag_ref(x):
    return np.diagonal(x, 1, 0, 1)


def _index_ref(x):
    return x[np.array([0, x.shape[0] - 1, 0])]


CATALOG = [
    # arithmetic, with broadcasting
    OpCase("add", lambda a, b: a + b, np.add, broadcast()),
    OpCase("sub", lambda a, b: a - b, np.subtract, broadcast()),
    OpCase("mul", lambda a, b: a * b, np.multiply, broadcast()),
    OpCase("div", lambda a, b: a / b, np.divide, broadcast(), domain="nonzero"),
    OpCase("pow", lambda a, b: a ** b, np.power, broadcast(), domain="positive"),
    OpCase("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, unary()),
    OpCase("rsub_scalar", lambda a: 2.0 - a, lambda a: 2.0 - a, unary()),
    OpCase("rdiv_scalar", lambda a: 2.0 / a, lambda a: 2.0 / a, unary(), domain="nonzero"),
    OpCase("neg", lambda a: -a, np.negative, unary()),
    OpCase("matmul", lambda a, b: a @ b, np.matmul, matmul_shapes),
    OpCase("linear", lambda x, w, b: F.linear(x, w, b), lambda x, w, b: x @ w.T + b, linear_shapes),
    OpCase("linear_no_bias", lambda x, w: F.linear(x, w), lambda x, w: x @ w.T, lambda d: linear_shapes(d)[:2]),
    # pointwise maths
    OpCase("exp", F.exp, np.exp, unary()),
    OpCase("log", F.log, np.log, unary(), domain="positive"),
    OpCase("log1p", F.log1p, np.log1p, unary(), domain="positive"),
    OpCase("sqrt", F.sqrt, np.sqrt, unary(), domain="positive"),
    OpCase("abs", F.abs, np.abs, unary(), domain="nonzero"),
    OpCase("tanh", F.tanh, np.tanh, unary()),
    OpCase("sigmoid", F.sigmoid, _sig, unary()),
    OpCase("relu", F.relu, lambda x: np.maximum(x, 0), unary(), domain="nonzero"),
    OpCase("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda x: np.where(x > 0, x, 0.1 * x), unary(),
           domain="nonzero"),
    OpCase("softplus", F.softplus, _sp, unary()),
    OpCase("log_sigmoid", F.log_sigmoid, lambda x: -_sp(-x), unary()),
    OpCase("gelu", F.gelu, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), unary()),
    OpCase("gelu_tanh", lambda x: F.gelu(x, "tanh"),
           lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), unary()),
    OpCase("silu", F.silu, lambda x: x * _sig(x), unary()),
    OpCase("maximum", F.maximum, np.maximum, broadcast(), valid=far_apart),
    OpCase("minimum", F.minimum, np.minimum, broadcast(), valid=far_apart),
    OpCase("clip", lambda x: F.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5), unary(), domain="clip"),
    OpCase("where", lambda a, b: F.where(a.data > 0, a, b), lambda a, b: np.where(a > 0, a, b), broadcast(),
           domain="nonzero"),
    # reductions
    OpCase("sum_all", F.sum, np.sum, unary()),
    OpCase("sum_last_keepdims", lambda x: F.sum(x, _last(x), keepdims=True),
           lambda x: np.sum(x, _last(x), keepdims=True), unary(min_dims=1)),
    OpCase("sum_axes_01", lambda x: F.sum(x, (0, 1)), lambda x: np.sum(x, (0, 1)), unary(min_dims=2)),
    OpCase("mean_all", F.mean, np.mean, unary()),
    OpCase("mean_first", lambda x: F.mean(x, 0), lambda x: np.mean(x, 0), unary(min_dims=1)),
    OpCase("var_last", lambda x: F.var(x, -1), lambda x: np.var(x, -1), unary(min_dims=1)),
    OpCase("var_all_ddof1", lambda x: F.var(x, ddof=1), lambda x: np.var(x, ddof=1), same(1),
           valid=lambda x: x.size > 1),
    OpCase("max_all", F.max, np.max, unary(), domain="distinct"),
    OpCase("max_last", lambda x: F.max(x, -1), lambda x: np.max(x, -1), unary(min_dims=1), domain="distinct"),
    OpCase("min_axes_keep", lambda x: F.min(x, (0, -1), keepdims=True),
           lambda x: np.min(x, (0, -1), keepdims=True), unary(min_dims=2), domain="distinct"),
    OpCase("logsumexp_all", F.logsumexp, lambda x: _lse(x, None), unary()),
    OpCase("logsumexp_last", lambda x: F.logsumexp(x, -1, keepdims=True), lambda x: _lse(x, -1, True),
           unary(min_dims=1)),
    OpCase("softmax", F.softmax, lambda x: np.exp(x - _lse(x, -1, True)), unary(min_dims=1)),
    OpCase("log_softmax_0", lambda x: F.log_softmax(x, 0), lambda x: x - _lse(x, 0, True), unary(min_dims=1)),
    # shapes
    OpCase("reshape_flat", lambda x: x.reshape(-1), lambda x: x.reshape(-1), unary()),
    OpCase("permute_reverse", lambda x: x.T, lambda x: x.T, unary()),
    OpCase("transpose_01", lambda x: x.transpose(0, 1), lambda x: np.swapaxes(x, 0, 1), unary(min_dims=2)),
    OpCase("broadcast_to", lambda x: F.broadcast_to(x, (2,) + x.shape),
           lambda x: np.broadcast_to(x, (2,) + x.shape), unary()),
    OpCase("getitem_slice", lambda x: x[..., ::2], lambda x: x[..., ::2], unary(min_dims=1)),
    OpCase("getitem_repeated_ints", lambda x: x[np.array([0, x.shape[0] - 1, 0])], _index_ref, unary(min_dims=1)),
    OpCase("concat", lambda a, b: F.concat([a, b], axis=0), lambda a, b: np.concatenate([a, b], 0), same(2)),
    OpCase("stack_last", lambda a, b: F.stack([a, b], axis=-1), lambda a, b: np.stack([a, b], -1), same(2)),
    OpCase("split", lambda x: F.split(x, [1, x.shape[0] - 1]), _split_ref, unary(min_dims=1),
           valid=lambda x: x.shape[0] >= 2),
    OpCase("pad", lambda x: F.pad(x, [(1, 2)] * x.ndim, 0.5),
           lambda x: np.pad(x, [(1, 2)] * x.ndim, constant_values=0.5), unary(min_dims=1)),
    OpCase("tril", lambda x: F.tril(x, -1), lambda x: np.tril(x, -1), matrix_like),
    OpCase("diagonal", lambda x: F.diagonal(x, 1, 0, 1), _diag_ref, matrix_like),
    # losses
    OpCase("bce_with_logits", lambda x, t: F.binary_cross_entropy_with_logits(x, t, "none"),
           lambda x, t: _sp(x) - x * t, broadcast()),
    OpCase("mse_loss", F.mse_loss, lambda a, b: np.mean((a - b) ** 2), same(2)),
    OpCase("gaussian_nll", lambda x, m, lv: F.gaussian_nll(x, m, lv, "sum"),
           lambda x, m, lv: np.sum(0.5 * (np.log(2 * np.pi) + lv + (x - m) ** 2 * np.exp(-lv))), same(3)),
]


def cross_entropy_case(rng, n, c, extra=()):
    """Logits [n, c, *extra], targets [n, *extra] and the mean of −log softmax[target], entry
    by entry."""
    logits = rng.standard_normal((n, c, *extra))
    target = rng.integers(0, c, (n, *extra))
    ref = -np.mean([logits[(i, target[(i, *rest)], *rest)] - _lse(logits[(i, slice(None), *rest)], 0)
                    for i in range(n) for rest in np.ndindex(*extra)])
    return logits, target, ref
