#!/usr/bin/env bash
# What a lent GPU machine runs (device tool): the GPU-only tests on the device, then the
# kernel benchmark. Logs go to $OUT (or ./gpu-out). Run from the repository root.
set -uo pipefail
out="${OUT:-gpu-out}"
mkdir -p "$out"
# gpu_env/sitecustomize.py: a NumPy 2.5 / numba-cuda 0.30 compatibility shim (see the file)
export PYTHONPATH="$PWD:$PWD/bench/gpu_env${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=ci
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import cupy, numba, numba_cuda, numpy; print('cupy', cupy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$out/env.txt"
timeout "${TEST_SECONDS:-300}" python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_kernels.py \
  tests/test_ops_catalog.py -k "cuda or cupy" 2>&1 | tee "$out/gpu_tests.txt" | tail -25
timeout "${BENCH_SECONDS:-240}" python3 bench/kernels.py --gpu-only --repeats 30 2>&1 | tee "$out/bench_kernels_gpu.jsonl"
