"""Generated checks for every model in tests/model_catalog.py: a step lowers the loss, the
loss's gradients pass a float64 gradcheck, save → load gives the same outputs, evaluation
returns finite numbers under the documented keys, each declared capability has the right
shapes, and a run resumed after epoch 1 equals the uninterrupted run."""
import json

import numpy as np
import pytest

import tinyvae as tv
from tinyvae import checkpoint, data, models, optim
from tinyvae import train as T
from tinyvae.models.base import StepContext

from helpers import to_float64
from model_catalog import MODELS, PARENTS, TINY_IMAGES, build, family, ids, tiny_split

CASES = pytest.mark.parametrize("name, options", MODELS, ids=ids())


def batch_of(model, split, dtype=np.float32):
    """A batch as the trainer hands it: pixels as a Tensor of ``dtype``, token ids as they are."""
    if split.spec.kind == "tokens":
        return {"x": split.x, "y": split.y}
    x = split.x if model.inputs != "binary" else (split.x > 0.5).astype(np.float32)
    return {"x": tv.tensor(x.astype(dtype)), "y": split.y, **T.with_derived(model, split, 0).fields}


def loss_of(model, batch, seed=0, step=0):
    return model.loss(batch, StepContext(step=step, epoch=1, rng=np.random.default_rng(seed)))


def losses_of(model, terms) -> dict:
    """{group: its loss}: a family's one loss serves every group, or it gives one per group."""
    loss = terms["loss"]
    return dict(loss) if isinstance(loss, dict) else {group: loss for group in model.param_groups()}


def test_every_registered_model_is_in_the_catalog():
    assert sorted({family(name)[0] for name, _ in MODELS}) == models.names()


@CASES
def test_one_step_on_a_fixed_batch_lowers_the_loss(name, options):
    """Each group's loss, after one step of that group's optimizer on it alone."""
    model = build(name, options, 1)
    batch = batch_of(model, tiny_split(model.spec))
    for group, params in model.param_groups().items():
        before = losses_of(model, loss_of(model, batch))
        if group not in before:
            continue
        opt = optim.Adam(params, lr=1e-3)
        model.zero_grad()
        before[group].backward()
        opt.step()
        assert losses_of(model, loss_of(model, batch))[group].item() < before[group].item(), group


@CASES
def test_loss_gradients_match_finite_differences(name, options):
    """In eval mode, so state updates (EMA codebooks, running statistics) stay out of the
    finite differences; parameters behind a straight-through estimator get a gradient, which
    is not the loss's derivative and so is not compared with one."""
    model = to_float64(build(name, options, 2)).eval()
    batch = batch_of(model, tiny_split(model.spec, n=4), np.float64)
    loss_of(model, batch)                         # any first-batch initialisation happens here
    estimated = model.straight_through
    exact = {id(p) for n, p in model.named_parameters() if not n.startswith(estimated)}
    groups = model.param_groups()
    for group in losses_of(model, loss_of(model, batch, step=2)):
        params = [p for p in groups[group] if id(p) in exact]
        assert params or group == "model" and name == "vqgan", group     # all of vqgan's generator is estimated
        assert not params or tv.gradcheck(lambda *ps: losses_of(model, loss_of(model, batch, step=2))[group], params,
                            fast_mode=True), group
    model.zero_grad()
    sum(losses_of(model, loss_of(model, batch, step=2)).values()).backward()
    for n, p in model.named_parameters():
        if n.startswith(estimated):
            assert p.grad is not None and np.abs(p.grad).max() > 0, n


@CASES
def test_save_and_load_give_the_same_outputs(name, options, tmp_path):
    model = build(name, options, 3)
    checkpoint.save(tmp_path / "m.safetensors", {"model": model.state_dict(), "config": model.config()})
    state = checkpoint.load(tmp_path / "m.safetensors")
    again = models.build(state["config"]["name"], state["config"]["options"], model.spec, np.random.default_rng(9),
                         model.parent)
    again.load_state_dict(state["model"])
    batch = batch_of(model, tiny_split(model.spec))
    assert {g: v.item() for g, v in losses_of(again, loss_of(again, batch)).items()} == \
        {g: v.item() for g, v in losses_of(model, loss_of(model, batch)).items()}
    assert again.config() == model.config() and json.loads(json.dumps(model.config())) == model.config()


@CASES
def test_evaluation_has_the_documented_keys_and_finite_values(name, options):
    model = build(name, options, 4)
    result = T.evaluate(model, T.with_derived(model, tiny_split(model.spec), 0), np.random.default_rng(0), batch_size=5,
                        iwae_k=3 if model.can("log_weights") else 0)
    assert set(result) == set(model.eval_keys)
    assert all(np.all(np.isfinite(v)) for v in result.values())


@CASES
def test_declared_capabilities_have_the_right_shapes(name, options):
    model = build(name, options, 5)
    split, shape = tiny_split(model.spec, n=6), model.spec.shape
    tokens = model.spec.kind == "tokens"          # token ids, [N, T], where images are [N, *shape]
    latent = None
    if model.can("encode"):
        latent = model.encode(split.x)
        assert latent.shape[0] == 6 and latent.ndim == 2
    if model.can("decode"):
        assert model.decode(latent if latent is not None else np.zeros((6, 3))).shape == (6, *shape)
    if model.can("reconstruct"):
        assert model.reconstruct(split.x).shape == (6, *shape)
    if model.can("sample"):
        examples = model.sample(5, np.random.default_rng(0))
        top = len(model.spec.vocabulary) - 1 if tokens else 1
        assert examples.shape == (5, *shape) and examples.min() >= 0 and examples.max() <= top
    if model.can("classify"):
        guess = model.classify(split.x)
        assert guess.shape == (6,) and set(guess) <= set(range(TINY_IMAGES.classes))
    if model.can("sample_given"):
        assert model.sample_given(np.array([0, 3, 9]), np.random.default_rng(0)).shape == (3, *shape)
    if model.can("restyle"):
        assert model.restyle(split.x, np.arange(6)).shape == (6, *shape)
    if model.can("impute"):
        observed = np.random.default_rng(1).random(split.x.shape) < 0.5
        filled = model.impute(split.x, observed, np.random.default_rng(0))
        assert filled.shape == (6, *shape) and np.array_equal(filled.reshape(6, -1)[observed], split.x[observed])
    if model.can("log_weights"):
        with tv.no_grad():
            assert model.log_weights(batch_of(model, split)["x"], 4, np.random.default_rng(0)).shape == (4, 6)
    assert any(model.can(c) for c in models.CAPABILITIES)


@pytest.mark.slow
@CASES
def test_a_run_resumed_after_epoch_one_equals_the_uninterrupted_run(name, options, tmp_path):
    run = T.RunOptions(epochs=2, batch_size=32, train_size=96, test_size=40, seed=5,
                       dataset="moses" if "tokens" in models.get(family(name)[0]).data_kinds else "mnist")
    name, parent_name = family(name)
    if parent_name:
        T.train(parent_name, PARENTS[parent_name], T.RunOptions(epochs=1, batch_size=32, train_size=96, test_size=40),
                str(tmp_path / "parent"), progress=False, log=lambda *a: None)
        run.parent = str(tmp_path / "parent")
    whole = T.train(name, options, run, str(tmp_path / "whole"), progress=False, log=lambda *a: None)
    T.train(name, options, T.RunOptions(**{**run.__dict__, "epochs": 1}), str(tmp_path / "parts"), progress=False,
            log=lambda *a: None)
    resumed = T.resume(str(tmp_path / "parts"), {"epochs": 2}, progress=False, log=lambda *a: None)
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in whole]
    assert [{k: v for k, v in r.items() if k not in ("seconds", "time")} for r in resumed] == strip[1:]
