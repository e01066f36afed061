"""expm1 that LLVM can vectorise, for the CPU kernels, in float32 and float64.

Numba compiles ``math.exp`` / ``math.expm1`` to one libm call per element, which cannot
use SIMD; NumPy's own exp is vectorised, so a fused Numba loop built on libm ran slower
than three unfused NumPy passes. This version is straight-line code:

  e^x − 1 = 2^k (e^r − 1) + (2^k − 1),   k = round(x / ln 2),  r = x − k ln 2,  |r| ≤ ½ ln 2
          = 2 (h (e^r − 1) + (h − ½)),   h = 2^(k−1)   (so the k just below overflow still fits)

with e^r − 1 from its Taylor series (to r¹³ in float64, r⁷ in float32: below one unit in
the last place on that range), ln 2 split in two parts (Cody–Waite) so r is exact, and 2^k
made by writing k plus the exponent bias into the exponent bits. For k = 0 the formula is
exactly the series, so there is no cancellation near x = 0. NaN stays NaN; above the
overflow point the result is +inf, as e^x is.

``expm1_for(dtype)`` returns the version for a dtype. Its constants are NumPy scalars of
that dtype, frozen into the compiled code, so float32 data is computed in float32 (twice
the SIMD width) and never promoted.
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


def expm1_for(dtype):
    """The jitted e^x − 1 for float32 or float64 scalars (compiled inline into callers)."""
    dtype = np.dtype(dtype).type
    if dtype not in _made:
        pow2i, degree, low, top, ln2_hi, ln2_lo = _SPECS[dtype]
        c = [dtype(1.0 / math.factorial(n)) for n in range(1, degree + 1)]   # Taylor coefficients
        low, top, ln2_hi, ln2_lo = dtype(low), dtype(top), dtype(ln2_hi), dtype(ln2_lo)
        log2e, half, two, inf = dtype(1 / math.log(2)), dtype(0.5), dtype(2), dtype(np.inf)
        int_type = np.int32 if dtype == np.float32 else np.int64
        top_coefficient, lower_coefficients = c[-1], tuple(reversed(c[:-1]))

        @njit(inline="always", fastmath={"contract"})
        def expm1(x):
            y = min(max(x, low), top)
            k = np.floor(y * log2e + half)              # an integer, kept in the data's dtype:
            r = (y - k * ln2_hi) - k * ln2_lo           # an int64 k would promote float32 to float64
            p = top_coefficient                         # Horner: c_n, then p·r + c_(n−1), ...
            for a in lower_coefficients:
                p = p * r + a
            p = p * r                                   # e^r − 1 = Σ_(n≥1) c_n r^n
            h = pow2i(int_type(k) - 1)
            out = two * (h * p + (h - half))
            if x > top:
                out = inf
            if x != x:
                out = x
            return out
        _made[dtype] = expm1
    return _made[dtype]
