"""Kernel benchmark (issue: custom kernels). Prints JSON lines.

CPU (always): the FP32 multiply-add peak of this processor as the kernels are compiled
(measured: independent vector FMA chains in registers, one thread and all threads), the
reference for every "fraction of peak"; fused reparameterize+KL forward and backward vs
unfused NumPy and unfused PyTorch; the fused Adam step over the mlp VAE's parameters vs the same step in NumPy array
operations and torch.optim.Adam (its default and its fused CPU form); the Bernoulli pixel
loss (binary cross-entropy with logits) and its gradient vs NumPy and PyTorch;
im2col and col2im of the conv VAE's layers vs their NumPy references and PyTorch's
unfold/fold; nearest-codebook search vs faiss-cpu IndexFlatL2 (k=1), with what its
micro-kernel compiled to (spills and reloads, kernels/targets.py); and a search at N=2^20,
K=2^14, D=8 (an N×K float32 matrix would be 64 GiB) with its peak memory.
GPU (when CuPy and a device are present): device copy bandwidth; reparam+KL vs unfused
CuPy and PyTorch eager; search vs torch.cdist+argmin and the matmul form ‖e‖² − 2z·eᵀ +
argmin (CuPy and PyTorch, TF32 off), with the FP32 matrix-product rate measured in the same
run as the reference peak.

Ratios are peer time / our time (above 1: we are faster). Run: python bench/kernels.py
[--repeats N] [--skip-big] [--gpu-only] [--target avx512|avx2|sse2]; --target compiles the
kernels for that processor (an AVX2 build on an AVX-512 machine, say) and puts the peers on
the same instructions (bench/common.py, PEERS_ON_TARGET).
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

from common import (add_target_option, best_of_each, emit, machine, rerun_for_target,  # first: it keeps this
                    try_import_torch)                                                 # script from shadowing `kernels`

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from kernels import adam, bce_logits, im2col, reparam_kl, targets, vq  # noqa: E402
from kernels._simd import fma, lane, lane_count, splat  # noqa: E402


@njit(nogil=True)
def _fma_chains(x, steps):
    """12 independent chains a ← a·m + c of one vector each, all in registers: enough chains to
    cover the multiply-add's latency on two units, so the loop runs at the units' rate."""
    m, c = splat(x.dtype.type(0.999999)), splat(x.dtype.type(1e-7))
    a0, a1, a2, a3, a4, a5 = splat(x[0]), splat(x[1]), splat(x[2]), splat(x[3]), splat(x[4]), splat(x[5])
    a6, a7, a8, a9, a10, a11 = splat(x[6]), splat(x[7]), splat(x[8]), splat(x[9]), splat(x[10]), splat(x[11])
    for _ in range(steps):
        a0, a1, a2, a3 = fma(a0, m, c), fma(a1, m, c), fma(a2, m, c), fma(a3, m, c)
        a4, a5, a6, a7 = fma(a4, m, c), fma(a5, m, c), fma(a6, m, c), fma(a7, m, c)
        a8, a9, a10, a11 = fma(a8, m, c), fma(a9, m, c), fma(a10, m, c), fma(a11, m, c)
    return (lane(a0, 0) + lane(a1, 0) + lane(a2, 0) + lane(a3, 0) + lane(a4, 0) + lane(a5, 0) + lane(a6, 0)
            + lane(a7, 0) + lane(a8, 0) + lane(a9, 0) + lane(a10, 0) + lane(a11, 0))


def fma_peak(repeats) -> float:
    """Measured FP32 multiply-add rate (GFLOP/s) of one thread and of every thread of the
    search's pool, each running _fma_chains; returns the all-threads figure."""
    import numba
    x, steps = np.ones(12, np.float32), 2 * 10 ** 6
    flop = steps * 12 * lane_count(np.float32) * 2
    _fma_chains(x, 1)
    rate = {}
    for threads in sorted({1, numba.get_num_threads()}):
        pool = ThreadPoolExecutor(threads)
        seconds = best_of_each({"fma": lambda: list(pool.map(_fma_chains, [x] * threads, [steps] * threads))},
                               max(3, repeats // 4))["fma"]
        rate[threads] = threads * flop / seconds / 1e9
        pool.shutdown()
    one, every = rate[1], rate[max(rate)]
    emit(op="fp32_fma_peak", impl="12 vector FMA chains in registers", dtype="float32", device="cpu",
         machine=machine(), lanes=lane_count(np.float32), gflop_per_s_1_thread=one,
         threads=max(rate), gflop_per_s_all_threads=every,
         clock_ghz_if_2_fma_per_cycle=one / (2 * lane_count(np.float32) * 2))
    return every


def reparam_bytes(shape, itemsize, direction):
    n = shape[0] * shape[1]
    # forward: read μ, ℓ, ε, write z (+ one KL per row); backward: read g_z, μ, ℓ, ε (+ g_kl), write two
    return (4 * n + shape[0]) * itemsize if direction == "forward" else (6 * n + shape[0]) * itemsize


def unfused_numpy_forward(mu, lv, eps):
    z = mu + np.exp(0.5 * lv) * eps
    return z, (0.5 * (mu * mu + np.exp(lv) - 1 - lv)).sum(axis=1)


def unfused_numpy_backward(gz, gkl, mu, lv, eps):
    s = np.exp(0.5 * lv)
    return gz + gkl[:, None] * mu, gz * eps * 0.5 * s + gkl[:, None] * 0.5 * (np.exp(lv) - 1)


def torch_forward(torch):
    def f(mu, lv, eps):
        z = mu + torch.exp(0.5 * lv) * eps
        return z, (0.5 * (mu * mu + torch.exp(lv) - 1 - lv)).sum(dim=1)
    return f


def torch_backward(torch):
    def f(gz, gkl, mu, lv, eps):
        s = torch.exp(0.5 * lv)
        return gz + gkl[:, None] * mu, gz * eps * 0.5 * s + gkl[:, None] * 0.5 * (torch.exp(lv) - 1)
    return f


def cpu_reparam(torch, repeats):
    rng = np.random.default_rng(0)
    for shape in [(4096, 256), (65536, 64)]:
        mu, lv, eps, gz = (rng.standard_normal(shape).astype(np.float32) for _ in range(4))
        gkl = rng.standard_normal(shape[0]).astype(np.float32)
        ts = [torch.from_numpy(a) for a in (mu, lv, eps, gz, gkl)] if torch is not None else None
        for direction in ("forward", "backward"):
            if direction == "forward":
                fns = {"ours": lambda: reparam_kl.forward(mu, lv, eps, impl="cpu"),
                       "numpy": lambda: unfused_numpy_forward(mu, lv, eps)}
                if torch is not None:
                    fns["torch"] = lambda: torch_forward(torch)(*ts[:3])
            else:
                fns = {"ours": lambda: reparam_kl.backward(gz, gkl, mu, lv, eps, impl="cpu"),
                       "numpy": lambda: unfused_numpy_backward(gz, gkl, mu, lv, eps)}
                if torch is not None:
                    fns["torch"] = lambda: torch_backward(torch)(ts[3], ts[4], *ts[:3])
            best = best_of_each(fns, repeats)
            ours = best["ours"]
            nbytes = reparam_bytes(shape, 4, direction)
            rec = dict(op=f"reparam_kl_{direction}", impl="numba-cpu", shape=list(shape), dtype="float32",
                       device="cpu", machine=machine(), min_ms=ours * 1e3, gb_per_s=nbytes / ours / 1e9,
                       numpy_unfused_ms=best["numpy"] * 1e3, speedup_vs_numpy=best["numpy"] / ours)
            if torch is not None:
                rec.update(torch_unfused_ms=best["torch"] * 1e3, speedup_vs_torch=best["torch"] / ours)
            emit(**rec)


def cpu_bce(torch, repeats):
    """Bernoulli pixel loss of a batch of MNIST logits: [128, 784] (the mlp VAE's batch, one
    thread) and [1024, 784] (threaded)."""
    rng = np.random.default_rng(0)
    for shape in [(128, 784), (1024, 784)]:
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        t = (rng.random(shape) < 0.3).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        tx, tt, tg = (torch.from_numpy(a) for a in (x, t, g)) if torch is not None else (None,) * 3
        for direction in ("forward", "backward"):
            if direction == "forward":
                fns = {"ours": lambda: bce_logits.forward(x, t, impl="cpu"),
                       "numpy": lambda: bce_logits.forward_reference(x, t)}
                if torch is not None:
                    bce = torch.nn.functional.binary_cross_entropy_with_logits
                    fns["torch"] = lambda: bce(tx, tt, reduction="none")
            else:
                fns = {"ours": lambda: bce_logits.backward(g, x, t, impl="cpu"),
                       "numpy": lambda: bce_logits.backward_reference(g, x, t)}
                if torch is not None:
                    fns["torch"] = lambda: tg * (torch.sigmoid(tx) - tt)
            best = best_of_each(fns, repeats)
            n = shape[0] * shape[1]
            rec = dict(op=f"bce_logits_{direction}", impl="numba-cpu", shape=list(shape), dtype="float32",
                       device="cpu", machine=machine(), min_ms=best["ours"] * 1e3,
                       gb_per_s=(3 if direction == "forward" else 4) * 4 * n / best["ours"] / 1e9,
                       numpy_unfused_ms=best["numpy"] * 1e3, speedup_vs_numpy=best["numpy"] / best["ours"])
            if torch is not None:
                rec.update(torch_ms=best["torch"] * 1e3, speedup_vs_torch=best["torch"] / best["ours"])
            emit(**rec)


MLP_VAE_SHAPES = [(200, 784), (200,), (200, 200), (200,), (100, 200), (100,),      # encoder
                  (200, 50), (200,), (200, 200), (200,), (784, 200), (784,)]       # decoder


def cpu_adam(torch, repeats):
    """One optimizer step over the 425k parameters of the mlp VAE (12 arrays), float32."""
    rng = np.random.default_rng(0)
    arrays = [[rng.standard_normal(shape).astype(np.float32) for _ in range(3)] for shape in MLP_VAE_SHAPES]
    for _, _, v in arrays:
        np.abs(v, out=v)
    grads = [rng.standard_normal(shape).astype(np.float32) for shape in MLP_VAE_SHAPES]

    def ours(impl):
        def step():
            for (p, m, v), g in zip(arrays, grads):
                adam.step(p, g, m, v, t=10, lr=1e-3, impl=impl)
        return step
    fns = {"ours": ours("cpu"), "numpy": ours("reference")}
    if torch is not None:
        for name, options in (("torch", {}), ("torch_fused", {"fused": True})):
            params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p, _, _ in arrays]
            for p, g in zip(params, grads):
                p.grad = torch.from_numpy(g)
            try:
                fns[name] = torch.optim.Adam(params, lr=1e-3, **options).step
            except (RuntimeError, TypeError):      # a build without the fused CPU Adam
                pass
    best = best_of_each(fns, repeats)
    n = sum(int(np.prod(s)) for s in MLP_VAE_SHAPES)
    ms = best["ours"] * 1e3
    rec = dict(op="adam_step", impl="numba-cpu", shape=[n], arrays=len(MLP_VAE_SHAPES), dtype="float32",
               device="cpu", machine=machine(), min_ms=ms, gb_per_s=7 * 4 * n / best["ours"] / 1e9,
               numpy_unfused_ms=best["numpy"] * 1e3, speedup_vs_numpy=best["numpy"] / best["ours"])
    for name in ("torch", "torch_fused"):
        if name in best:
            rec.update({f"{name}_ms": best[name] * 1e3, f"speedup_vs_{name}": best[name] / best["ours"]})
    emit(**rec)


IM2COL_CASES = [  # the conv VAE's layers at batch 128: image [C, H, W, N], kernel 4, stride 2, padding 1
    ("encoder conv 1->32", (1, 28, 28, 128)), ("encoder conv 32->64", (32, 14, 14, 128)),
]


def cpu_im2col(torch, repeats):
    """im2col (forward of a conv) and col2im (its input gradient) vs the NumPy references and
    PyTorch's unfold/fold on the same numbers (NCHW, its layout)."""
    rng = np.random.default_rng(0)
    geometry = dict(stride=(2, 2), padding=(1, 1), dilation=(1, 1))
    for name, shape in IM2COL_CASES:
        image = rng.standard_normal(shape).astype(np.float32)
        win = im2col.im2col(image, (4, 4), **geometry)
        timg, twin = None, None
        if torch is not None:
            timg = torch.from_numpy(np.ascontiguousarray(image.transpose(3, 0, 1, 2)))             # [N, C, H, W]
            twin = torch.nn.functional.unfold(timg, 4, stride=2, padding=1).contiguous()
        for op in ("im2col", "col2im"):
            if op == "im2col":
                fns = {"ours": lambda: im2col.im2col(image, (4, 4), **geometry, impl="cpu"),
                       "numpy": lambda: im2col.im2col(image, (4, 4), **geometry, impl="reference")}
                if torch is not None:
                    fns["torch"] = lambda: torch.nn.functional.unfold(timg, 4, stride=2, padding=1)
            else:
                fns = {"ours": lambda: im2col.col2im(win, shape[1:3], **geometry, impl="cpu"),
                       "numpy": lambda: im2col.col2im(win, shape[1:3], **geometry, impl="reference")}
                if torch is not None:
                    fns["torch"] = lambda: torch.nn.functional.fold(twin, shape[1:3], 4, stride=2, padding=1)
            best = best_of_each(fns, repeats)
            rec = dict(op=op, layer=name, impl="numba-cpu", image=list(shape), window=list(win.shape), dtype="float32",
                       device="cpu", machine=machine(), min_ms=best["ours"] * 1e3,
                       gb_per_s=(image.nbytes + win.nbytes) / best["ours"] / 1e9, numpy_ms=best["numpy"] * 1e3,
                       speedup_vs_numpy=best["numpy"] / best["ours"])
            if torch is not None:
                rec.update(torch_ms=best["torch"] * 1e3, speedup_vs_torch=best["torch"] / best["ours"])
            emit(**rec)


def search_registers():
    """Where the search's micro-kernel keeps its registers as compiled here (both dtypes)."""
    for dtype in (np.float32, np.float64):
        emit(op="vq_nearest_registers", machine=machine(), **targets.search_loop_report(dtype))


def faiss_level(faiss) -> str:
    config = getattr(faiss, "SIMDConfig", None)           # dynamic-dispatch builds (faiss >= 1.12)
    return config.get_level_name() if config is not None else os.environ.get("FAISS_OPT_LEVEL", "default")


def cpu_search(repeats, skip_big, peak):
    try:
        import faiss
    except ImportError:
        faiss = None
    rng = np.random.default_rng(0)
    for n, k, d in [(16384, 512, 64), (65536, 1024, 64)]:
        z = rng.standard_normal((n, d)).astype(np.float32)
        codes = rng.standard_normal((k, d)).astype(np.float32)
        fns = {"ours": lambda: vq.nearest(z, codes, impl="cpu")}
        if faiss is not None:
            index = faiss.IndexFlatL2(d)
            index.add(codes)
            fns["faiss"] = lambda: index.search(z, 1)
        best = best_of_each(fns, repeats, warmup=2)
        ours = best["ours"]
        rec = dict(op="vq_nearest", impl="numba-cpu-simd", shape=[n, k, d], dtype="float32", device="cpu",
                   machine=machine(), min_ms=ours * 1e3, gflop_per_s=2 * n * k * d / ours / 1e9,
                   fraction_of_measured_fma_peak=2 * n * k * d / ours / 1e9 / peak)
        if faiss is not None:
            agree = float((index.search(z, 1)[1][:, 0] == vq.nearest(z, codes)[0]).mean())
            rec.update(faiss_ms=best["faiss"] * 1e3, speedup_vs_faiss=best["faiss"] / ours, index_agreement=agree,
                       faiss_simd=faiss_level(faiss))
        emit(**rec)
    if skip_big:
        return
    n, k, d = 2 ** 20, 2 ** 14, 8
    z = rng.standard_normal((n, d)).astype(np.float32)
    codes = rng.standard_normal((k, d)).astype(np.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    index, _ = vq.nearest(z, codes, impl="cpu")
    seconds = time.perf_counter() - t0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    emit(op="vq_nearest_big", impl="numba-cpu-simd", shape=[n, k, d], dtype="float32", device="cpu",
         machine=machine(), seconds=seconds, gflop_per_s=2 * n * k * d / seconds / 1e9,
         fraction_of_measured_fma_peak=2 * n * k * d / seconds / 1e9 / peak,
         dense_matrix_would_need_gib=n * k * 4 / 2**30, process_peak_rss_mib=rss_peak / 1024,
         peak_rss_growth_mib=(rss_peak - rss_before) / 1024, inputs_mib=(z.nbytes + codes.nbytes) / 2**20,
         spot_check_exact=bool((index[:256] == vq.nearest_reference(z[:256], codes)[0]).all()))


def gpu_best_ms(fn, repeats=30, warmup=5, calls=10):
    """Per-call time of ``calls`` back-to-back calls between two CUDA events (CuPy's current
    stream), minimum over ``repeats``. Back-to-back, as in a training loop, the host-side cost
    of a call overlaps with the previous call's GPU work instead of being timed as idle GPU;
    if the host is slower than the GPU, the time still shows it."""
    import cupy
    for _ in range(warmup):
        fn()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    best = float("inf")
    for _ in range(repeats):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, end) / calls)
    return best


