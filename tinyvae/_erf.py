"""Vectorised erf for NumPy arrays, compiled once by Numba (exact, unlike polynomial fits)."""
import math

from numba import vectorize


@vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf_cpu(x):
    return math.erf(x)
