"""The multimodal VAE (textbook 21.3.3; Wu & Goodman 2018): an image x and its label y share
one latent z, p(x, y, z) = p(z) p(x|z) p(y|z), and the posterior given any subset S of the
modalities is a product of Gaussian experts with the prior as one of them,

  q(z|x_S) ∝ p(z) Π_{m∈S} q̃(z|x_m)        (distributions.product_of_experts)

so a missing modality is an expert left out. Trained on the sub-sampled objective, the joint
ELBO plus each modality's own:

  ELBO(x, y) + ELBO(x) + ELBO(y),  ELBO(x_S) = E_q(z|x_S)[Σ_{m∈S} λ_m log p(x_m|z)] − KL(q(z|x_S) ‖ p(z))

with λ_y weighting the label's one term against the image's 784 (λ_x = 1). Reported bounds
are unweighted (λ = 1), so ELBO(x, y) ≤ log p(x, y).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import backend
from .. import functional as F
from .. import nn
from ..autograd import no_grad
from ..distributions import Normal, StandardNormal, like, one_hot_like, product_of_experts, sample_and_kl
from ..objectives import per_example
from ..options import option
from ..tensor import Tensor
from .base import StepContext
from .latent import EncoderDecoder, NetworkOptions
from .registry import register


@dataclass
class MVAEOptions(NetworkOptions):
    label_weight: float = option(50.0, "weight λ_y of the label's log-likelihood in training (Wu & Goodman "
                                 "use 50 for MNIST)", minimum=0.0)
    label_hidden: int = option(64, "hidden units of the label's expert and decoder", minimum=1)
    scored: str = option("given", "what each sub-sampled ELBO's likelihood scores in training: given (Wu & Goodman: "
                         "the modalities its posterior saw) or all (both, each term then a bound on log p(x, y) "
                         "with its own q, which trains inferring one modality from the other)",
                         choices=("given", "all"))


@register
class MVAE(EncoderDecoder):
    name = "mvae"
    description = "multimodal VAE over image and label: product-of-experts posterior, sub-sampled ELBOs"
    section = "21.3.3"
    Options = MVAEOptions
    eval_keys = ("test_elbo", "test_elbo_image", "test_elbo_label", "test_label_accuracy", "active_units")

    def __init__(self, options: MVAEOptions, spec, rng=None):
        if not spec.classes:
            raise ValueError(f"mvae needs a label modality; {spec.name} has no classes")
        super().__init__(options, spec, rng)
        c, h, d = spec.classes, options.label_hidden, self.latent_dim
        self.classes = c
        self.label_expert = nn.Sequential(nn.Linear(c, h, rng=rng), nn.Tanh(), nn.Linear(h, 2 * d, rng=rng))
        self.label_decoder = nn.Sequential(nn.Linear(d, h, rng=rng), nn.Tanh(), nn.Linear(h, c, rng=rng))

    def joint_posterior(self, x: Optional[Tensor] = None, y: Optional[Tensor] = None) -> Normal:
        """q(z|x_S): the prior expert N(0, I) times the experts of the modalities given (x an
        image batch, y one-hot labels; at least one)."""
        experts = []
        if x is not None:
            h = self.encoder(x)
            experts.append(Normal(h[:, :self.latent_dim], h[:, self.latent_dim:]))
        if y is not None:
            h = self.label_expert(y)
            experts.append(Normal(h[:, :self.latent_dim], h[:, self.latent_dim:]))
        zeros = like(np.zeros(experts[0].mu.shape), experts[0].mu)
        return product_of_experts([Normal(zeros, zeros, clamp=False), *experts])

    def posterior(self, x: Tensor) -> Normal:
        """q(z|x), the image alone (``encode``, ``reconstruct``)."""
        return self.joint_posterior(x=x)

    def elbo(self, rng, given: dict, scored: Optional[dict] = None) -> tuple:
        """({modality: log p(x_m|z) [N]}, KL [N], q) for one z ~ q(z|x_S), S the modalities
        ``given`` ({'image': x, 'label': one-hot y}, one or both), the log-likelihoods those
        of ``scored`` (the given ones by default)."""
        q = self.joint_posterior(given.get("image"), given.get("label"))
        z, kl = sample_and_kl(q, StandardNormal(self.latent_dim), rng)
        recon = {}
        for modality, value in (scored or given).items():
            recon[modality] = per_example(self.likelihood(z).log_prob(value)) if modality == "image" else \
                F.sum(value * F.log_softmax(self.label_decoder(z), axis=-1), axis=-1)
        return recon, F.sum(kl, axis=-1), q

    def _subsets(self, batch: dict) -> tuple:
        """The batch's modalities, and the sub-sampled objective's subsets of them by name."""
        both = {"image": batch["x"], "label": one_hot_like(batch["y"], self.classes, batch["x"])}
        return both, {"elbo": both, "elbo_image": {"image": both["image"]}, "elbo_label": {"label": both["label"]}}

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        both, subsets = self._subsets(batch)
        weights = {"image": 1.0, "label": self.options.label_weight}
        total, reported = 0.0, {}
        for name, given in subsets.items():
            recon, kl, _ = self.elbo(ctx.rng, given, both if self.options.scored == "all" else given)
            total = total + sum(weights[m] * r for m, r in recon.items()) - kl
            reported[name] = sum(recon.values()) - kl
        return {"loss": -F.mean(total), **reported}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        """Each subset's ELBO of its own modalities (test_elbo bounds log p(x, y),
        test_elbo_image log p(x), test_elbo_label log p(y)), and the label inferred from the
        image alone."""
        x = batch["x"]
        metrics, posteriors = {}, {}
        for key, given in self._subsets(batch)[1].items():
            recon, kl, posteriors[key] = self.elbo(ctx.rng, given)
            metrics[key] = sum(recon.values()) - kl
        mu = posteriors["elbo_image"].mu                    # what the image alone says of z
        return {**metrics, "label_accuracy": like(self._label_at(mu) == batch["y"], x)}, {"mu": mu}

    def _label_at(self, z: Tensor) -> np.ndarray:
        """The most probable label under p(y|z) [N]."""
        return backend.to_device(self.label_decoder(z).data, "cpu").argmax(axis=1)

    # ---- capabilities -------------------------------------------------------------------------

    @no_grad()
    def classify(self, x: np.ndarray) -> np.ndarray:
        """The most probable label under p(y|z) at the mean of q(z|x) [N]."""
        return self._label_at(self.posterior(self.as_input(x)).mu)

    @no_grad()
    def sample_given(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Pixel means of p(x|z) for z ~ q(z|y) of the given labels [n], its noise from ``rng``."""
        eps = rng.standard_normal((len(labels), self.latent_dim))
        q = self.joint_posterior(y=one_hot_like(labels, self.classes, self.as_input(eps)))
        z = q.mu + F.exp(0.5 * q.logvar) * like(eps, q.mu)
        return self.decode(backend.to_device(z.data, "cpu"))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Pixel means of p(x|z), z ~ p(z)."""
        return self.decode(rng.standard_normal((n, self.latent_dim)))
