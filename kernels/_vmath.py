"""exp, expm1 and log1p that LLVM can vectorise, for the CPU kernels, in float32 and float64.

Numba compiles ``math.exp`` / ``math.expm1`` / ``math.log1p`` to one libm call per element,
which cannot use SIMD; NumPy's own exp is vectorised, so a fused Numba loop built on libm ran
slower than three unfused NumPy passes. These versions are straight-line code.

exp and expm1 share one argument reduction:

  e^x     = 2^k e^r = 2 h (1 + (e^r − 1)),          k = round(x / ln 2),  r = x − k ln 2,
  e^x − 1 = 2^k (e^r − 1) + (2^k − 1)                  |r| ≤ ½ ln 2,  h = 2^(k−1)
          = 2 (h (e^r − 1) + (h − ½))               (h, not 2^k: the k just below overflow fits)

with e^r − 1 from its Taylor series (to r¹³ in float64, r⁷ in float32: below one unit in
the last place on that range), ln 2 split in two parts (Cody–Waite) so r is exact, and 2^k
made by writing k plus the exponent bias into the exponent bits. For k = 0 the expm1 formula
is exactly the series, so there is no cancellation near x = 0. NaN stays NaN; above the
overflow point the result is +inf, as e^x is; below x = −80 (float32) or −700 (float64),
where e^x < 2·10⁻³⁵ or 10⁻³⁰⁴, exp returns 0 and expm1 −1.

log1p(u) for u in (√½ − 1, 1] (the range softplus and BCE need, u = e^−|x|):

  w = 1 + u = 2^j m,  j ∈ {0, 1},  m ∈ [√½, √2]
  log(1 + u) = j ln 2 + 2 atanh(s) + (u − (w − 1)) / w,   s = (m − 1)/(m + 1),  |s| ≤ 0.172
  2 atanh(s) = 2s (1 + s²/3 + s⁴/5 + …)   (to s⁹ in float32, s¹⁹ in float64)

where the last term restores what rounding 1 + u lost (for a tiny u it is all of the answer).

``exp_for``, ``expm1_for`` and ``log1p_for`` return the version for a dtype. Their constants
are NumPy scalars of that dtype, frozen into the compiled code, and their integers are of the
dtype's width, so float32 data is computed in float32 (twice the SIMD width) and never
promoted.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


def _pow2i(bits: int, bias: int, mantissa: int, float_type):
    @intrinsic
    def pow2i(typingctx, k):
        """2^k for an integer k in the normal range, by setting the exponent bits."""
        if not isinstance(k, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            ity = ir.IntType(bits)
            n = builder.sext(args[0], ity) if k.bitwidth < bits else builder.trunc(args[0], ity) \
                if k.bitwidth > bits else args[0]
            value = builder.shl(builder.add(n, ir.Constant(ity, bias)), ir.Constant(ity, mantissa))
            return builder.bitcast(value, float_type)
        return (types.float32 if bits == 32 else types.float64)(k), codegen
    return pow2i


_SPECS = {   # dtype: (pow2i, series degree, lowest x kept, overflow point, ln2 hi/lo)
    np.float64: (_pow2i(64, 1023, 52, ir.DoubleType()), 13, -700.0, 709.782712893384,
                 6.93147180369123816490e-01, 1.90821492927058770002e-10),
    np.float32: (_pow2i(32, 127, 23, ir.FloatType()), 7, -80.0, 88.72283,
                 0.693145751953125, 1.428606765330187e-06),
}
_made: dict = {}


def _exp_reduction(dtype):
    """(h, p) with e^x = 2h(1 + p) and e^x − 1 = 2(h p + (h − ½)), for x clamped into the range."""
    pow2i, degree, low, top, ln2_hi, ln2_lo = _SPECS[dtype]
    c = [dtype(1.0 / math.factorial(n)) for n in range(1, degree + 1)]   # Taylor coefficients
    top_coefficient, lower_coefficients = c[-1], tuple(reversed(c[:-1]))
    low, top, ln2_hi, ln2_lo = dtype(low), dtype(top), dtype(ln2_hi), dtype(ln2_lo)
    log2e, half = dtype(1 / math.log(2)), dtype(0.5)
    int_type = np.int32 if dtype == np.float32 else np.int64

    @njit(inline="always", fastmath={"contract"})
    def reduce(x):
        y = min(max(x, low), top)
        k = np.floor(y * log2e + half)              # an integer, kept in the data's dtype:
        r = (y - k * ln2_hi) - k * ln2_lo           # an int64 k would promote float32 to float64
        p = top_coefficient                         # Horner: c_n, then p·r + c_(n−1), ...
        for a in lower_coefficients:
            p = p * r + a
        return pow2i(int_type(k) - 1), p * r        # e^r − 1 = Σ_(n≥1) c_n r^n
    return reduce


def _special_cases(dtype, below):
    """The result for x above the overflow point (+inf), below the kept range (``below``) and NaN."""
    _, _, low, top, _, _ = _SPECS[dtype]
    low, top, inf, below = dtype(low), dtype(top), dtype(np.inf), dtype(below)

    @njit(inline="always")
    def special(x, out):
        if x > top:
            out = inf
        if x < low:
            out = below
        if x != x:
            out = x
        return out
    return special


def expm1_for(dtype):
    """The jitted e^x − 1 for float32 or float64 scalars (compiled inline into callers)."""
    dtype = np.dtype(dtype).type
    if ("expm1", dtype) not in _made:
        reduce, special, two, half = _exp_reduction(dtype), _special_cases(dtype, -1), dtype(2), dtype(0.5)

        @njit(inline="always", fastmath={"contract"})
        def expm1(x):
            h, p = reduce(x)
            return special(x, two * (h * p + (h - half)))
        _made["expm1", dtype] = expm1
    return _made["expm1", dtype]


def exp_for(dtype):
    """The jitted e^x for float32 or float64 scalars (compiled inline into callers)."""
    dtype = np.dtype(dtype).type
    if ("exp", dtype) not in _made:
        reduce, special, two = _exp_reduction(dtype), _special_cases(dtype, 0), dtype(2)

        @njit(inline="always", fastmath={"contract"})
        def exp(x):
            h, p = reduce(x)
            return special(x, two * (h * p + h))
        _made["exp", dtype] = exp
    return _made["exp", dtype]


def log1p_for(dtype):
    """The jitted log(1 + u) for float32 or float64 scalars u in (√½ − 1, 1] (inline into callers)."""
    dtype = np.dtype(dtype).type
    if ("log1p", dtype) not in _made:
        terms = 4 if dtype == np.float32 else 9          # s², s⁴, ... kept in the atanh series
        top_coefficient, lower_coefficients = dtype(1 / (2 * terms + 1)), tuple(
            dtype(1 / (2 * n + 1)) for n in range(terms - 1, 0, -1))
        one, two, half, sqrt2, ln2, zero = (dtype(v) for v in (1, 2, 0.5, math.sqrt(2), math.log(2), 0))

        @njit(inline="always", fastmath={"contract"})
        def log1p(u):
            w = one + u
            big = w > sqrt2
            m = w * half if big else w                   # exact: a power of two
            s = (m - one) / (m + one)
            s2 = s * s
            q = top_coefficient                          # Horner in s²: 1/(2n+1), ..., 1/3
            for a in lower_coefficients:
                q = q * s2 + a
            atanh2 = two * s + two * s * (s2 * q)        # 2 atanh(s) = 2s (1 + s²/3 + ...)
            return (ln2 if big else zero) + (atanh2 + (u - (w - one)) / w)
        _made["log1p", dtype] = log1p
    return _made["log1p", dtype]
