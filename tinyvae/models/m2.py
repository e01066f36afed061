"""The semi-supervised VAE M2 (textbook 21.3.4; Kingma et al. 2014): a class y and a style z
generate an image, p(x, y, z) = p(x|y, z) p(y) p(z) with p(y) uniform over the C classes
and p(z) = N(0, I); inference by a classifier q(y|x) and q(z|x, y). A labelled example's
bound (their eq. 6) and an unlabelled one's, with y summed out exactly (eq. 7):

  L(x, y) = E_q(z|x,y)[log p(x|y, z)] + log p(y) − KL(q(z|x, y) ‖ p(z))
  U(x)    = Σ_y q(y|x) L(x, y) + H(q(y|x))

The loss is the batch mean of −L(x, y) − α log q(y|x) over its labelled rows and −U(x) over
the others (eq. 9: the classifier also learns from the labels directly; α here per labelled
example, Kingma et al.'s α = 0.1·N spread over the N_l labels is 0.1·N/N_l). Which training
examples keep their label (``--labels``, balanced across classes, drawn by the seed) is
decided once per run (``derived``) and kept in the run folder; the others' labels are never
read in training. With few labels, an epoch visits each labelled example many times
(``--labelled-share``), so that every batch holds some, as Kingma et al. batch them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import backend
from .. import functional as F
from .. import nn
from ..autograd import no_grad
from ..distributions import Bernoulli, Normal, StandardNormal, like, one_hot_like, sample_and_kl
from ..objectives import per_example
from ..options import option
from ..tensor import Tensor
from .base import Model, StepContext
from .registry import register


@dataclass
class M2Options:
    labels: int = option(100, "training examples that keep their label, balanced across the classes", minimum=1)
    alpha: float = option(60.0, "weight α of the classification term −log q(y|x) of each labelled example",
                          minimum=0.0)
    labelled_share: float = option(0.1, "share of each epoch's rows that are labelled examples, reached by "
                                   "visiting each of them more often (Kingma et al. put labelled examples in "
                                   "every batch); 0: every example once an epoch", minimum=0.0, maximum=0.9)
    hidden: int = option(500, "units of each network's hidden layer (softplus)", minimum=1)
    latent_dim: int = option(50, "dimensions of the style z", minimum=1)


def balanced_subset(labels: np.ndarray, n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """A mask [N] of ``n`` examples taken round-robin over the classes, each class's in the
    order of a seeded permutation: n/C of each class when n is a multiple of C and every class
    has enough examples (a class that runs out is passed over)."""
    if n > len(labels):
        raise ValueError(f"--labels {n} asks for more labelled examples than the {len(labels)} training images")
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(classes)]
    order = [pool[r] for r in range(max(map(len, pools))) for pool in pools if r < len(pool)]
    mask = np.zeros(len(labels), np.uint8)
    mask[np.asarray(order[:n], np.int64)] = 1
    return mask


@register
class M2(Model):
    name = "m2"
    description = "semi-supervised M2: a classifier q(y|x) and a style z, unlabelled images sum over y"
    section = "21.3.4"
    Options = M2Options
    eval_keys = ("test_elbo", "test_accuracy")

    def __init__(self, options: M2Options, spec, rng=None):
        if not spec.classes:
            raise ValueError(f"m2 needs labelled data; {spec.name} has no classes")
        super().__init__(options, spec)
        c, h, d = spec.classes, options.hidden, options.latent_dim
        self.classes, self.latent_dim = c, d
        self.classifier = nn.Sequential(nn.Linear(spec.size, h, rng=rng), nn.Softplus(), nn.Linear(h, c, rng=rng))
        # q(z|x, y)'s first layer on [x; y], split as W_x x + W_y y so x's part is computed once for every y
        self.style_x = nn.Linear(spec.size, h, rng=rng)
        self.style_y = nn.Linear(c, h, bias=False, rng=rng)
        self.style = nn.Sequential(nn.Softplus(), nn.Linear(h, 2 * d, rng=rng))
        self.decoder = nn.Sequential(nn.Linear(d + c, h, rng=rng), nn.Softplus(), nn.Linear(h, spec.size, rng=rng))

    def derived(self, split, rng: np.random.Generator) -> dict:
        """``labelled``: 1 for the examples whose label training may read (``balanced_subset``)."""
        return {"labelled": balanced_subset(split.y, self.options.labels, self.classes, rng)}

    def visits(self, split) -> np.ndarray:
        """Each unlabelled example once, each labelled one r times, r = share/(1 − share) ·
        N_unlabelled/N_labelled (at least 1), so labelled rows fill about that share of every batch."""
        labelled = split.fields["labelled"].astype(bool)
        share = self.options.labelled_share
        repeats = max(1, round(share / (1 - share) * (~labelled).sum() / max(labelled.sum(), 1)))
        return np.where(labelled, repeats, 1)

    def bounds(self, x: Tensor, rng) -> Tensor:
        """L(x, y) for every class y, [N, C]: the N images under each of the C labels, as
        C·N rows (class-major), each with its own z ~ q(z|x, y)."""
        n, c, d = x.shape[0], self.classes, self.latent_dim
        eye = one_hot_like(np.arange(c), self.classes, x)
        h = F.reshape(self.style_x(x)[None] + self.style_y(eye)[:, None], c * n, -1)
        out = self.style(h)
        z, kl = sample_and_kl(Normal(out[:, :d], out[:, d:]), StandardNormal(d), rng)
        y = F.reshape(F.broadcast_to(eye[:, None], c, n, c), c * n, c)
        rows = F.reshape(F.broadcast_to(x[None], c, *x.shape), c * n, -1)
        recon = per_example(Bernoulli(self.decoder(F.concat([z, y], axis=1))).log_prob(rows))
        return F.reshape(recon - F.sum(kl, axis=-1), c, n).T - math.log(c)

    def terms(self, x: Tensor, rng) -> tuple:
        """(log q(y|x) [N, C], L(x, y) [N, C], U(x) [N])."""
        log_q = F.log_softmax(self.classifier(x), axis=-1)
        bounds = self.bounds(x, rng)
        return log_q, bounds, F.sum(F.exp(log_q) * (bounds - log_q), axis=-1)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        x = batch["x"]
        log_q, bounds, unlabelled = self.terms(x, ctx.rng)
        labelled = batch["labelled"].astype(bool)
        y = one_hot_like(np.where(labelled, batch["y"], 0), self.classes, x)   # an unlabelled row's label is not read
        rows = like(labelled, x) > 0
        supervised = F.sum(y * (bounds + self.options.alpha * log_q), axis=-1)
        return {"loss": -F.mean(F.where(rows, supervised, unlabelled)),
                "bound": F.where(rows, F.sum(y * bounds, axis=-1), unlabelled)}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        """The unlabelled bound U(x) ≤ log p(x), and whether q(y|x)'s most probable class is right."""
        log_q, _, unlabelled = self.terms(batch["x"], ctx.rng)
        right = backend.to_device(log_q.data, "cpu").argmax(axis=1) == batch["y"]
        return {"elbo": unlabelled, "accuracy": like(right, log_q)}, {}

    # ---- capabilities -------------------------------------------------------------------------

    @no_grad()
    def classify(self, x: np.ndarray) -> np.ndarray:
        """q(y|x)'s most probable class of each image [N]."""
        return backend.to_device(self.classifier(self.as_input(x)).data, "cpu").argmax(axis=1)

    @no_grad()
    def sample_given(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Pixel means of p(x|y, z) for the given labels [n], z ~ p(z) drawn from ``rng``
        (the same generator state gives every label the same styles)."""
        return self._pixel_means(self.as_input(rng.standard_normal((len(labels), self.latent_dim))), labels)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Images of labels drawn uniformly."""
        return self.sample_given(rng.integers(0, self.classes, n), rng)

    @no_grad()
    def restyle(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each image's style (the mean of q(z|x, ŷ), ŷ q(y|x)'s class) drawn as the given
        label [N] (Kingma et al.'s analogies)."""
        inputs = self.as_input(x)
        guess = one_hot_like(self.classify(x), self.classes, inputs)
        return self._pixel_means(self.style(self.style_x(inputs) + self.style_y(guess))[:, :self.latent_dim], labels)

    def _pixel_means(self, z: Tensor, labels: np.ndarray) -> np.ndarray:
        """Pixel means of p(x|y, z) [N, *spec.shape] for styles z [N, D] and labels [N]."""
        logits = self.decoder(F.concat([z, one_hot_like(labels, self.classes, z)], axis=1))
        return backend.to_device(F.sigmoid(logits).data, "cpu").reshape(-1, *self.spec.shape)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.restyle(x, self.classify(x))