def gpu(torch, repeats):
    import cupy
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    where = dict(device="cuda", gpu=name)
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    # copy bandwidth: bytes read + written by a device-to-device copy of 1 GiB
    src = cupy.ones(2 ** 28, cupy.float32)
    dst = cupy.empty_like(src)
    copy_ms = gpu_best_ms(lambda: dst.__setitem__(Ellipsis, src), repeats)
    copy_gbs = 2 * src.nbytes / copy_ms / 1e6
    emit(op="device_copy", shape=[2 ** 28], dtype="float32", min_ms=copy_ms, gb_per_s=copy_gbs, **where)
    src = dst = None         # free 2 GiB of device memory before the next measurements

    rng = cupy.random.default_rng(0)
    for shape in [(65536, 256), (2 ** 18, 64)]:        # 2^24 elements each
        mu, lv, eps, gz = (rng.standard_normal(shape, dtype=cupy.float32) for _ in range(4))
        gkl = rng.standard_normal(shape[0], dtype=cupy.float32)
        fwd = gpu_best_ms(lambda: reparam_kl.forward(mu, lv, eps), repeats)
        bwd = gpu_best_ms(lambda: reparam_kl.backward(gz, gkl, mu, lv, eps), repeats)
        nbytes = reparam_bytes(shape, 4, "forward") + reparam_bytes(shape, 4, "backward")
        unf = gpu_best_ms(lambda: (reparam_kl.forward_reference(mu, lv, eps),
                                   reparam_kl.backward_reference(gz, gkl, mu, lv, eps)), repeats)
        rec = dict(op="reparam_kl_forward+backward", impl="numba-cuda", shape=list(shape), dtype="float32",
                   forward_ms=fwd, backward_ms=bwd, gb_per_s=nbytes / (fwd + bwd) / 1e6,
                   fraction_of_copy_bandwidth=nbytes / (fwd + bwd) / 1e6 / copy_gbs,
                   cupy_unfused_ms=unf, speedup_vs_cupy=unf / (fwd + bwd), **where)
        if torch is not None:
            ts = [torch.as_tensor(a, device="cuda") for a in (mu, lv, eps, gz, gkl)]
            tf, tb = torch_forward(torch), torch_backward(torch)
            peer = gpu_best_ms(lambda: (tf(*ts[:3]), tb(ts[3], ts[4], *ts[:3])), repeats)
            rec.update(torch_eager_ms=peer, speedup_vs_torch=peer / (fwd + bwd))
        emit(**rec)

    sgemm_tflops = None
    if torch is not None:
        a = torch.randn(8192, 8192, device="cuda")
        ms = gpu_best_ms(lambda: a @ a, 5, 2, 3)
        sgemm_tflops = 2 * 8192 ** 3 / ms / 1e9
        emit(op="fp32_matmul_reference_peak", shape=[8192, 8192, 8192], dtype="float32", tf32=False, min_ms=ms,
             tflop_per_s=sgemm_tflops, **where)
    for n, k, d in [(65536, 1024, 64), (2 ** 20, 4096, 64), (2 ** 20, 16384, 64)]:
        z = rng.standard_normal((n, d), dtype=cupy.float32)
        codes = rng.standard_normal((k, d), dtype=cupy.float32)
        ours = gpu_best_ms(lambda: vq.nearest(z, codes), max(5, repeats // 3), warmup=2, calls=3)
        tflops = 2 * n * k * d / ours / 1e9
        rec = dict(op="vq_nearest", impl="numba-cuda", shape=[n, k, d], dtype="float32", min_ms=ours,
                   tflop_per_s=tflops, **where)
        if sgemm_tflops:
            rec["fraction_of_measured_fp32_matmul_peak"] = tflops / sgemm_tflops
        e_sq = (codes * codes).sum(axis=1)
        if n * k * 4 <= 2 ** 33:        # the peers build the N×K matrix: skip where it passes 8 GiB
            cp_ms = gpu_best_ms(lambda: cupy.argmin(e_sq[None, :] - 2 * z @ codes.T, axis=1), 5, 2, 3)
            rec.update(cupy_matmul_form_ms=cp_ms, speedup_vs_cupy_matmul_form=cp_ms / ours)
            if torch is not None:
                tz, tc = torch.as_tensor(z, device="cuda"), torch.as_tensor(codes, device="cuda")
                tsq = torch.as_tensor(e_sq, device="cuda")
                cd_ms = gpu_best_ms(lambda: torch.cdist(tz, tc).argmin(dim=1), 5, 2, 3)
                mm_ms = gpu_best_ms(lambda: (tsq[None, :] - 2 * tz @ tc.T).argmin(dim=1), 5, 2, 3)
                rec.update(torch_cdist_argmin_ms=cd_ms, speedup_vs_torch_cdist=cd_ms / ours,
                           torch_matmul_form_ms=mm_ms, speedup_vs_torch_matmul_form=mm_ms / ours)
        emit(**rec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-big", action="store_true", help="skip the N=2^20, K=2^14 CPU search")
    ap.add_argument("--gpu-only", action="store_true")
    add_target_option(ap)
    args = ap.parse_args()
    rerun_for_target(args.target)
    torch = try_import_torch(os.cpu_count())
    if not args.gpu_only:
        peak = fma_peak(args.repeats)
        cpu_reparam(torch, args.repeats)
        cpu_adam(torch, args.repeats)
        cpu_bce(torch, args.repeats)
        cpu_im2col(torch, args.repeats)
        search_registers()
        cpu_search(args.repeats, args.skip_big, peak)
    from tinyvae.backend import cuda_available
    if cuda_available():
        gpu(torch, args.repeats)
    else:
        emit(op="gpu_section", skipped="no CuPy with a CUDA device on this machine")


if __name__ == "__main__":
    main()
