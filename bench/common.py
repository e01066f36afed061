"""Shared benchmark plumbing: best-of-N timing, JSON lines, machine description, optional peers."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Dict, Optional

# bench/kernels.py shares its name with the ``kernels`` package it measures. Every benchmark
# imports this module first; taking this folder off the import path here makes ``import
# kernels`` (directly, or inside tinyvae) find the package rather than that script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def best_of(fn: Callable[[], object], repeats: int = 20, warmup: int = 3, sync: Optional[Callable] = None) -> float:
    """Minimum wall time in seconds over ``repeats`` calls, after ``warmup`` untimed calls."""
    return best_of_each({"fn": fn}, repeats, warmup, sync)["fn"]


def best_of_each(fns: Dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3,
                 sync: Optional[Callable] = None, rounds: int = 4) -> Dict[str, float]:
    """Minimum wall time in seconds of each function over ``repeats`` calls. The functions take
    turns in ``rounds`` runs of consecutive calls, so a busy spell on a shared machine slows every
    contender rather than whichever happened to be running (timing one after the other moved
    ratios by 30%). Runs of calls, not single alternating calls: the thread pools of NumPy's
    BLAS and of PyTorch keep spinning for a while after each call and slowed the other's next
    call by up to 2x."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if sync:
        sync()
    best = {name: float("inf") for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            for _ in range(repeats // rounds + (r < repeats % rounds)):
                t0 = time.perf_counter()
                fn()
                if sync:
                    sync()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


# What makes each peer run the instructions of a kernels/targets.py target: NumPy's and faiss's
# OpenBLAS, faiss's own kernels (FAISS_SIMD_LEVEL in its dynamic-dispatch builds,
# FAISS_OPT_LEVEL in older ones), PyTorch's own kernels and its MKL.
PEERS_ON_TARGET = {
    "avx512": dict(OPENBLAS_CORETYPE="SkylakeX", FAISS_SIMD_LEVEL="AVX512", FAISS_OPT_LEVEL="avx512",
                   ATEN_CPU_CAPABILITY="avx512", MKL_ENABLE_INSTRUCTIONS="AVX512"),
    "avx2": dict(OPENBLAS_CORETYPE="Haswell", FAISS_SIMD_LEVEL="AVX2", FAISS_OPT_LEVEL="avx2",
                 ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2"),
    "sse2": dict(OPENBLAS_CORETYPE="Prescott", FAISS_SIMD_LEVEL="NONE", FAISS_OPT_LEVEL="generic",
                 ATEN_CPU_CAPABILITY="default", MKL_ENABLE_INSTRUCTIONS="SSE4_2"),
}


def add_target_option(parser) -> None:
    from kernels.targets import TARGETS
    parser.add_argument("--target", choices=list(TARGETS),
                        help="compile tinyvae's kernels for this x86 target (kernels/targets.py), and run the "
                             "peers on the same instructions (PEERS_ON_TARGET), in a new process")


def rerun_for_target(name) -> None:
    """With ``--target NAME``, run this script again in a process that compiles for that target
    (the peers on the same instructions) and exit with its status; else return."""
    from kernels.targets import target_env
    if name is None or os.environ.get("TINYVAE_BENCH_TARGET") == name:
        return
    env = dict(target_env(name), TINYVAE_BENCH_TARGET=name, **PEERS_ON_TARGET[name])
    sys.exit(subprocess.call([sys.executable, *sys.argv], env=env))


def machine() -> str:
    """Processor, cores, Python, the target tinyvae's kernels were compiled for (its SIMD
    width), and the BLAS kernels NumPy runs (OPENBLAS_CORETYPE can force older ones than the
    processor supports, which changes every matrix-product figure)."""
    from kernels._simd import VECTOR_BYTES
    from kernels.targets import current
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"kernels compiled for {current()} (SIMD {VECTOR_BYTES * 8}-bit), NumPy BLAS: {numpy_blas_kernels()}")


def numpy_blas_kernels() -> str:
    """'openblas 0.3.31 SkylakeX', say: the BLAS NumPy calls, as threadpoolctl (optional) sees
    it. A NumPy wheel bundles its own (in ``numpy.libs``, or ``numpy/.dylibs`` on macOS); other
    builds use the one BLAS the process has loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (pip install threadpoolctl)"
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    bundled = [lib for lib in blas if any(f in lib["filepath"] for f in ("numpy.libs", "numpy/.dylibs"))]
    libs = bundled or blas
    if len(libs) != 1:
        return "unknown"
    return f"{libs[0]['internal_api']} {libs[0]['version']} {libs[0].get('architecture') or ''}".strip()


def emit(**record) -> None:
    """Print one JSON line; ``ratio`` fields are ours / peer's time (lower is better for us)."""
    print(json.dumps(record), flush=True)


def model_step(model, x) -> Callable[[], None]:
    """One training step of a tinyvae model on the batch ``x`` (NumPy): its loss, backward and
    an Adam step at 1e-3, as the trainer takes it."""
    import numpy as np
    import tinyvae as tv
    from tinyvae import optim
    from tinyvae.models.base import StepContext
    opt = optim.Adam(model.parameters(), lr=1e-3)
    tokens = np.issubdtype(x.dtype, np.integer)                 # token ids stay NumPy, as batch_dicts hands them
    batch, rng = {"x": x if tokens else tv.tensor(x), "y": np.zeros(len(x), np.int64)}, np.random.default_rng(0)

    def step():
        opt.zero_grad()
        model.loss(batch, StepContext(step=0, epoch=1, rng=rng))["loss"].backward()
        opt.step()
    return step


def race_pytorch_twin(ours: Callable[[], None], make_twin: Callable, repeats: int, warmup: int = 2) -> dict:
    """Our step against its PyTorch twin (``make_twin(torch)``, when PyTorch is installed), in
    turns on the same threads: {"seconds": ours, and "peer", "peer_seconds", "ratio"}."""
    torch = try_import_torch(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    fns = {"tinyvae": ours}
    if torch is not None:
        fns["pytorch"] = make_twin(torch)
    best = best_of_each(fns, repeats=repeats, warmup=warmup)
    out = {"seconds": best["tinyvae"]}
    if "pytorch" in best:
        out.update(peer="pytorch " + torch.__version__, peer_seconds=best["pytorch"], ratio=best["tinyvae"] / best["pytorch"])
    return out


def try_import_torch(threads: int):
    """PyTorch on the CPU with the same thread count as NumPy, or None if not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch
