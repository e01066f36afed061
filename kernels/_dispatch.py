"""Choosing an implementation and moving arrays for CUDA launches."""
from __future__ import annotations

import numpy as np

IMPLS = ("reference", "cpu", "cuda")


def is_cupy(a) -> bool:
    return type(a).__module__.startswith("cupy")


def choose(impl, *arrays) -> str:
    """The implementation to run: ``impl`` if given, else 'cuda' for CuPy arrays, 'cpu' otherwise.
    Inputs must all be NumPy or all be CuPy."""
    kinds = {is_cupy(a) for a in arrays}
    if len(kinds) > 1:
        raise TypeError("kernel inputs mix NumPy and CuPy arrays; put them all on one device")
    if impl is None:
        return "cuda" if kinds == {True} else "cpu"
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "cpu" and kinds == {True}:
        raise TypeError("impl='cpu' needs NumPy arrays, got CuPy arrays")
    return impl


def array_module(a):
    if is_cupy(a):
        import cupy
        return cupy
    return np


class CudaLaunch:
    """Device buffers and stream for one Numba CUDA launch.

    CuPy inputs are used in place and outputs are CuPy arrays; the kernel runs on CuPy's
    current stream, so it is ordered after the work that produced its inputs without any
    synchronisation. (By default Numba synchronises on the stream named in every argument's
    __cuda_array_interface__, which drained the GPU queue at each launch; ``arg`` turns that
    off.) NumPy inputs are copied to the device and the outputs copied back: the path the
    CUDA simulator tests take.
    """

    def __init__(self, like):
        try:
            from numba import cuda
        except ImportError:
            raise RuntimeError("impl='cuda' needs the numba-cuda package: pip install 'tinyvae[cuda]'") from None
        self.cuda = cuda
        self.on_device = is_cupy(like)
        if self.on_device:
            import cupy
            self.stream = _external_stream(cuda, cupy.cuda.get_current_stream().ptr)
        else:
            self.stream = cuda.default_stream()

    def input(self, a):
        """A kernel argument for input array ``a``."""
        return self.arg(a) if self.on_device else self.cuda.to_device(np.ascontiguousarray(a), stream=self.stream)

    def arg(self, a):
        """A kernel argument for device array ``a`` (a CuPy array is wrapped without a sync)."""
        if self.on_device:
            return self.cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=a, sync=False)
        return a

    def empty(self, shape, dtype):
        if self.on_device:
            import cupy
            return cupy.empty(shape, dtype)
        return self.cuda.device_array(shape, dtype, stream=self.stream)

    def zeros(self, shape, dtype):
        if self.on_device:
            import cupy
            return cupy.zeros(shape, dtype)
        return self.cuda.to_device(np.zeros(shape, dtype), stream=self.stream)

    def output(self, a):
        return a if self.on_device else a.copy_to_host(stream=self.stream)


_streams: dict = {}


def _external_stream(cuda, ptr: int):
    """Numba's wrapper of CuPy's stream ``ptr``, made once per stream (it costs a few µs)."""
    if ptr not in _streams:
        _streams[ptr] = cuda.external_stream(ptr)
    return _streams[ptr]


def check_float(name: str, *arrays) -> None:
    for a in arrays:
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name}: expected float32 or float64 arrays, got {a.dtype}")
    if len({a.dtype for a in arrays}) > 1:
        raise TypeError(f"{name}: all inputs must share one dtype, got {sorted(str(a.dtype) for a in arrays)}")
