"""The binary-code autoencoder (textbook 21.6): an encoder to K logits l(x), a K-bit code b,
and a decoder to Bernoulli pixels, trained on the reconstruction −log p(x|b) alone, so that
an image becomes K bits. Bits have no gradient, so training uses either

  straight-through   b_k ~ Bernoulli(σ(l_k)) forward, the gradient of σ(l_k) backward
                     (Bengio et al. 2013)
  relaxed            the binary concrete b_k = σ((l_k + log u − log(1 − u)) / τ), u ~ U(0, 1)
                     (Maddison et al. 2017; logistic noise), differentiable in l

and evaluation the deterministic code b_k = 1[l_k > 0].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import no_grad
from ..distributions import Bernoulli
from ..options import option
from ..tensor import Tensor
from . import nets
from .base import Model, StepContext
from .registry import register


@dataclass
class BinaryAEOptions:
    arch: str = option("mlp", "network: mlp (784-200-200 tanh) or conv (two stride-2 convolutions)",
                       choices=nets.ARCHS)
    bits: int = option(64, "bits K of each image's code", minimum=1)
    estimator: str = option("straight-through", "straight-through (sampled bits forward, σ(l)'s gradient back) "
                            "or relaxed (the binary concrete at --tau)", choices=("straight-through", "relaxed"))
    tau: float = option(0.5, "temperature τ of the relaxed bits", minimum=1e-3)


@register
class BinaryAE(Model):
    name = "binary-ae"
    description = "autoencoder to a K-bit code: sampled bits with straight-through gradients, or relaxed bits"
    section = "21.6"
    Options = BinaryAEOptions
    eval_keys = ("test_recon", "bits_per_image", "bits_used")

    def __init__(self, options: BinaryAEOptions, spec, rng=None):
        super().__init__(options, spec)
        self.encoder, self.decoder = nets.build(options.arch, spec, options.bits, options.bits, rng)
        if options.estimator == "straight-through":
            self.straight_through = ("encoder.",)          # its gradient passes the sampled bits

    def _recon(self, x: Tensor, bits: Tensor) -> Tensor:
        """log p(x|b) per image [N]."""
        return F.sum(Bernoulli(self.decoder(bits)).log_prob(x), axis=1)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        x = batch["x"]
        logits = self.encoder(x)
        xp = backend.array_module(logits.data)
        if self.options.estimator == "straight-through":
            p = F.sigmoid(logits)
            u = backend.to_device(ctx.rng.random(p.shape), logits.device)
            bits = F.straight_through((u < p.data).astype(p.dtype), p)
        else:
            noise = Tensor(xp.asarray(backend.to_device(ctx.rng.logistic(size=logits.shape), logits.device),
                                      logits.dtype))
            bits = F.sigmoid((logits + noise) / self.options.tau)
        recon = self._recon(x, bits)
        return {"loss": -F.mean(recon), "recon": recon}

    def _code(self, x: Tensor) -> Tensor:
        """The deterministic code 1[l(x) > 0], [N, K]."""
        logits = self.encoder(x).data
        return Tensor((logits > 0).astype(logits.dtype))

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        bits = self._code(batch["x"])
        return {"recon": self._recon(batch["x"], bits)}, {"bits": bits}

    def eval_summary(self, kept: dict) -> dict:
        """The code length, and the share of bits not constant over the test set."""
        bits = kept["bits"]
        return {"bits_per_image": self.options.bits, "bits_used": float((bits.min(axis=0) != bits.max(axis=0)).mean())}

    @no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoded from the deterministic code."""
        means = Bernoulli(self.decoder(self._code(self.as_input(x)))).mean
        return backend.to_device(means.data, "cpu").reshape(-1, *self.spec.shape)
