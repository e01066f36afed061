"""The explicit-SIMD operations of kernels/_simd.py, lane by lane, in both float dtypes, against
plain NumPy on the same values."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from kernels._simd import _target_has, first_minimum, fma, lane, lane_count, lane_indices, load, splat, where_first

DTYPES = [np.float32, np.float64]


@njit
def _lanes_of(v, out):
    for j in range(len(out)):
        out[j] = lane(v, j)


@njit
def _fma_load_splat(a, x, c, out):
    """a[1:1 + lanes]·x + c[:lanes], through an unaligned load, a splat and fma."""
    _lanes_of(fma(load(a, 1), splat(x), load(c, 0)), out)


@njit
def _where_first(a, b, x, y, out):
    _lanes_of(where_first(load(a, 0), load(b, 0), load(x, 0), load(y, 0)), out)


@njit
def _indices(start, like, out):
    _lanes_of(lane_indices(start, load(like, 0)), out)


@njit
def _first_minimum(values, start):
    return first_minimum(load(values, 0), lane_indices(start, load(values, 0)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lane_count_is_one_register_of_the_dtype(dtype):
    assert lane_count(dtype) * np.dtype(dtype).itemsize in (16, 32, 64)
    assert lane_count(np.zeros(3, dtype)) == lane_count(dtype)


def _product_and_its_rounding(dtype, n):
    """(a [n + 1], x, c [n]) with a[1 + j]·x inexact in ``dtype`` in every lane and
    c = −round(a[1 + j]·x): a multiply and an add give exactly 0 there, a fused multiply-add
    gives the product's rounding error, which is not 0. With p = half the mantissa,
    a_j = 1 + (j + 1)·2^-p and x = 1 + 2^-(m − 2) (m mantissa bits) make a_j·x carry the bits of
    (j + 1)·2^-(p + m − 2), below the last place of a number in [1, 2)."""
    m = np.finfo(dtype).nmant
    p = m // 2
    a = np.concatenate([[dtype(7.0)], 1 + (np.arange(n) + 1) * 2.0 ** -p]).astype(dtype)
    x = dtype(1 + 2.0 ** -(m - 2))
    return a, x, -(a[1:] * x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fma_load_splat_lane_by_lane(dtype):
    """Every lane: a·x + c rounded once where the target has FMA, twice where it has not."""
    n = lane_count(dtype)
    a, x, c = _product_and_its_rounding(dtype, n)
    out = np.empty(n, dtype)
    _fma_load_splat(a, x, c, out)
    rounded_twice = a[1:] * x + c
    np.testing.assert_array_equal(rounded_twice, 0)                   # the construction holds
    if not _target_has("fma"):                      # then fmuladd is a multiply and an add
        np.testing.assert_array_equal(out, rounded_twice)
        return
    exact = [Fraction(float(ai)) * Fraction(float(x)) + Fraction(float(ci)) for ai, ci in zip(a[1:], c)]
    assert all(e != 0 for e in exact)                                 # inexact products, every lane
    np.testing.assert_array_equal(out, np.array([float(e) for e in exact]).astype(dtype))  # exact: it fits


def test_lane_indices_count_up_from_start():
    for dtype in DTYPES:
        n = lane_count(dtype)
        out = np.empty(n, np.int32)
        _indices(7, np.zeros(n, dtype), out)
        np.testing.assert_array_equal(out, 7 + np.arange(n))


_value = st.sampled_from([-1.0, 0.0, 2.5, 2.5, np.inf, -np.inf, np.nan])


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_where_first_is_argmins_order(dtype, data):
    """x where a < b, or a is NaN and b is not (the first NaN wins, as in argmin), else y."""
    n = lane_count(dtype)
    a, b = (np.array(data.draw(st.lists(_value, min_size=n, max_size=n)), dtype) for _ in range(2))
    x, y = np.arange(n, dtype=dtype), -np.arange(1, n + 1, dtype=dtype)
    out = np.empty(n, dtype)
    _where_first(a, b, x, y, out)
    take = (a < b) | (np.isnan(a) & ~np.isnan(b))
    np.testing.assert_array_equal(out, np.where(take, x, y))


@pytest.mark.parametrize("dtype", DTYPES)
@given(data=st.data())
def test_first_minimum_matches_argmin(dtype, data):
    """(value, index) of the lane argmin picks: the first NaN, else the first smallest value."""
    n = lane_count(dtype)
    values = np.array(data.draw(st.lists(_value, min_size=n, max_size=n)), dtype)
    value, index = _first_minimum(values, 100)
    j = int(np.argmin(values))
    assert index == 100 + j
    np.testing.assert_array_equal(value, values[j])
