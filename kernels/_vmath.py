"""expm1 that LLVM can vectorise, for the CPU kernels.

Numba compiles ``math.exp`` / ``math.expm1`` to one libm call per element, which cannot
use SIMD; NumPy's own exp is vectorised, so a fused Numba loop built on libm ran slower
than three unfused NumPy passes. This version is straight-line float64 code:

  e^x − 1 = 2^k (e^r − 1) + (2^k − 1),   k = round(x / ln 2),  r = x − k ln 2,  |r| ≤ ½ ln 2
          = 2 (h (e^r − 1) + (h − ½)),   h = 2^(k−1)   (so k = 1024, just below overflow, still fits)

with e^r − 1 from its Taylor series to r¹³ (error below 1e-17 relative on that range),
ln 2 split in two parts (Cody–Waite) so r is exact, and 2^k made by writing k + 1023 into
the exponent bits. For k = 0 the formula is exactly the series, so there is no
cancellation near x = 0. NaN stays NaN; above 709.78 the result is +inf, as e^x is.
"""
import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01      # ln 2 rounded so k·LN2_HI is exact for |k| < 2^20
_LN2_LO = 1.90821492927058770002e-10
_OVERFLOW = 709.782712893384               # ln(largest double)


@intrinsic
def pow2i(typingctx, k):
    """2^k as a float64 for an int64 k in [-1022, 1023], by setting the exponent bits."""
    if k != types.int64:
        return None

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        bits = builder.shl(builder.add(args[0], ir.Constant(i64, 1023)), ir.Constant(i64, 52))
        return builder.bitcast(bits, ir.DoubleType())
    return types.float64(types.int64), codegen


@njit(inline="always", fastmath={"contract"})
def expm1(x):
    """e^x − 1 for a float64 x."""
    y = min(max(x, -700.0), _OVERFLOW)    # e^-700 − 1 is −1 in float64; above the top, +inf
    k = math.floor(y * _LOG2E + 0.5)      # an int64 in Numba
    r = (y - k * _LN2_HI) - k * _LN2_LO
    p = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600 + r * (1.0 / 6227020800)))))))))))))
    h = pow2i(k - 1)
    out = 2.0 * (h * p + (h - 0.5))
    if x > _OVERFLOW:
        out = math.inf
    if x != x:
        out = x
    return out
