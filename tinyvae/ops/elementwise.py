"""Pointwise ops. Each backward returns gradients in the broadcast shape of the forward;
the tape sums them back to each input's shape.

Non-finite values pass through: no op maps a NaN to a number (relu uses ``maximum``,
which propagates NaN, rather than a mask).
"""
import math
import operator

from kernels.bce_logits import log1p_exp_neg_abs, stable_sigmoid

from .. import backend
from ..autograd import Function


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, -gy


class Mul(Function):
    def forward(self, a, b):
        self.saved = (a, b)
        return a * b

    def backward(self, gy):
        a, b = self.saved
        return gy * b, gy * a


class Div(Function):
    def forward(self, a, b):
        self.saved = (a, b)
        return a / b

    def backward(self, gy):
        a, b = self.saved
        ga = gy / b
        return ga, (-ga * a / b if self.needs_grad(1) else None)


class Pow(Function):
    """y = a ** b;  dy/da = b a^(b-1),  dy/db = y log a."""

    def forward(self, a, b):
        y = a ** b
        self.saved = (a, b, y)
        return y

    def backward(self, gy):
        a, b, y = self.saved
        ga = gy * b * a ** (b - 1) if self.needs_grad(0) else None
        gb = gy * y * backend.array_module(a).log(a) if self.needs_grad(1) else None
        return ga, gb


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Exp(Function):
    def forward(self, x):
        y = backend.array_module(x).exp(x)
        self.saved = y
        return y

    def backward(self, gy):
        return gy * self.saved


class Log(Function):
    def forward(self, x):
        self.saved = x
        return backend.array_module(x).log(x)

    def backward(self, gy):
        return gy / self.saved


class Log1p(Function):
    def forward(self, x):
        self.saved = x
        return backend.array_module(x).log1p(x)

    def backward(self, gy):
        return gy / (1 + self.saved)


class Sqrt(Function):
    def forward(self, x):
        y = backend.array_module(x).sqrt(x)
        self.saved = y
        return y

    def backward(self, gy):
        return gy / (2 * self.saved)


class Abs(Function):
    """d|x|/dx = sign(x), taken as 0 at x = 0 (as PyTorch does)."""

    def forward(self, x):
        self.saved = x
        return backend.array_module(x).abs(x)

    def backward(self, gy):
        return gy * backend.array_module(gy).sign(self.saved)


class Tanh(Function):
    def forward(self, x):
        y = backend.array_module(x).tanh(x)
        self.saved = y
        return y

    def backward(self, gy):
        y = self.saved
        return gy * (1 - y * y)


class Sigmoid(Function):
    def forward(self, x):
        y = stable_sigmoid(x)
        self.saved = y
        return y

    def backward(self, gy):
        y = self.saved
        return gy * y * (1 - y)


class Relu(Function):
    def forward(self, x):
        self.saved = x
        return backend.array_module(x).maximum(x, 0)

    def backward(self, gy):
        return gy * (self.saved > 0)


class LeakyRelu(Function):
    def __init__(self, slope: float):
        self.slope = slope

    def forward(self, x):
        self.saved = x > 0
        return backend.array_module(x).where(self.saved, x, x * self.slope)

    def backward(self, gy):
        return backend.array_module(gy).where(self.saved, gy, gy * self.slope)


class Softplus(Function):
    """softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^−|x|); derivative σ(x)."""

    def forward(self, x):
        self.saved = x
        return backend.array_module(x).maximum(x, 0) + log1p_exp_neg_abs(x)

    def backward(self, gy):
        return gy * stable_sigmoid(self.saved)


class LogSigmoid(Function):
    """log σ(x) = −softplus(−x) = min(x, 0) − log(1 + e^−|x|); derivative σ(−x)."""

    def forward(self, x):
        self.saved = x
        return backend.array_module(x).minimum(x, 0) - log1p_exp_neg_abs(x)

    def backward(self, gy):
        return gy * stable_sigmoid(-self.saved)


# Python floats, not NumPy scalars: a NumPy float64 scalar would promote float32 arrays.
_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class Gelu(Function):
    """GELU(x) = x Φ(x) (exact, with erf) or its tanh approximation;
    derivative Φ(x) + x φ(x) for the exact form."""

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        xp = backend.array_module(x)
        self.saved = x
        if self.approximate == "tanh":
            return 0.5 * x * (1 + xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + backend.erf(x / _SQRT_2))

    def backward(self, gy):
        x = self.saved
        xp = backend.array_module(x)
        if self.approximate == "tanh":
            u = _SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)
            t = xp.tanh(u)
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return gy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        cdf = 0.5 * (1 + backend.erf(x / _SQRT_2))
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * x * x)
        return gy * (cdf + x * pdf)


class Silu(Function):
    """SiLU(x) = x σ(x); derivative σ(x) (1 + x (1 - σ(x)))."""

    def forward(self, x):
        s = stable_sigmoid(x)
        self.saved = (x, s)
        return x * s

    def backward(self, gy):
        x, s = self.saved
        return gy * s * (1 + x * (1 - s))


class Maximum(Function):
    """Elementwise max; on a tie each input gets half the gradient (as PyTorch does)."""
    pick, wins = "maximum", staticmethod(operator.gt)

    def forward(self, a, b):
        self.saved = (a, b)
        return getattr(backend.array_module(a), self.pick)(a, b)

    def backward(self, gy):
        a, b = self.saved
        share = (self.wins(a, b) + 0.5 * (a == b)).astype(gy.dtype)   # bool + 0.5·bool is float64
        return gy * share, gy * (1 - share)


class Minimum(Maximum):
    """Elementwise min; ties split the gradient like Maximum."""
    pick, wins = "minimum", staticmethod(operator.lt)


class Clip(Function):
    """clip(x, lo, hi); gradient passes where lo <= x <= hi. NaN stays NaN."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = backend.array_module(x)
        self.saved = x
        y = x
        if self.lo is not None:
            y = xp.maximum(y, x.dtype.type(self.lo))
        if self.hi is not None:
            y = xp.minimum(y, x.dtype.type(self.hi))
        return y

    def backward(self, gy):
        x = self.saved
        inside = x == x
        if self.lo is not None:
            inside &= x >= self.lo
        if self.hi is not None:
            inside &= x <= self.hi
        return gy * inside


class Where(Function):
    """where(cond, a, b); ``cond`` is a constant boolean array given at construction."""

    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        return backend.array_module(self.cond).where(self.cond, a, b)

    def backward(self, gy):
        zero = gy.dtype.type(0)
        xp = backend.array_module(gy)
        return xp.where(self.cond, gy, zero), xp.where(self.cond, zero, gy)
