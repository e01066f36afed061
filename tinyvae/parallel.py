"""Synchronous data-parallel training: R processes ("ranks", started by ``mpiexec -n R``)
train one model, each on its share of every batch.

Every rank holds the whole model and the run's generator, in the same state. Each step, the
global batch of n examples (the single-process batch, drawn by every rank alike) is cut into
R contiguous shards, n_r = ⌊(r+1)n/R⌋ − ⌊rn/R⌋ rows each; rank r computes the mean loss L_r
of its rows, and since the batch's loss is L = Σ_r (n_r/n) L_r,

    ∇L = Σ_r (n_r/n) ∇L_r                         (one all-reduce of the scaled gradients)

so every rank takes the same optimizer step as one process would on the whole batch. The
noise a model draws for its rows is the single-process draw's rows (``ShardGenerator``), so
losses agree with a one-process run up to the order of float sums. What a step changes other
than through the optimizer (``Module.stepped_state``: BatchNorm statistics, EMA codebooks,
restarted codes) and the generator's state follow rank 0 after each step, as PyTorch's
DistributedDataParallel broadcasts buffers; batch statistics (BatchNorm's, an MMD's) are
each shard's. A checksum of every parameter compared across ranks at each epoch's end stops
a run whose ranks differ.

Collectives are MPI's (mpi4py), and NCCL's (``cupy.cuda.nccl``) for gradients on a GPU; each
waits at most ``TINYVAE_MPI_TIMEOUT`` seconds (default 600), so a rank that died or hangs
ends the others with one line (``ParallelError``) rather than a run that never returns.
Without ``mpiexec`` (or with one rank) ``world()`` is the one-process ``World``, whose
collectives do nothing.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import sys
import time
import zlib
from typing import Callable, Optional

import numpy as np

from . import backend

BUCKET_BYTES = 16 << 20          # gradients are flattened into buffers of at most this size
TIMEOUT_ENV, DEFAULT_TIMEOUT = "TINYVAE_MPI_TIMEOUT", 600.0
SIZE_ENVS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")       # set by MPICH's and Open MPI's mpiexec
RANK_ENVS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")
NO_MPI4PY = ("this command was started by mpiexec with {size} ranks, but mpi4py is not installed; "
             "install it with: pip install -e \".[mpi]\"")


class ParallelError(RuntimeError):
    """A collective failed or timed out: another rank died or hangs."""


class World:
    """One process: rank 0 of 1; every collective returns what it is given."""
    rank, size = 0, 1

    def __init__(self):
        self.comm_seconds = 0.0          # time spent in collectives (bench/scaling.py reads it)

    # ---- sharding ---------------------------------------------------------------------------

    def rows(self, n: int) -> slice:
        """This rank's rows of a batch of n: the r-th of R contiguous, near-equal shards."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def generator(self, rng: np.random.Generator, n: int):
        """The run's generator as this rank's shard of an n-row batch must draw from it."""
        return rng if self.size == 1 else ShardGenerator(rng, self.rows(n), n)

    # ---- reductions -------------------------------------------------------------------------

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum over ranks of a float64 vector."""
        values = np.ascontiguousarray(values, np.float64)
        if self.size > 1:
            self._timed(self._allreduce, values)
        return values

    def reduce_gradients(self, params: list, share: float) -> None:
        """Replace each parameter's gradient by Σ_r share_r ∇_r, summed in buckets of at most
        ``BUCKET_BYTES`` (one flat buffer per dtype, a few calls per step, not one per
        parameter). A count of the ranks that had a gradient rides in each bucket, so a
        parameter no rank reached keeps ``grad`` None, as in one process."""
        if self.size == 1:
            return
        for bucket in _buckets(params):
            xp = backend.array_module(bucket[0].data)
            flat = xp.empty(sum(p.data.size for p in bucket) + len(bucket), bucket[0].data.dtype)
            at = 0
            for i, p in enumerate(bucket):
                part = flat[at:at + p.data.size]
                part[...] = 0 if p.grad is None else p.grad.ravel() * share
                flat[-len(bucket) + i] = p.grad is not None
                at += p.data.size
            self._timed(self._allreduce, flat)
            at = 0
            for i, p in enumerate(bucket):
                p.grad = flat[at:at + p.data.size].reshape(p.data.shape) if flat[-len(bucket) + i] else None
                at += p.data.size

    def sync_state(self, model, rng: np.random.Generator) -> None:
        """Copy rank 0's generator state and ``model.stepped_state()`` to every rank."""
        if self.size == 1:
            return
        arrays = [a for _, a in model.stepped_state()]
        ours = (rng.bit_generator.state, [backend.to_device(a, "cpu") for a in arrays]) if self.rank == 0 else None
        state, copies = self._timed(self._bcast, ours)
        if self.rank:
            rng.bit_generator.state = state
            for a, copy in zip(arrays, copies):
                a[...] = backend.to_device(copy, backend.device_of(a))

    def replicas_differ(self, model, epoch: int) -> Optional[str]:
        """What differs if any rank's parameters or buffers are not rank 0's, else None."""
        if self.size == 1:
            return None
        checksum = 0
        for _, a in sorted(model.state_items(), key=lambda item: item[0]):
            checksum = zlib.crc32(np.ascontiguousarray(backend.to_device(a, "cpu")).tobytes(), checksum)
        sums = self._timed(self._allgather, checksum)
        apart = [r for r, c in enumerate(sums) if c != sums[0]]
        return None if not apart else (f"after epoch {epoch} the model on rank {apart[0]} differs from rank 0's "
                                       f"(checksums {sums[apart[0]]:#x} and {sums[0]:#x}): the ranks have diverged")

    def gather(self, arrays: list) -> list:
        """Every rank's list of picklable host values, concatenated in rank order (rank 0's first)."""
        if self.size == 1:
            return arrays
        return [a for part in self._timed(self._allgather, arrays) for a in part]

    def from_root(self, work: Callable):
        """``work()``'s result on rank 0, handed to every rank; an exception it raises is raised
        on every rank (the others learn that rank 0 refused, e.g. a run folder in use)."""
        if self.size == 1:
            return work()
        outcome = None
        if self.rank == 0:
            try:
                outcome = (True, work())
            except Exception as e:  # noqa: BLE001 — re-raised on every rank below
                outcome = (False, e)
        ok, value = self._timed(self._bcast, outcome)
        if not ok:
            raise value
        return value

    # ---- the primitives a communicator provides ------------------------------------------

    def _timed(self, collective, value):
        t0 = time.perf_counter()
        try:
            return collective(value)
        finally:
            self.comm_seconds += time.perf_counter() - t0

    def _allreduce(self, array) -> None:
        """Sum ``array`` over ranks, in place."""

    def _bcast(self, obj):
        return obj

    def _allgather(self, obj) -> list:
        return [obj]


