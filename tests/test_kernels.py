"""The custom kernels against their float64 references: every implementation, hypothesis-drawn
shapes and values. 'cuda' runs in the Numba CUDA simulator without a GPU (small sizes), and on
the device with CuPy arrays when one is present."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyvae as tv
from kernels import adam, bce_logits, im2col, reparam_kl, vq
from tinyvae import functional as F

from conftest import GPU, SIMULATED

IMPLS = ["cpu", "cuda"]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def run(fn, impl, *arrays, **kw):
    """Call a kernel; on a real GPU, pass CuPy arrays (the production path) and bring results back."""
    if impl == "cuda" and GPU:
        import cupy
        out = fn(*[cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in arrays], impl=impl, **kw)
        return tuple(cupy.asnumpy(o) for o in out)
    return fn(*arrays, impl=impl, **kw)


def run_one(fn, impl, *arrays, **kw):
    """``run`` for a kernel with one output."""
    if impl == "cuda" and GPU:
        import cupy
        return cupy.asnumpy(fn(*[cupy.asarray(a) for a in arrays], impl=impl, **kw))
    return fn(*arrays, impl=impl, **kw)


def small(draw_max):
    return st.integers(1, 6 if SIMULATED else draw_max)


@st.composite
def gaussian_rows(draw, dtype):
    b, d = draw(small(64)), draw(st.integers(1, 70 if not SIMULATED else 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mu = rng.standard_normal((b, d)) * 3
    logvar = rng.uniform(-30, 30, (b, d))          # the documented no-overflow range
    eps = rng.standard_normal((b, d))
    return [a.astype(dtype) for a in (mu, logvar, eps)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data(), per_element=st.booleans())
def test_reparam_kl_forward_matches_reference(impl, dtype, data, per_element):
    mu, lv, eps = data.draw(gaussian_rows(dtype))
    z, kl = run(reparam_kl.forward, impl, mu, lv, eps, per_element=per_element)
    z_ref, kl_ref = reparam_kl.forward_reference(*(a.astype(np.float64) for a in (mu, lv, eps)), per_element)
    assert z.dtype == dtype and kl.dtype == dtype and np.isfinite(kl).all()
    np.testing.assert_allclose(z, z_ref, **TOL[dtype])
    np.testing.assert_allclose(kl, kl_ref, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * lv.shape[1])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data(), per_element=st.booleans())
def test_reparam_kl_backward_matches_reference(impl, dtype, data, per_element):
    mu, lv, eps = data.draw(gaussian_rows(dtype))
    rng = np.random.default_rng(0)
    g_z = rng.standard_normal(mu.shape).astype(dtype)
    g_kl = rng.standard_normal(mu.shape if per_element else mu.shape[:1]).astype(dtype)
    g_mu, g_lv = run(reparam_kl.backward, impl, g_z, g_kl, mu, lv, eps)
    ref = reparam_kl.backward_reference(*(a.astype(np.float64) for a in (g_z, g_kl, mu, lv, eps)))
    np.testing.assert_allclose(g_mu, ref[0], **TOL[dtype])
    np.testing.assert_allclose(g_lv, ref[1], **TOL[dtype])


@pytest.mark.parametrize("impl", IMPLS)
def test_reparam_kl_row_sum_is_deterministic(impl):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal((5, 37)).astype(np.float32) for _ in range(3)]
    first = run(reparam_kl.forward, impl, *arrays)[1]
    for _ in range(2):
        np.testing.assert_array_equal(run(reparam_kl.forward, impl, *arrays)[1], first)


def test_cpu_kernels_compute_float32_in_float32():
    """No float64 anywhere in the compiled float32 loops: a promotion (an int64 in expm1 once
    widened the whole polynomial) halves the SIMD width and made the reparam forward 3x slower."""
    rng = np.random.default_rng(0)
    mu, lv, eps, g_z = (rng.standard_normal((4, 8)).astype(np.float32) for _ in range(4))
    reparam_kl.forward(mu, lv, eps, impl="cpu")
    reparam_kl.forward(mu, lv, eps, per_element=True, impl="cpu")
    reparam_kl.backward(g_z, g_z[:, 0].copy(), mu, lv, eps, impl="cpu")
    bce_logits.forward(mu, lv, impl="cpu")
    bce_logits.backward(g_z, mu, lv, impl="cpu")
    for kernels in (reparam_kl._cpu(np.float32), bce_logits._cpu(np.float32)):
        for serial, _parallel in kernels:
            for llvm_ir in serial.inspect_llvm().values():
                assert "fpext float" not in llvm_ir and " double " not in llvm_ir


def test_reparam_kl_rejects_bad_input():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"same \[B, D\] shape"):
        reparam_kl.forward(a, np.zeros((2, 4), np.float32), a)
    with pytest.raises(TypeError, match="share one dtype"):
        reparam_kl.forward(a, a.astype(np.float64), a)
    with pytest.raises(TypeError, match="float32 or float64"):
        reparam_kl.forward(a.astype(np.int32), a, a)
    with pytest.raises(ValueError, match="impl must be one of"):
        reparam_kl.forward(a, a, a, impl="gpu")


@st.composite
def logits_and_targets(draw, dtype):
    """Logits from the tails to ±0 and the overflow-prone ±1e4, targets in [0, 1] (not only 0/1)."""
    shape = draw(st.lists(st.integers(1, 5 if SIMULATED else 40), min_size=1, max_size=3)).copy()
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-6, 1.0, 10.0, 100.0, 1e4]))
    x = rng.standard_normal(shape) * scale
    x.flat[0] = draw(st.sampled_from([0.0, -0.0, 30.0, -30.0, 90.0, -90.0, 1e4, -1e4]))
    t = np.where(rng.random(shape) < 0.5, rng.random(shape), rng.random(shape) < 0.5)
    return x.astype(dtype), t.astype(dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_bce_logits_matches_reference(impl, dtype, data):
    x, t = data.draw(logits_and_targets(dtype))
    g = np.random.default_rng(0).standard_normal(x.shape).astype(dtype)
    loss = run_one(bce_logits.forward, impl, x, t)
    grad = run_one(bce_logits.backward, impl, g, x, t)
    x64, t64, g64 = (a.astype(np.float64) for a in (x, t, g))
    assert loss.dtype == grad.dtype == dtype and loss.shape == grad.shape == x.shape
    assert np.isfinite(loss).all() and (loss >= 0).all()
    # error relative to |x|: the loss is a difference of terms as large as the logit
    error = np.abs(loss - bce_logits.forward_reference(x64, t64)) / (1 + np.abs(x64))
    assert error.max() <= TOL[dtype]["atol"], error.max()
    np.testing.assert_allclose(grad, bce_logits.backward_reference(g64, x64, t64), **TOL[dtype])


def test_bce_logits_threaded_cpu_path_matches_reference():
    rng = np.random.default_rng(3)
    n = bce_logits.PARALLEL_MIN_ELEMENTS + 17
    x, t, g = rng.standard_normal(n) * 5, rng.random(n), rng.standard_normal(n)
    np.testing.assert_allclose(bce_logits.forward(x, t, impl="cpu"), bce_logits.forward_reference(x, t),
                               rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(bce_logits.backward(g, x, t, impl="cpu"), bce_logits.backward_reference(g, x, t),
                               rtol=1e-13, atol=1e-15)


def test_bce_logits_rejects_bad_input():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="share one shape"):
        bce_logits.forward(a, np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="share one dtype"):
        bce_logits.backward(a, a, a.astype(np.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        bce_logits.forward(a.astype(np.int64), a.astype(np.int64))


@given(shape=st.sampled_from([(3,), (2, 4), (2, 3, 5)]), per_element=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_reparameterize_kl_op_equals_composite_and_gradchecks(shape, per_element, seed):
    rng = np.random.default_rng(seed)
    mu, lv = (tv.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True) for _ in range(2))
    eps = tv.tensor(rng.standard_normal(shape), dtype=np.float64, requires_grad=True)
    z, kl = F.reparameterize_kl(mu, lv, eps, per_element)
    z_ref = mu + F.exp(0.5 * lv) * eps
    kl_ref = 0.5 * (mu * mu + F.exp(lv) - 1 - lv)
    kl_ref = kl_ref if per_element else F.sum(kl_ref, axis=-1)
    np.testing.assert_allclose(z.numpy(), z_ref.numpy(), rtol=1e-12)
    np.testing.assert_allclose(kl.numpy(), kl_ref.numpy(), rtol=1e-10, atol=1e-12)
    (F.sum(z * z) + F.sum(kl * kl)).backward()
    grads = [t.grad for t in (mu, lv, eps)]
    for t in (mu, lv, eps):
        t.grad = None
    (F.sum(z_ref * z_ref) + F.sum(kl_ref * kl_ref)).backward()
    for g, t in zip(grads, (mu, lv, eps)):
        np.testing.assert_allclose(g, t.grad, rtol=1e-10, atol=1e-12)
    assert tv.gradcheck(lambda m, l, e: F.reparameterize_kl(m, l, e, per_element), [mu, lv, eps], atol=1e-6)


# ---- nearest-codebook search -------------------------------------------------------------

def assert_nearest(z, codebook, index, sqdist):
    """The chosen code is a nearest one (exact float64 distances), and sqdist is its distance."""
    z64, e64 = z.astype(np.float64), codebook.astype(np.float64)
    ref_index, _ = vq.nearest_reference(z, codebook)
    all_d = ((z64[:, None] - e64[None]) ** 2).sum(-1)
    best = all_d.min(axis=1)
    chosen = all_d[np.arange(len(z)), index]
    scale = (z64 ** 2).sum(1) + (e64 ** 2).sum(1).max()
    tol = (1e-5 if z.dtype == np.float32 else 1e-12) * scale
    assert index.dtype == np.int64 and (sqdist >= 0).all()
    assert (chosen <= best + tol).all()
    clear = np.sort(all_d, axis=1)[:, 1] - best > 4 * tol if len(codebook) > 1 else np.ones(len(z), bool)
    np.testing.assert_array_equal(index[clear], ref_index[clear])   # where the winner is clear, exactly argmin's
    rtol = 1e-5 if z.dtype == np.float32 else 1e-12
    assert (np.abs(sqdist - chosen) <= rtol * chosen + tol).all()


@st.composite
def search_case(draw, impl):
    tiny = impl == "cuda" and SIMULATED                  # the simulator runs every thread in Python
    n = draw(st.integers(1, 40 if tiny else 300))
    k = draw(st.integers(1, 24 if tiny else 1100))
    # every new D compiles a new specialised CUDA kernel: draw D from a few values on a GPU
    d = draw(st.integers(1, 9) if tiny else st.sampled_from([1, 3, 8, 33, 64, 70]))
    scale = draw(st.sampled_from([1.0, 1e3]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.standard_normal((n, d)) * scale).astype(dtype), (rng.standard_normal((k, d)) * scale).astype(dtype)


@pytest.mark.parametrize("impl", IMPLS)
@given(data=st.data(), tile=st.sampled_from([None, 1, 5, 40]))   # 40 codes of D = 70 fit in 48 KB
def test_nearest_matches_reference(impl, data, tile):
    z, codebook = data.draw(search_case(impl))
    index, sqdist = run(vq.nearest, impl, z, codebook, tile_codes=tile)
    assert sqdist.dtype == z.dtype
    assert_nearest(z, codebook, index, sqdist)


@pytest.mark.parametrize("impl", IMPLS)
def test_nearest_exact_ties_go_to_the_lowest_index(impl):
    codebook = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], np.float32)
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.5, 0.5], [-1.0, 0.0]], np.float32)
    index, sqdist = run(vq.nearest, impl, z, codebook, **({"tile_codes": 2} if impl == "cuda" else {}))
    np.testing.assert_array_equal(index, [0, 1, 0, 0, 3])
    np.testing.assert_array_equal(sqdist, [0.0, 0.0, 1.0, 0.5, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_cpu_across_chunks_panels_and_row_blocks(dtype):
    """One panel per chunk (tile_codes=1), a last panel padded with copies of the last code,
    and 6-row blocks with 5 rows left over: the winners sit in late chunks, in the padded
    panel, and in duplicated codes, whose ties must go to the lowest index."""
    rng = np.random.default_rng(2)
    codebook = rng.standard_normal((70, 3)).astype(dtype)
    codebook[40] = codebook[3]                                    # the duplicate loses its ties
    z = np.concatenate([codebook[[69, 3, 40, 55, 17]], rng.standard_normal((36, 3))]).astype(dtype)  # 41 rows
    index, sqdist = vq.nearest(z, codebook, impl="cpu", tile_codes=1)
    assert_nearest(z, codebook, index, sqdist)
    np.testing.assert_array_equal(index[:5], [69, 3, 3, 55, 17])
    np.testing.assert_array_equal(sqdist[:5], 0)
    np.testing.assert_array_equal(index, vq.nearest(z, codebook, impl="cpu")[0])   # one chunk: same answer


def test_nearest_cpu_gives_the_same_answer_for_any_number_of_threads(monkeypatch):
    """Rows are shared among numba.get_num_threads() Python threads: the answer must not depend
    on how many there are, and the threads must really be used."""
    import numba
    pools = []
    make_pool = vq._thread_pool
    monkeypatch.setattr(vq, "_thread_pool", lambda workers: pools.append(workers) or make_pool(workers))
    rng = np.random.default_rng(3)
    z, codebook = rng.standard_normal((61, 4)).astype(np.float32), rng.standard_normal((53, 4)).astype(np.float32)
    before = numba.get_num_threads()
    answers = []
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            answers.append(vq.nearest(z, codebook, impl="cpu", tile_codes=1))
    finally:
        numba.set_num_threads(before)
    assert pools == ([numba.config.NUMBA_NUM_THREADS] if numba.config.NUMBA_NUM_THREADS > 1 else [])
    for index, sqdist in answers:
        assert_nearest(z, codebook, index, sqdist)
        np.testing.assert_array_equal(index, answers[0][0])
        np.testing.assert_array_equal(sqdist, answers[0][1])


def test_nearest_cpu_works_in_a_forked_child_after_the_parent_used_its_threads():
    import multiprocessing
    rng = np.random.default_rng(4)
    z, codebook = rng.standard_normal((40, 3)).astype(np.float32), rng.standard_normal((9, 3)).astype(np.float32)
    expected = vq.nearest(z, codebook, impl="cpu")[0]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(vq.nearest, (z, codebook), {"impl": "cpu"}).get(timeout=30)[0]
    np.testing.assert_array_equal(child, expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["nan code", "inf code", "nan row", "inf row", "huge code", "huge rows"])
def test_nearest_ranks_non_finite_and_overflowing_inputs_as_argmin_does(impl, case):
    """Where the scores ‖e‖² − 2 z·e stop being finite, the answer is still argmin's over the
    float64 distances: a NaN distance wins (the first one), and a float32 overflow of ‖e‖² or of
    z·e does not hide the nearest code."""
    rng = np.random.default_rng(5)
    z, codebook = rng.standard_normal((13, 5)).astype(np.float32), rng.standard_normal((40, 5)).astype(np.float32)
    if case == "nan code":
        codebook[17, 2] = np.nan
    elif case == "inf code":
        codebook[39] = np.inf
        z[2] = 0
    elif case == "nan row":
        z[3, 1] = np.nan
    elif case == "inf row":
        z[5, 0] = np.inf
    elif case == "huge code":                      # ‖e_7‖² overflows float32, and e_7 is z_4's nearest
        z[4] *= 1e20
        codebook[7], codebook[9] = z[4] * 1.01, -z[4]
    else:                                          # 2 z·e overflows float32, ‖e‖² does not
        z *= 1e20
        codebook *= 1e18
    with np.errstate(over="ignore", invalid="ignore"):
        expected = vq.nearest_reference(z, codebook)
    for tile in (None, 1) if impl == "cpu" else (7,):
        with np.errstate(over="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # the simulator's float32 overflows
            index, sqdist = run(vq.nearest, impl, z, codebook, tile_codes=tile)
        np.testing.assert_array_equal(index, expected[0])
        np.testing.assert_allclose(sqdist, expected[1], rtol=1e-6)       # NaN where expected is NaN


def test_nearest_rejects_bad_input():
    with pytest.raises(ValueError, match=r"z \[N, D\] and codebook \[K, D\]"):
        vq.nearest(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="empty"):
        vq.nearest(np.zeros((2, 3), np.float32), np.zeros((0, 3), np.float32))
    with pytest.raises(ValueError, match="dimension 0"):
        vq.nearest(np.zeros((2, 0), np.float32), np.zeros((4, 0), np.float32))


@pytest.mark.parametrize("impl", IMPLS)
@given(n=st.integers(1, 30), k=st.integers(1, 10), d=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_ema_update_matches_reference(impl, n, k, d, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)).astype(np.float32)
    index = rng.integers(0, k, n)
    counts, sums = run(vq.ema_update, impl, z, index, k)
    ref_counts, ref_sums = vq.ema_update_reference(z.astype(np.float64), index, k)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-5, atol=1e-5)


def test_ema_update_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\)"):
        vq.ema_update(np.zeros((2, 2), np.float32), np.array([0, 3]), 3)


# ---- im2col and col2im ---------------------------------------------------------------------

def naive_col2im(win, image_hw, stride, padding, dilation):
    """Entry by entry: win[i, j, c, oh, ow, :] is added at (oh·s − p + i·d, ow·s − p + j·d),
    p the padding before the first row or column."""
    kh, kw, c, ho, wo, n = win.shape
    image = np.zeros((c, *image_hw, n))
    (top, _), (left, _) = im2col.pads(padding)
    for i, j, ci, oh, ow in np.ndindex(kh, kw, c, ho, wo):
        y = oh * stride[0] - top + i * dilation[0]
        x = ow * stride[1] - left + j * dilation[1]
        if 0 <= y < image_hw[0] and 0 <= x < image_hw[1]:
            image[ci, y, x] += win[i, j, ci, oh, ow]
    return image


def naive_im2col(image, kernel, stride, padding, dilation, out_hw, pad_value):
    """Entry by entry: win[i, j, c, oh, ow, :] = image[c, oh·s − p + i·d, ow·s − p + j·d, :]."""
    c, h, w, n = image.shape
    win = np.full((*kernel, c, *out_hw, n), pad_value, np.float64)
    (top, _), (left, _) = im2col.pads(padding)
    for i, j, ci, oh, ow in np.ndindex(*kernel, c, *out_hw):
        y = oh * stride[0] - top + i * dilation[0]
        x = ow * stride[1] - left + j * dilation[1]
        if 0 <= y < h and 0 <= x < w:
            win[i, j, ci, oh, ow] = image[ci, y, x]
    return win


@st.composite
def col2im_case(draw):
    k, s, d = (tuple(draw(st.integers(lo, hi)) for _ in range(2)) for lo, hi in [(1, 4), (1, 3), (1, 2)])
    side = st.integers(0, 2)          # (before, after) per axis: the two sides may differ
    p = draw(st.one_of(st.tuples(side, side), st.tuples(st.tuples(side, side), st.tuples(side, side))))
    image_hw = tuple(draw(st.integers(max(1, dd * (kk - 1) + 1 - sum(pp)), 9))
                     for kk, pp, dd in zip(k, im2col.pads(p), d))
    out_hw = tuple(map(im2col.conv_out_size, image_hw, k, s, im2col.pads(p), d))
    c, n = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    win = np.random.default_rng(seed).standard_normal((*k, c, *out_hw, n))
    return win, image_hw, s, p, d


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=col2im_case(), pad_value=st.sampled_from([0.0, -np.inf]))
def test_im2col_matches_naive_gather(impl, dtype, case, pad_value):
    windows_like, image_hw, s, p, d = case        # the windows' shape fixes the geometry
    k, c, out_hw, n = windows_like.shape[:2], windows_like.shape[2], windows_like.shape[3:5], windows_like.shape[5]
    image = np.random.default_rng(1).standard_normal((c, *image_hw, n)).astype(dtype)
    (win,) = run(lambda a, impl: (im2col.im2col(a, k, s, p, d, pad_value, impl=impl),), impl, image)
    assert win.dtype == dtype and win.flags.c_contiguous
    np.testing.assert_array_equal(win, naive_im2col(image, k, s, p, d, out_hw, pad_value).astype(dtype))


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(case=col2im_case())
def test_col2im_matches_naive_scatter_and_the_reference_bit_for_bit(impl, dtype, case):
    win, image_hw, s, p, d = case
    win = win.astype(dtype)
    (image,) = run(lambda w, impl: (im2col.col2im(w, image_hw, s, p, d, impl=impl),), impl, win)
    assert image.dtype == dtype and image.shape == (win.shape[2], *image_hw, win.shape[5])
    np.testing.assert_allclose(image, naive_col2im(win.astype(np.float64), image_hw, s, p, d), **TOL[dtype])
    # every implementation adds each element's terms in the reference's (i, j) order
    np.testing.assert_array_equal(image, im2col.col2im(win, image_hw, s, p, d, impl="reference"))


def test_im2col_and_col2im_cpu_take_strided_and_broadcast_arrays():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 2, 3, 4, 4, 5))
    args = ((8, 8), (2, 2), (0, 0), (1, 1))
    for win in (base[:, :, :, :, :, ::-1], np.broadcast_to(base[:1, :1], base.shape)):
        np.testing.assert_array_equal(im2col.col2im(win, *args, impl="cpu"),
                                      im2col.col2im(np.ascontiguousarray(win), *args, impl="reference"))
    image = rng.standard_normal((5, 8, 8, 3)).transpose(3, 1, 2, 0)        # [C, H, W, N], strided
    np.testing.assert_array_equal(im2col.im2col(image, (3, 3), (1, 1), (1, 1), (1, 1), impl="cpu"),
                                  im2col.im2col(image, (3, 3), (1, 1), (1, 1), (1, 1), impl="reference"))


def test_im2col_and_col2im_reject_bad_input():
    with pytest.raises(ValueError, match=r"expected windows \[kh, kw, C, Ho, Wo, N\], got shape \(2, 2\)"):
        im2col.col2im(np.zeros((2, 2)), (3, 3), (1, 1), (0, 0), (1, 1))
    with pytest.raises(TypeError, match="expected float32 or float64"):
        im2col.col2im(np.zeros((1, 1, 1, 1, 1, 1), np.int32), (1, 1), (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"expected an image \[C, H, W, N\], got shape \(3, 3\)"):
        im2col.im2col(np.zeros((3, 3)), (2, 2), (1, 1), (0, 0), (1, 1))
    with pytest.raises(ValueError, match=r"image 2x2 is too small for kernel \(3, 3\)"):
        im2col.im2col(np.zeros((1, 2, 2, 1)), (3, 3), (1, 1), (0, 0), (1, 1))


# ---- fused Adam step -------------------------------------------------------------------------

def adam_textbook(p, g, m, v, t, lr, b1, b2, eps, decay, decoupled):
    """Kingma & Ba, Algorithm 1 (ε outside the square root, as PyTorch), in float64: the new
    (p, m, v), and for each a bound on the sum of the magnitudes of the terms it is made of.
    Rounding errors are relative to those terms, not to a result in which they cancel (the
    step can all but cancel p; a small v makes the step large and its error with it)."""
    p, g, m, v = (a.astype(np.float64) for a in (p, g, m, v))
    p_s, g_s = np.abs(p), np.abs(g)
    if decoupled:
        p, p_s = p * (1 - lr * decay), p_s * (1 + lr * decay)
    else:
        g, g_s = g + decay * p, g_s + decay * p_s
    m, m_s = b1 * m + (1 - b1) * g, b1 * np.abs(m) + (1 - b1) * g_s
    v, v_s = b2 * v + (1 - b2) * g ** 2, b2 * v + (1 - b2) * g_s ** 2
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    denominator = np.sqrt(v_hat) + eps
    with np.errstate(divide="ignore", invalid="ignore"):
        v_error = np.where(v > 0, v_s / v, 1.0)         # relative error of v, in units of roundoff
    step_s = lr * m_s / (1 - b1 ** t) / denominator * (1 + v_error)
    return (p - lr * m_hat / denominator, m, v), (p_s + step_s, m_s, v_s)


@st.composite
def adam_case(draw, dtype):
    shape = draw(st.sampled_from([(1,), (7,), (3, 5), (2, 3, 4), (300,)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p, g, m = (rng.standard_normal(shape).astype(dtype) for _ in range(3))
    v = np.abs(rng.standard_normal(shape)).astype(dtype) * draw(st.sampled_from([0.0, 1e-12, 1.0]))
    hyper = dict(t=draw(st.integers(1, 3000)), lr=draw(st.sampled_from([1e-3, 0.1])),
                 beta1=draw(st.sampled_from([0.0, 0.9])), beta2=draw(st.sampled_from([0.99, 0.999])),
                 eps=draw(st.sampled_from([1e-8, 1e-4])), weight_decay=draw(st.sampled_from([0.0, 0.01])),
                 decoupled=draw(st.booleans()))
    return [p, g, m, v], hyper


def run_adam(impl, arrays, hyper):
    """adam.step on copies of ``arrays`` (CuPy copies on a real GPU); the updated (p, m, v)."""
    if impl == "cuda" and GPU:
        import cupy
        p, g, m, v = (cupy.asarray(a) for a in arrays)
        adam.step(p, g, m, v, impl=impl, **hyper)
        return [cupy.asnumpy(a) for a in (p, m, v)]
    p, g, m, v = (a.copy() for a in arrays)
    adam.step(p, g, m, v, impl=impl, **hyper)
    return [p, m, v]


@pytest.mark.parametrize("impl", ["reference"] + IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_adam_step_matches_the_textbook_formula(impl, dtype, data):
    arrays, hyper = data.draw(adam_case(dtype))
    h = hyper
    expected, scales = adam_textbook(*arrays, h["t"], h["lr"], h["beta1"], h["beta2"], h["eps"],
                                     h["weight_decay"], h["decoupled"])
    roundoff = np.finfo(dtype).eps / 2
    for got, want, scale in zip(run_adam(impl, arrays, hyper), expected, scales):
        assert got.dtype == dtype
        error = np.abs(got.astype(np.float64) - want)
        assert (error <= 16 * roundoff * scale + np.finfo(dtype).tiny).all(), (error / (roundoff * scale)).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_adam_cpu_kernel_gives_the_reference_bits(dtype, data):
    arrays, hyper = data.draw(adam_case(dtype))
    for got, want in zip(run_adam("cpu", arrays, hyper), run_adam("reference", arrays, hyper)):
        np.testing.assert_array_equal(got, want)


def test_adam_step_rejects_bad_input():
    z = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"one shape, got \(3,\), \(2,\)"):
        adam.step(z, np.zeros(2, np.float32), z.copy(), z.copy(), t=1, lr=0.1)
    with pytest.raises(TypeError, match="share one dtype"):
        adam.step(z, np.zeros(3), z.copy(), z.copy(), t=1, lr=0.1)
    with pytest.raises(ValueError, match="t starts at 1, got 0"):
        adam.step(z, z.copy(), z.copy(), z.copy(), t=0, lr=0.1)
    strided = np.zeros((3, 4), np.float32).T
    with pytest.raises(ValueError, match="must be C-contiguous"):
        adam.step(strided, strided.copy(), strided.copy(), strided.copy(), t=1, lr=0.1, impl="cpu")


@pytest.mark.skipif(not GPU, reason="needs CuPy and a CUDA GPU")
def test_cupy_inputs_stay_on_the_device():
    import cupy
    rng = np.random.default_rng(0)
    mu, lv, eps = (cupy.asarray(rng.standard_normal((64, 32)).astype(np.float32)) for _ in range(3))
    z, kl = reparam_kl.forward(mu, lv, eps)
    assert isinstance(z, cupy.ndarray) and isinstance(kl, cupy.ndarray)
    index, sqdist = vq.nearest(mu, lv[:16])
    assert isinstance(index, cupy.ndarray) and index.dtype == np.int64
    image = im2col.col2im(cupy.ones((2, 2, 3, 4, 4, 5), np.float32), (8, 8), (2, 2), (0, 0), (1, 1))
    assert isinstance(image, cupy.ndarray) and float(image.sum()) == 2 * 2 * 3 * 4 * 4 * 5
    win = im2col.im2col(image, (2, 2), (2, 2), (0, 0), (1, 1))
    assert isinstance(win, cupy.ndarray) and win.shape == (2, 2, 3, 4, 4, 5)
