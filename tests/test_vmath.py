"""The vectorisable exp, expm1 and log1p of kernels/_vmath.py against NumPy's (float64,
rounded to the dtype): within 3 units in the last place over their documented ranges, and
the documented special values."""
import functools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from kernels import _vmath

DTYPES = [np.float32, np.float64]
LOW = {np.float32: -80.0, np.float64: -700.0}            # below this exp returns 0, expm1 −1


@functools.lru_cache(maxsize=None)
def compiled(name: str, dtype):
    """The inline function wrapped in a jitted scalar call, compiled once per (name, dtype)."""
    f = getattr(_vmath, f"{name}_for")(dtype)
    return njit(lambda v: f(v))


def assert_within_ulp(got, want, dtype, ulp=3):
    assert abs(np.float64(got) - want) <= ulp * np.spacing(abs(want).astype(dtype)) + np.finfo(dtype).tiny, \
        (got, want)


EXP_ARGUMENTS = st.one_of(st.floats(-800, 800), st.floats(-1e-6, 1e-6),
                          st.sampled_from([88.72, 88.73, -80.0, 709.78, 709.79, -700.0, 0.0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["exp", "expm1"])
@given(x=EXP_ARGUMENTS)
def test_exp_and_expm1_match_numpy(name, dtype, x):
    x = dtype(x)
    got = compiled(name, dtype)(x)
    with np.errstate(over="ignore"):
        want = getattr(np, name)(np.float64(x))
        overflows = not np.isfinite(want.astype(dtype))
    if overflows:
        assert got == np.inf
    elif x < LOW[dtype]:
        assert got == (0.0 if name == "exp" else -1.0)
    else:
        assert_within_ulp(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@given(u=st.one_of(st.floats(math.sqrt(0.5) - 1 + 1e-7, 1.0), st.floats(0, 1e-6),
                   st.sampled_from([0.0, 1.0, 0.4142135])))
def test_log1p_matches_numpy_on_its_range(dtype, u):
    u = dtype(u)
    assert_within_ulp(compiled("log1p", dtype)(u), np.log1p(np.float64(u)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype):
    exp, expm1, log1p = (compiled(name, dtype) for name in ("exp", "expm1", "log1p"))
    nan, inf = dtype(np.nan), dtype(np.inf)
    assert np.isnan(exp(nan)) and exp(inf) == inf and exp(-inf) == 0
    assert np.isnan(expm1(nan)) and expm1(inf) == inf and expm1(-inf) == -1
    assert np.isnan(log1p(nan)) and log1p(dtype(0)) == 0