class MPIWorld(World):
    """R ranks over MPI. Each collective is started non-blocking and polled against the
    deadline; MPI errors are returned (not fatal) so they become one ParallelError line.
    Arrays on a GPU are summed by NCCL once ``use_nccl`` has set it up."""

    def __init__(self, timeout: float):
        super().__init__()
        from mpi4py import MPI
        self.MPI, self.comm, self.nccl = MPI, MPI.COMM_WORLD, None
        self.comm.Set_errhandler(MPI.ERRORS_RETURN)
        self.rank, self.size, self.timeout = self.comm.Get_rank(), self.comm.Get_size(), timeout
        # MPICH's mpiexec -disable-auto-cleanup signals the survivors of a dead rank with SIGUSR1
        signal.signal(signal.SIGUSR1, lambda *_: exit_after(ParallelError(
            f"rank {self.rank} of {self.size}: another rank of this run died; stopping")))

    def use_nccl(self) -> None:
        """Sum arrays on the GPU with NCCL (its communicator bootstrapped over MPI)."""
        if self.nccl is None:
            from cupy.cuda import nccl
            uid = self._bcast(nccl.get_unique_id() if self.rank == 0 else None)
            self.nccl = (nccl, nccl.NcclCommunicator(self.size, uid, self.rank))

    def _late(self, what: str) -> ParallelError:
        return ParallelError(f"rank {self.rank} of {self.size}: {what} did not complete in {self.timeout:g} s "
                             f"(${TIMEOUT_ENV}); another rank has died or hangs")

    def _wait(self, request, what: str):
        """Poll ``request`` until done, spinning for the first millisecond, then napping."""
        start = time.perf_counter()
        while True:
            try:
                done, value = request.test()
            except self.MPI.Exception as e:
                raise ParallelError(f"rank {self.rank} of {self.size}: {what} failed, another rank has "
                                    f"probably died ({e.Get_error_string()})") from None
            if done:
                return value
            waited = time.perf_counter() - start
            if waited > self.timeout:
                raise self._late(what)
            if waited > 1e-3:
                time.sleep(2e-4)

    def _allreduce(self, array) -> None:
        if backend.device_of(array) == "cpu":
            self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM), "an all-reduce")
            return
        import cupy                    # on the device, in place, on the current stream: no host copy
        nccl, comm = self.nccl
        kinds = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream()
        comm.allReduce(array.data.ptr, array.data.ptr, array.size, kinds[array.dtype], nccl.NCCL_SUM, stream.ptr)
        done, start = stream.record(), time.perf_counter()
        while not done.done:
            if time.perf_counter() - start > self.timeout:
                comm.abort()
                raise self._late("an NCCL all-reduce")
            time.sleep(1e-4)

    # objects travel pickled, as bytes: their length first, then the bytes (mpi4py offers no
    # non-blocking broadcast or all-gather of Python objects)

    def _bcast(self, obj):
        data = np.frombuffer(bytearray(pickle.dumps(obj)), np.uint8) if self.rank == 0 else None
        size = np.array([0 if data is None else len(data)], np.int64)
        self._wait(self.comm.Ibcast(size, root=0), "a broadcast")
        data = np.empty(int(size[0]), np.uint8) if data is None else data
        self._wait(self.comm.Ibcast(data, root=0), "a broadcast")
        return obj if self.rank == 0 else pickle.loads(data.tobytes())

    def _allgather(self, obj) -> list:
        data = np.frombuffer(bytearray(pickle.dumps(obj)), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        self._wait(self.comm.Iallgather(np.array([len(data)], np.int64), sizes), "an all-gather")
        out = np.empty(int(sizes.sum()), np.uint8)
        self._wait(self.comm.Iallgatherv(data, [out, sizes]), "an all-gather")
        ends = np.cumsum(sizes)
        return [pickle.loads(out[end - size:end].tobytes()) for end, size in zip(ends, sizes)]

class ShardGenerator:
    """The run's generator as seen by one shard (rows ``rows`` of an n-row batch): a draw
    whose size has the shard's length on an axis is made with n there and cut to the
    shard's rows, so the shard gets exactly the numbers the one-process run gives those rows
    and every rank's generator advances alike. Other draws (no such axis) pass through.
    Every draw is i.i.d., so a shape that fools the rule (another axis of the same length)
    still gets correctly distributed numbers; only the match with one process is lost there.
    Attributes other than draws (``bit_generator``, ``permutation``, ...) are the generator's."""
    SIZE_AT = {"random": 0, "standard_normal": 0, "standard_exponential": 0, "standard_gamma": 1,
               "exponential": 1, "choice": 1, "integers": 2, "uniform": 2, "normal": 2, "logistic": 2,
               "gumbel": 2, "beta": 2, "gamma": 2, "binomial": 2}

    def __init__(self, rng: np.random.Generator, rows: slice, n: int):
        self._rng, self._rows, self._n = rng, rows, n

    def __getattr__(self, name: str):
        draw = getattr(self._rng, name)
        if name not in self.SIZE_AT:
            return draw
        at = self.SIZE_AT[name]

        def shard_draw(*args, **kwargs):
            args = list(args)
            size = kwargs.get("size", args[at] if len(args) > at else None)
            shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size or ())
            axis = next((i for i, length in enumerate(shape) if length == self._rows.stop - self._rows.start), None)
            if axis is None:
                return draw(*args, **kwargs)
            whole = (*shape[:axis], self._n, *shape[axis + 1:])
            if "size" in kwargs or len(args) <= at:
                kwargs["size"] = whole
            else:
                args[at] = whole
            cut = [slice(None)] * len(shape)
            cut[axis] = self._rows
            return draw(*args, **kwargs)[tuple(cut)]
        return shard_draw


