"""Optimizers against hand-computed updates (and PyTorch's trajectories when installed),
schedules, gradient clipping, and optimizer state round trips."""
import math

import numpy as np
import pytest

from tinyvae import nn, optim


def param(values):
    return nn.Parameter(np.array(values, np.float64))


def test_sgd_momentum_and_nesterov_by_hand():
    p = param([1.0])
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    grads = [2.0, -1.0]
    p.grad = np.array([grads[0]])
    opt.step()                           # g = 2 + 0.5·1 = 2.5; b = 2.5; p = 1 - 0.25
    assert p.data[0] == pytest.approx(0.75)
    p.grad = np.array([grads[1]])
    opt.step()                           # g = -1 + 0.375 = -0.625; b = 0.9·2.5 - 0.625 = 1.625
    assert p.data[0] == pytest.approx(0.75 - 0.1625)
    q = param([1.0])
    nest = optim.SGD([q], lr=0.1, momentum=0.5, nesterov=True)
    q.grad = np.array([1.0])
    nest.step()                          # b = 1; g = 1 + 0.5·1 = 1.5
    assert q.data[0] == pytest.approx(0.85)


def test_adam_first_two_steps_by_hand():
    p = param([1.0])
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.array([0.5])
    opt.step()                           # m̂ = g, v̂ = g²: step = lr·g/(|g| + ε)
    assert p.data[0] == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8))
    p.grad = np.array([-1.0])
    opt.step()
    m = 0.9 * 0.05 + 0.1 * -1.0
    v = 0.999 * 0.00025 + 0.001 * 1.0
    expected = p.data[0]
    step = 0.1 * (m / (1 - 0.9 ** 2)) / (math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    assert expected == pytest.approx(1 - 0.1 * 0.5 / (0.5 + 1e-8) - step)


def test_adamw_decouples_weight_decay():
    p, q = param([2.0]), param([2.0])
    p.grad = q.grad = np.array([0.0])
    optim.AdamW([p], lr=0.1, weight_decay=0.5).step()
    optim.Adam([q], lr=0.1, weight_decay=0.5).step()
    assert p.data[0] == pytest.approx(2.0 * (1 - 0.05))          # only the decay, no Adam move
    assert q.data[0] == pytest.approx(2.0 - 0.1, rel=1e-6)        # L2 goes through Adam: a full lr step


def test_optimizer_rejects_bad_options():
    with pytest.raises(TypeError, match=r"unknown options \['momentun'\]"):
        optim.SGD([param([1.0])], momentun=0.9)
    with pytest.raises(ValueError, match="lr must be positive"):
        optim.Adam([param([1.0])], lr=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.Adam([])


def test_optimizer_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((6, 3))

    def run(split):
        p = param(np.ones(3))
        opt = optim.Adam([p], lr=0.05)
        for i, g in enumerate(grads):
            if i == split:
                saved = (p.data.copy(), opt.state_dict())
                p = param(saved[0])
                opt = optim.Adam([p], lr=0.05)
                opt.load_state_dict(saved[1])
            p.grad = g
            opt.step()
        return p.data
    np.testing.assert_array_equal(run(None), run(3))


def test_adam_updates_a_non_contiguous_parameter_like_a_contiguous_one():
    rng = np.random.default_rng(0)
    data, grad = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    strided, flat = param(np.asfortranarray(data)), param(data.copy())
    opts = [optim.Adam([p], lr=0.1, weight_decay=0.1) for p in (strided, flat)]
    for _ in range(3):
        for p, opt in zip((strided, flat), opts):
            p.grad = grad.copy()
            opt.step()
    assert not strided.data.flags.c_contiguous
    np.testing.assert_array_equal(strided.data, flat.data)


def test_schedules():
    assert optim.StepDecay(2, 0.5)(5) == 0.25
    cos = optim.Cosine(10, min_factor=0.1)
    assert cos(0) == 1.0 and cos(10) == pytest.approx(0.1) and cos(20) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)
    warm = optim.LinearWarmup(4, optim.StepDecay(1, 0.5))
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 0.5]
    p = param([1.0])
    opt = optim.SGD([p], lr=0.2)
    sched = optim.Scheduler(opt, warm)
    assert opt.lr == pytest.approx(0.05)
    sched.step()
    assert opt.lr == pytest.approx(0.1)


def test_iwae_paper_schedule_stages():
    # Burda et al. 2016: stage i is 3^i epochs long at 10^(-i/7); stages start at epochs 0, 1, 4, 13, 40, ...
    steps_per_epoch = 3
    schedule = optim.IWAEStages(steps_per_epoch)
    first_epochs = [0, 1, 4, 13, 40, 121, 364, 1093]
    for stage, start in enumerate(first_epochs):
        assert schedule(start * steps_per_epoch) == pytest.approx(10 ** (-stage / 7))
        if start:
            assert schedule(start * steps_per_epoch - 1) == pytest.approx(10 ** (-(stage - 1) / 7))
    assert schedule(10 ** 7) == pytest.approx(0.1)      # after 3280 epochs it stays at the last stage


def test_clip_grad_norm_scales_and_reports_total():
    a, b = param([3.0]), param([4.0])
    a.grad, b.grad = np.array([3.0]), np.array([4.0])
    total = nn.utils.clip_grad_norm([a, b], 1.0)
    assert total == pytest.approx(5.0)
    assert math.hypot(a.grad[0], b.grad[0]) == pytest.approx(1.0, rel=1e-5)
    a.grad = np.array([np.inf])
    assert not math.isfinite(nn.utils.clip_grad_norm([a, b], 1.0))


@pytest.mark.parametrize("make, make_torch", [
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
     lambda t, ps: t.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (lambda ps: optim.Adam(ps, lr=0.01, weight_decay=1e-3), lambda t, ps: t.optim.Adam(ps, lr=0.01, weight_decay=1e-3)),
    (lambda ps: optim.AdamW(ps, lr=0.01), lambda t, ps: t.optim.AdamW(ps, lr=0.01)),
])
def test_optimizer_trajectories_match_pytorch(make, make_torch):
    torch = pytest.importorskip("torch", reason="PyTorch not installed: trajectory comparison skipped")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2))
    ours = param(w0)
    theirs = torch.tensor(w0, requires_grad=True)
    opt, topt = make([ours]), make_torch(torch, [theirs])
    for _ in range(20):
        g = rng.standard_normal((3, 2))
        ours.grad = g
        theirs.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
