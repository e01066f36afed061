"""The x86 processors the CPU kernels are compiled and checked for, and what their compiled
code looks like.

Numba compiles for the processor it runs on, unless NUMBA_CPU_NAME and NUMBA_CPU_FEATURES
name another (read once, at import). The tests and benchmarks start a Python process with
``target_env(name)`` to compile the kernels for each target below; the process can also run
them where the host has every feature the target has (``host_runs``), and otherwise only
compile them (the assembly can still be read).

  avx512   AMD Zen 4/5: 64-byte vectors, 32 vector registers, FMA
  avx2     AMD Zen 3: 32-byte vectors, 16 vector registers, FMA
  sse2     generic x86-64: 16-byte vectors, 16 vector registers, no FMA
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

_ZEN3 = ("64bit,adx,aes,avx,avx2,bmi,bmi2,clflushopt,clwb,clzero,cmov,crc32,cx16,cx8,f16c,fma,fsgsbase,"
         "fxsr,invpcid,lzcnt,mmx,movbe,pclmul,popcnt,prfchw,rdpid,rdrnd,rdseed,sahf,sha,sse,sse2,sse3,"
         "sse4.1,sse4.2,sse4a,ssse3,vaes,vpclmulqdq,xsave,xsavec,xsaveopt,xsaves")
_ZEN4_EXTRA = "avx512bf16,avx512bitalg,avx512bw,avx512cd,avx512dq,avx512f,avx512ifma,avx512vbmi,avx512vbmi2," \
              "avx512vl,avx512vnni,avx512vpopcntdq,gfni"



class Target(NamedTuple):
    cpu: str                 # NUMBA_CPU_NAME
    features: str            # what it has (NUMBA_CPU_FEATURES, without the '+')
    vector_bytes: int        # kernels/_simd.py's vectors when compiled for it
    fma: bool


TARGETS = {
    "avx512": Target("znver4", f"{_ZEN3},{_ZEN4_EXTRA}", 64, True),
    "avx2": Target("znver3", _ZEN3, 32, True),
    "sse2": Target("generic", "", 16, False),
}


def current() -> str:
    """The target of this process's compiled kernels (the host's, unless NUMBA_CPU_* say)."""
    from ._simd import _target_has
    if _target_has("avx512f"):
        return "avx512"
    return "avx2" if _target_has("avx2") and _target_has("fma") else "sse2"


def target_env(name: str, base: dict | None = None) -> dict:
    """``base`` (default: this process's environment) with Numba compiling for target ``name``."""
    target = TARGETS[name]
    listed = ",".join("+" + f for f in target.features.split(",") if f)
    return dict(os.environ if base is None else base, NUMBA_CPU_NAME=target.cpu, NUMBA_CPU_FEATURES=listed)


def host_runs(name: str) -> bool:
    """Can this processor run code compiled for target ``name`` (has it every feature)?"""
    from numba.core.codegen import get_host_cpu_features
    host = {f[1:] for f in get_host_cpu_features().split(",") if f.startswith("+")}
    needed = {f for f in TARGETS[name].features.split(",") if f} - {"64bit"}
    return needed <= host


_VECTOR_REGISTER = re.compile(r"%[xyz]mm\d+")
_STACK = re.compile(r"\(%rsp\)|\(%rbp\)")


def loops_around(asm: str, mnemonic: str) -> list:
    """The instructions of the innermost loop with the most ``mnemonic`` instructions, then of
    each loop around it, outward (AT&T syntax, as Numba's ``inspect_asm`` gives). A loop runs
    from the label a backward branch returns to, to that branch."""
    lines = [line.strip() for line in asm.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    labels = {line[:-1]: i for i, line in enumerate(lines) if re.fullmatch(r"\.LBB\w+:", line)}
    spans = []
    for i, line in enumerate(lines):
        jump = re.fullmatch(r"j\w+\s+(\.LBB\w+)", line)
        if jump and labels.get(jump.group(1), i) < i:
            spans.append((labels[jump.group(1)] + 1, i + 1))

    def body(span):
        return [b for b in lines[span[0]:span[1]] if not b.startswith(".")]

    def count(span):
        return sum(b.startswith(mnemonic) for b in body(span))

    inner = [a for a in spans if count(a) and not any(b != a and a[0] <= b[0] and b[1] <= a[1] and count(b)
                                                      for b in spans)]
    if not inner:
        raise ValueError(f"no loop contains {mnemonic}")
    first = max(inner, key=count)
    outward = sorted((a for a in spans if a[0] <= first[0] and first[1] <= a[1]), key=lambda a: a[1] - a[0])
    return [body(a) for a in outward]


def vector_stack_accesses(instructions: list) -> int:
    """Instructions that move a vector register to or from the stack: spills and reloads."""
    return sum(1 for b in instructions if _STACK.search(b) and _VECTOR_REGISTER.search(b))


def search_loop_report(dtype) -> dict:
    """What the VQ search's micro-kernel compiles to for this process's target and ``dtype``:
    the instructions of its multiply-add loop (over d) and how many are multiply-adds (or
    multiplies, without FMA); and how many move a vector register to or from the stack
    (spills and reloads) in that loop, in the loop over panels around it (where the running
    minima live), and in the whole kernel."""
    import numpy as np
    from numba import from_dtype, types

    from . import vq
    scalar = from_dtype(np.dtype(dtype))
    rows, vector = types.Array(scalar, 2, "C"), types.Array(scalar, 1, "C")
    signature = (rows, vector, vector, types.int64, rows, types.Array(types.int64, 1, "C"), vector, vector)
    vq._search_blocks.compile(signature)
    asm = vq._search_blocks.inspect_asm(signature)
    multiply = "vfmadd" if TARGETS[current()].fma else "mul"
    loop, panel_loop = loops_around(asm, multiply)[:2]
    return dict(target=current(), dtype=np.dtype(dtype).name, tile_rows=vq.ROWS, tile_vectors=2,
                loop_instructions=len(loop), loop_multiplies=sum(b.startswith(multiply) for b in loop),
                loop_spills=vector_stack_accesses(loop), panel_loop_spills=vector_stack_accesses(panel_loop),
                kernel_spills=vector_stack_accesses(asm.splitlines()))
