"""Check analytic gradients against central finite differences, in float64.

With a random projection v of the outputs, the scalar L(x) = Σ v ⊙ f(x) has gradient
vᵀJ.  The analytic side is one backward pass with grad=v; the numeric side is
(L(x + εe_j) − L(x − εe_j)) / 2ε for every element j of every input (or, with
``fast_mode``, the directional derivative along one random direction u, checked against
vᵀJu, so large inputs need only two more evaluations each).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import backend
from .autograd import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree."""


def gradcheck(fn: Callable, inputs: Sequence, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, fast_mode: bool = False, seed: int = 0) -> bool:
    """Return True if every input that requires grad has a correct gradient, else raise
    ``GradcheckError`` naming the input, the worst element, and both values.

    ``fn`` takes the inputs (tensors or constants) and returns a tensor or a tuple of
    tensors. Floating tensors that are not float64 are upcast to float64 copies first.
    """
    rng = np.random.default_rng(seed)
    xs = [_upcast(x) for x in inputs]
    checked = [i for i, x in enumerate(xs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")

    outs = _as_tuple(fn(*xs))
    wrong = [type(o).__name__ for o in outs if not isinstance(o, Tensor)]
    if wrong or not outs:
        raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got {', '.join(wrong) or 'nothing'}")
    vs = [_on_device_of(rng.standard_normal(o.shape), o) for o in outs]

    def projected() -> float:
        with no_grad():
            return float(sum((_as_tuple(fn(*xs))[k].data * v).sum() for k, v in enumerate(vs)))

    for x in xs:
        if isinstance(x, Tensor):
            x.grad = None
    _backward_all(outs, vs)
    for i in checked:
        x = xs[i]
        analytic = backend.to_device(x.grad, "cpu") if x.grad is not None else np.zeros(x.shape)
        if fast_mode:
            _check_direction(i, x, analytic, projected, rng, eps, atol, rtol)
        else:
            _check_elements(i, x, analytic, projected, eps, atol, rtol)
    return True


def _check_elements(i, x, analytic, projected, eps, atol, rtol) -> None:
    numeric = np.zeros(x.shape)
    for j in np.ndindex(x.shape):      # index x.data itself: a reshape of a strided view would copy
        old = x.data[j].item()
        x.data[j] = old + eps
        plus = projected()
        x.data[j] = old - eps
        minus = projected()
        x.data[j] = old
        numeric[j] = (plus - minus) / (2 * eps)
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    if not (excess <= 0).all():                      # also catches NaN on either side
        excess = np.where(np.isnan(excess), np.inf, excess)
        worst = np.unravel_index(np.argmax(excess), x.shape)
        raise GradcheckError(
            f"gradcheck: input {i} (shape {x.shape}) element {tuple(int(k) for k in worst)}: "
            f"analytic {float(analytic[worst]):.8g} vs numeric {float(numeric[worst]):.8g} "
            f"(atol={atol}, rtol={rtol}, eps={eps})")


def _check_direction(i, x, analytic, projected, rng, eps, atol, rtol) -> None:
    u = rng.standard_normal(x.shape)
    u_dev = _on_device_of(u, x)
    base = x.data.copy()
    x.data[...] = base + eps * u_dev
    plus = projected()
    x.data[...] = base - eps * u_dev
    minus = projected()
    x.data[...] = base
    numeric = (plus - minus) / (2 * eps)
    exact = float((analytic * u).sum())
    if not abs(exact - numeric) <= atol + rtol * abs(numeric):
        raise GradcheckError(
            f"gradcheck (fast mode): input {i} (shape {x.shape}) directional derivative vᵀJu: "
            f"analytic {exact:.8g} vs numeric {numeric:.8g} (atol={atol}, rtol={rtol}, eps={eps})")


def _upcast(x):
    """float64 tensors are used as they are (perturbed in place, then restored), so a module's
    own parameters can be checked; other floating tensors are upcast to float64 copies."""
    if not isinstance(x, Tensor) or x.dtype == np.float64:
        return x
    data = x.data.astype(np.float64) if x.dtype.kind == "f" else x.data.copy()
    return Tensor(data, x.requires_grad)


def _as_tuple(out) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _on_device_of(a: np.ndarray, like: Tensor):
    return backend.to_device(a, like.device)


def _backward_all(outs, vs) -> None:
    """One backward pass for Σ_k v_k ⊙ out_k."""
    total = None
    for o, v in zip(outs, vs):
        if not o.requires_grad:
            continue
        term = (o * Tensor(v)).sum()
        total = term if total is None else total + term
    if total is not None:
        total.backward()

