"""The VAE with categorical latents and the Gumbel-softmax relaxation (textbook 21.6.1; Jang
et al. 2017; Maddison et al. 2017): V categorical variables of C classes each, q(z|x) =
Π_v Cat(z_v; softmax(logits_v(x))), the uniform prior p(z_v) = 1/C, Bernoulli pixels:

  ELBO(x) = E_q[log p(x|z)] − Σ_v KL(q(z_v|x) ‖ U(C)),   KL = Σ_c q_vc (log q_vc + log C)

A discrete z has no reparameterisation gradient, so training samples the relaxation
y_v = softmax((log q_v + g_v) / τ), g ~ Gumbel(0, 1), and decodes y in place of the one-hot z;
the temperature falls as τ = max(τ_min, τ₀·exp(−r·t)), t the step rounded down to a multiple
of --anneal-every. ``--estimator straight-through`` decodes the one-hot argmax of y and
passes y's gradient back (ST Gumbel-softmax). The relaxation is for training only:
``test_elbo`` and ``test_nll_iwae`` decode exact one-hot draws from q.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from .. import functional as F
from ..autograd import no_grad
from ..distributions import Bernoulli, Categorical, UniformCategorical, kl
from ..options import option
from ..tensor import Tensor
from . import nets
from .base import Model, StepContext
from .registry import register


@dataclass
class TemperatureOptions:
    """The Gumbel-softmax temperature schedule (shared with ``dvae``)."""
    tau: float = option(1.0, "initial temperature τ₀ of the relaxation", minimum=1e-3)
    tau_min: float = option(0.5, "lowest temperature τ_min", minimum=1e-3)
    anneal_rate: float = option(3e-5, "r in τ = max(τ_min, τ₀·exp(−r·t))", minimum=0.0)
    anneal_every: int = option(1000, "update τ every this many steps", minimum=1)
    estimator: str = option("relaxed", "relaxed (decode the Gumbel-softmax sample) or straight-through "
                            "(decode its one-hot argmax, pass its gradient)", choices=("relaxed", "straight-through"))


def temperature(options: TemperatureOptions, step: int) -> float:
    """τ = max(τ_min, τ₀·exp(−r·t)), t the step rounded down to a multiple of anneal_every."""
    o = options
    return max(o.tau_min, o.tau * math.exp(-o.anneal_rate * (step // o.anneal_every * o.anneal_every)))


@dataclass
class GumbelVAEOptions(TemperatureOptions):
    arch: str = option("mlp", "network: mlp (784-200-200 tanh) or conv (two stride-2 convolutions)",
                       choices=nets.ARCHS)
    variables: int = option(20, "categorical latent variables V", minimum=1)
    classes: int = option(10, "classes C of each variable", minimum=2)


@register
class GumbelVAE(Model):
    name = "gumbel-vae"
    description = "VAE with 20x10 categorical latents, Gumbel-softmax relaxation (or straight-through), uniform prior"
    section = "21.6.1"
    Options = GumbelVAEOptions
    eval_keys = ("test_elbo", "test_recon", "test_kl", "test_nll_iwae", "iwae_k", "codes_used", "perplexity")

    def __init__(self, options: GumbelVAEOptions, spec, rng=None):
        super().__init__(options, spec)
        self.shape = (options.variables, options.classes)
        size = options.variables * options.classes
        self.encoder, self.decoder = nets.build(options.arch, spec, size, size, rng)
        if options.estimator == "straight-through":
            # the encoder's gradient comes through the one-hot's straight-through backward
            self.straight_through = ("encoder.",)

    def posterior(self, x: Tensor) -> Categorical:
        """q(z|x): V categoricals, logits [N, V, C]."""
        return Categorical(self.encoder(x).reshape(-1, *self.shape))

    def prior(self) -> UniformCategorical:
        return UniformCategorical(*self.shape)

    def likelihood(self, z: Tensor) -> Bernoulli:
        """p(x|z) from one-hot (or relaxed) codes [..., V, C]."""
        return Bernoulli(self.decoder(z.reshape(-1, self.shape[0] * self.shape[1])))

    def _terms(self, x: Tensor, z: Tensor, q: Categorical) -> dict:
        recon = F.sum(self.likelihood(z).log_prob(x), axis=1)
        divergence = F.sum(kl(q, self.prior()), axis=1)
        return {"recon": recon, "kl": divergence, "elbo": recon - divergence}

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        x, tau = batch["x"], temperature(self.options, ctx.step)
        q = self.posterior(x)
        terms = self._terms(x, q.rsample(tau, self.options.estimator == "straight-through", ctx.rng), q)
        return {"loss": -F.mean(terms["elbo"]), "recon": terms["recon"], "kl": terms["kl"], "tau": tau}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        q = self.posterior(x)
        metrics = self._terms(x, q.sample(ctx.rng), q)
        if iwae_k:
            lw = self.log_weights(x, iwae_k, ctx.rng, q)
            metrics["nll_iwae"] = -(F.logsumexp(lw, axis=0) - math.log(iwae_k))
        return metrics, {"codes": Tensor(q.logits.data.argmax(axis=-1))}

    def eval_summary(self, kept: dict) -> dict:
        """Over the test set's most probable codes: the share of the V·C (variable, class)
        pairs used, and the perplexity of the classes, averaged over the variables."""
        codes = kept["codes"]
        v, c = self.shape
        counts = np.stack([np.bincount(codes[:, i], minlength=c) for i in range(v)])
        p = counts / counts.sum(axis=1, keepdims=True)
        entropy = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(axis=1)
        return {"codes_used": float((counts > 0).mean()), "perplexity": float(np.exp(entropy).mean())}

    # ---- capabilities --------------------------------------------------------------------------

    def log_weights(self, x, k: int, rng=None, q: Categorical = None) -> Tensor:
        """log p(x|z_k) + log p(z_k) − log q(z_k|x) for k exact one-hot draws, [k, N]."""
        q = q if q is not None else self.posterior(x)
        z = q.sample(rng, (k,))                                              # [k, N, V, C]
        n = x.shape[0]
        x_rows = F.reshape(F.broadcast_to(x, k, *x.shape), k * n, *x.shape[1:])
        log_p_x = F.reshape(F.sum(self.likelihood(z).log_prob(x_rows), axis=1), k, n)
        return log_p_x + F.sum(self.prior().log_prob(z) - q.log_prob(z), axis=-1)

    @no_grad()
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Pixel means of p(x|z) for z drawn from the uniform prior, [n, *spec.shape]."""
        v, c = self.shape
        z = np.eye(c, dtype=np.float32)[rng.integers(0, c, (n, v))]
        return self._decode_one_hot(z)

    @no_grad()
    def _decode_one_hot(self, z: np.ndarray) -> np.ndarray:
        """Pixel means of p(x|z) from one-hot codes [N, V, C]."""
        means = self.likelihood(self.as_input(z)).mean
        return backend.to_device(means.data, "cpu").reshape(-1, *self.spec.shape)

    @no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoded from the most probable class of each variable."""
        logits = backend.to_device(self.posterior(self.as_input(x)).logits.data, "cpu")
        return self._decode_one_hot(np.eye(self.shape[1], dtype=np.float32)[logits.argmax(axis=-1)])
