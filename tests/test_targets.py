"""The CPU kernels compiled for the other x86 targets of kernels/targets.py, so that a developer
on one processor sees another's failures before CI does: their tests run again in a process
compiling for each target this processor can run, and the nearest-code search's micro-kernel is
compiled for every target (running it is not needed) to check where its registers go."""
import json
import platform
import subprocess
import sys

import pytest

from kernels import targets

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="names x86 processors")

KERNEL_TESTS = ["tests/test_simd.py", "tests/test_vmath.py", "tests/test_kernels.py", "tests/test_gru.py", "-k", "not cuda"]
OTHER_RUNNABLE = [name for name in targets.TARGETS if name != targets.current() and targets.host_runs(name)]


def _in_target(name: str, argv: list, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], env=targets.target_env(name), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHER_RUNNABLE)
def test_kernel_tests_pass_compiled_for_another_target(name):
    """The SIMD, vector-math and kernel tests (CPU implementations) in a process compiling for
    ``name``: narrower vectors pack narrower panels, and without FMA the math rounds twice."""
    width = _in_target(name, ["-c", "from kernels import _simd, targets; print(_simd.VECTOR_BYTES, targets.current())"],
                       60)
    assert width.stdout.split() == [str(targets.TARGETS[name].vector_bytes), name], width.stderr
    done = _in_target(name, ["-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TESTS], 480)
    assert done.returncode == 0, f"compiled for {name}:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"


@pytest.mark.parametrize("name", list(targets.TARGETS))
def test_search_multiply_add_loop_keeps_its_accumulators_in_registers(name):
    """Compiled for every target, the loop over d holds the 6 × 2 tile's 12 accumulators, the
    panel's two code vectors and a broadcast row value in registers: no spill or reload in it,
    and 12 multiply-adds (or multiplies, without FMA) per step, in whatever unrolling."""
    code = ("import json, numpy as np; from kernels.targets import search_loop_report; "
            "print(json.dumps([search_loop_report(np.float32), search_loop_report(np.float64)]))")
    done = _in_target(name, ["-c", code], 240)
    assert done.returncode == 0, done.stderr[-2000:]
    for report in json.loads(done.stdout):
        print(report)                                            # the spill counts, with -s
        assert report["target"] == name
        assert report["loop_spills"] == 0, report
        assert report["loop_multiplies"] > 0 and report["loop_multiplies"] % 12 == 0, report


def test_loops_around_finds_the_innermost_busiest_loop_and_its_parents():
    asm = """
    f:
    .LBB0_1:
        movq (%rdi), %rax
    .LBB0_2:
        vfmadd231ps %ymm1, %ymm2, %ymm3
        vmovups %ymm3, 32(%rsp)
        jne .LBB0_2
        vfmadd231ps %ymm1, %ymm2, %ymm4
        vmovups 64(%rsp), %ymm5
        jne .LBB0_1
    .LBB0_3:
        vfmadd231ps %ymm1, %ymm2, %ymm3
        jne .LBB0_3
        ret
    """
    inner, outer = targets.loops_around(asm, "vfmadd")
    assert inner == ["vfmadd231ps %ymm1, %ymm2, %ymm3", "vmovups %ymm3, 32(%rsp)", "jne .LBB0_2"]
    assert len(outer) == 7 and outer[0] == "movq (%rdi), %rax"
    assert targets.vector_stack_accesses(inner) == 1 and targets.vector_stack_accesses(outer) == 2
    with pytest.raises(ValueError, match="no loop contains"):
        targets.loops_around(asm, "vdivps")


def test_target_env_names_the_processor_and_its_features():
    env = targets.target_env("avx2", {"PATH": "/bin"})
    assert env["PATH"] == "/bin" and env["NUMBA_CPU_NAME"] == "znver3"
    features = env["NUMBA_CPU_FEATURES"].split(",")
    assert "+avx2" in features and "+fma" in features and not any("avx512" in f for f in features)
    assert targets.target_env("sse2", {})["NUMBA_CPU_FEATURES"] == ""
