"""Shim for the lent GPU machine only (bench/run_gpu.sh puts this folder on PYTHONPATH).

Its numba-cuda 0.30.4 still refers to ``numpy.row_stack``, which its NumPy 2.5 removed, so
every CUDA compile failed there with AttributeError. ``row_stack`` was an alias of vstack.
"""
import numpy

if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack
