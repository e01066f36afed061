"""Second-stage models: a family that declares ``needs_parent`` is built on another run's
trained model (``--parent RUN``), which it uses but neither trains nor saves. Checked with a
family defined here: a diagonal Gaussian fitted to a VAE run's codes, sampled through the
VAE's decoder."""
from dataclasses import dataclass

import numpy as np
import pytest

from tinyvae import cli, records
from tinyvae import functional as F
from tinyvae import models, nn
from tinyvae import train as T
from tinyvae.distributions import Normal
from tinyvae.models import registry
from tinyvae.models.base import Model
from tinyvae.tensor import tensor


@dataclass
class CodePriorOptions:
    pass


class CodePrior(Model):
    name = "test-code-prior"
    description = "N(m, e^s) over a parent run's posterior means"
    Options = CodePriorOptions
    eval_keys = ("test_log_p_code",)
    needs_parent = True

    def __init__(self, options, spec, rng=None, parent=None):
        super().__init__(options, spec, parent)
        dim = parent.latent_dim
        self.m = nn.Parameter(np.zeros(dim, np.float32))
        self.s = nn.Parameter(np.zeros(dim, np.float32))

    def _log_p(self, x):
        codes = tensor(self.parent.encode(x.numpy()))
        return F.sum(Normal(self.m, self.s, clamp=False).log_prob(codes), axis=1)

    def loss(self, batch, ctx):
        log_p = self._log_p(batch["x"])
        return {"loss": -F.mean(log_p), "log_p_code": log_p}

    def eval_batch(self, batch, ctx, iwae_k=0):
        return {"log_p_code": self._log_p(batch["x"])}, {}

    def sample(self, n, rng):
        z = self.m.numpy() + np.exp(0.5 * self.s.numpy()) * rng.standard_normal((n, len(self.m.numpy())))
        return self.parent.decode(z)


@pytest.fixture
def code_prior():
    registry.register(CodePrior)
    yield
    registry._FAMILIES.pop(CodePrior.name)


def test_a_second_stage_model_trains_on_its_parent_run_and_reloads_with_it(code_prior, tmp_path):
    small = dict(batch_size=32, train_size=96, test_size=40, seed=2)
    T.train("vae", {"latent_dim": 3}, T.RunOptions(epochs=1, **small), str(tmp_path / "vae"), progress=False,
            log=lambda *a: None)
    parent_state = (tmp_path / "vae" / "checkpoint.safetensors").read_bytes()
    history = T.train("test-code-prior", {}, T.RunOptions(epochs=2, parent=str(tmp_path / "vae"), **small),
                      str(tmp_path / "prior"), progress=False, log=lambda *a: None)
    assert history[1]["train_log_p_code"] > history[0]["train_log_p_code"]
    assert (tmp_path / "vae" / "checkpoint.safetensors").read_bytes() == parent_state     # the parent is untouched
    model, run = T.load_model(str(tmp_path / "prior"))
    assert run.parent == str(tmp_path / "vae") and set(model.state_dict()) == {"m", "s"}
    assert model.sample(4, np.random.default_rng(0)).shape == (4, 1, 28, 28)
    assert (tmp_path / "prior" / "samples.png").is_file()


def test_a_parent_is_required_by_second_stage_models_and_refused_by_others(code_prior, tmp_path):
    with pytest.raises(ValueError, match="second-stage model: give --parent RUN"):
        models.build("test-code-prior", {})
    vae = models.build("vae", {"latent_dim": 2})
    with pytest.raises(ValueError, match="model 'ae' takes no --parent"):
        models.build("ae", {}, parent=vae)


def test_a_second_stage_run_takes_its_parents_data_set_and_refuses_another(code_prior, tmp_path, capsys):
    """Codes of other images than the parent's would train a prior of nothing the parent
    makes: the data set defaults to the parent's, and another is refused before any folder."""
    small = ["--batch-size", "32", "--train-size", "96", "--test-size", "40", "--epochs", "1", "--no-progress"]
    assert cli.main(["train", "--model", "vae", "--latent-dim", "3", "--dataset", "fashion-mnist",
                     "--out", tmp_path / "vae", *small]) == 0
    assert cli.main(["train", "--model", "test-code-prior", "--parent", tmp_path / "vae", "--out", tmp_path / "prior",
                     *small]) == 0
    assert records.read_config(str(tmp_path / "prior" / "config.json"))["run"]["dataset"] == "fashion-mnist"
    capsys.readouterr()
    assert cli.main(["train", "--model", "test-code-prior", "--parent", tmp_path / "vae", "--dataset", "mnist",
                     "--out", tmp_path / "other", *small]) != 0
    err = capsys.readouterr().err.strip()
    assert err == (f"tinyvae: error: the parent run {tmp_path / 'vae'} was trained on fashion-mnist, so a model built on it "
                   f"needs --dataset fashion-mnist, not mnist")
    assert not (tmp_path / "other").exists()