def exit_after(error: ParallelError) -> None:
    """Say the one line and leave at once: MPI's finalisation would wait for the dead rank."""
    print(f"tinyvae: error: {error}", file=sys.stderr, flush=True)
    os._exit(1)


def _buckets(params: list) -> list:
    """Parameters grouped by dtype and device, cut into runs of at most BUCKET_BYTES."""
    kinds: dict = {}
    for p in params:
        kinds.setdefault((p.data.dtype, backend.device_of(p.data)), []).append(p)
    out = []
    for group in kinds.values():
        bucket, size = [], 0
        for p in group:
            if bucket and size + p.data.nbytes > BUCKET_BYTES:
                out.append(bucket)
                bucket, size = [], 0
            bucket.append(p)
            size += p.data.nbytes
        out.append(bucket)
    return out


_WORLD: Optional[World] = None


def launched_rank() -> int:
    """This process's rank as mpiexec numbered it (0 without mpiexec), known before MPI starts."""
    return max(int(os.environ.get(name, 0)) for name in RANK_ENVS)


def world(device: str = "cpu") -> World:
    """The world this process belongs to: ``MPIWorld`` when ``mpiexec`` started it with more
    than one rank (using NCCL from the first call with ``device='cuda'``), else the
    one-process ``World``."""
    global _WORLD
    if _WORLD is None:
        size = max(int(os.environ.get(name, 1)) for name in SIZE_ENVS)
        if size == 1:
            _WORLD = World()
        else:
            if importlib.util.find_spec("mpi4py") is None:
                raise ParallelError(NO_MPI4PY.format(size=size))
            _WORLD = MPIWorld(float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
    if device == "cuda" and isinstance(_WORLD, MPIWorld):
        _WORLD.use_nccl()
    return _WORLD
