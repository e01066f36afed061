"""The DALL-E-style discrete VAE (textbook 21.6.1; Ramesh et al. 2021, §2.1): a convolutional
encoder to logits over K codes at each cell of an h/4 × w/4 grid, q(z_ij|x) = Cat(softmax),
the uniform prior over the K codes, and a decoder from the grid of code vectors. A cell's
vector is the relaxed one-hot y_ij (Gumbel-softmax at temperature τ, or its straight-through
one-hot) mixed into a learned codebook E [K, D]: e_ij = Σ_k y_ijk E_k. Continuous pixels with a
Gaussian likelihood of fixed σ (``--sigma``), trained on

  loss(x) = −log p(x | e) + β_t Σ_ij KL(q(z_ij|x) ‖ U(K)),   β_t = β·min(1, t / warmup)

(the KL weight ramped from 0, as DALL-E does), τ annealed as in ``gumbel-vae``. Networks are
the VQ-VAE's (models/vqvae.py), so the two compare at the same grid and codebook size.
Evaluation draws exact one-hot codes for ``test_elbo``, and decodes the most probable code
of each cell for ``test_mse``, ``codes_used`` and ``perplexity``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from .. import functional as F
from ..autograd import no_grad
from ..distributions import Categorical, UniformCategorical, kl
from ..options import option
from ..tensor import Tensor
from .base import Model, StepContext
from .gumbel_vae import TemperatureOptions, temperature
from .registry import register
from .vqvae import conv_decoder, conv_encoder


@dataclass
class DVAEOptions(TemperatureOptions):
    num_codes: int = option(512, "codebook size K", minimum=2)
    code_dim: int = option(16, "dimension D of each code vector", minimum=1)
    hidden: int = option(64, "channels of the convolutions and residual blocks", minimum=1)
    beta: float = option(1.0, "final weight β of the KL term", minimum=0.0)
    kl_warmup_steps: int = option(5000, "steps over which the KL weight ramps from 0 to β", minimum=1)
    sigma: float = option(0.1, "standard deviation σ of the Gaussian pixel likelihood", minimum=1e-4)
    # DALL-E anneals τ from 1 to 1/16; over a 10-epoch run of 28×28 images (4690 steps) these
    # take it to about 0.1
    tau_min: float = option(1 / 16, "lowest temperature τ_min", minimum=1e-3)
    anneal_rate: float = option(5e-4, "r in τ = max(τ_min, τ₀·exp(−r·t))", minimum=0.0)
    anneal_every: int = option(100, "update τ every this many steps", minimum=1)


@register
class DVAE(Model):
    name = "dvae"
    description = "DALL-E-style discrete VAE: 7x7 grid of Gumbel-softmax codes mixed into a learned codebook"
    section = "21.6.1"
    Options = DVAEOptions
    inputs = "continuous"
    eval_keys = ("test_elbo", "test_recon", "test_kl", "test_mse", "codes_used", "perplexity")

    def __init__(self, options: DVAEOptions, spec, rng=None):
        super().__init__(options, spec)
        h, w = spec.shape[1:]
        if h % 4 or w % 4:
            raise ValueError(f"dvae needs image sides that are multiples of 4, got {h}x{w}")
        self.num_codes, self.grid = options.num_codes, (h // 4, w // 4)
        self.prior = UniformCategorical(self.grid[0] * self.grid[1], options.num_codes)
        self.encoder = conv_encoder(spec.shape, options.hidden, options.num_codes, rng)
        self.codebook = nn.Embedding(options.num_codes, options.code_dim, rng=rng)
        self.decoder = conv_decoder(options.code_dim, options.hidden, spec.shape[0], rng)
        if options.estimator == "straight-through":
            self.straight_through = ("encoder.",)          # its gradient passes the one-hot argmax

    def posterior(self, x: Tensor) -> Categorical:
        """q(z|x): a categorical over K codes per cell, logits [N, h', w', K]."""
        return Categorical(self.encoder(x).permute(0, 2, 3, 1))

    def _decode(self, y: Tensor) -> Tensor:
        """Pixel means [N, size] from (relaxed) one-hot codes [N, h', w', K]: Σ_k y_k E_k per cell."""
        return self.decoder(F.matmul(y, self.codebook.weight).permute(0, 3, 1, 2))

    def _log_likelihood(self, means: Tensor, x: Tensor) -> Tensor:
        """log N(x; means, σ²) summed over pixels, [N]."""
        s = self.options.sigma
        diff = (x - means) / s
        return -0.5 * F.sum(diff * diff, axis=1) - x.shape[1] * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def _kl(self, q: Categorical) -> Tensor:
        """Σ over cells of KL(q(z_ij|x) ‖ U(K)), [N]."""
        return F.sum(F.reshape(kl(q, self.prior), q.logits.shape[0], -1), axis=1)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o, x = self.options, batch["x"]
        q = self.posterior(x)
        y = q.rsample(temperature(o, ctx.step), o.estimator == "straight-through", ctx.rng)
        recon, divergence = self._log_likelihood(self._decode(y), x), self._kl(q)
        weight = o.beta * min(1.0, ctx.step / o.kl_warmup_steps)
        return {"loss": F.mean(divergence * weight - recon), "recon": recon, "kl": divergence,
                "kl_weight": weight, "tau": temperature(o, ctx.step)}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        q = self.posterior(x)
        recon, divergence = self._log_likelihood(self._decode(q.sample(ctx.rng)), x), self._kl(q)
        codes = q.logits.data.argmax(axis=-1)
        diff = self._decode(self._one_hot(codes)) - x
        return {"recon": recon, "kl": divergence, "elbo": recon - divergence, "mse": F.mean(diff * diff, axis=1)}, \
            {"codes": Tensor(codes.reshape(len(codes), -1))}

    def eval_summary(self, kept: dict) -> dict:
        """Over the test set's most probable codes: the share of the codebook used and the
        perplexity exp(H) of their empirical distribution."""
        counts = np.bincount(kept["codes"].ravel(), minlength=self.num_codes)
        p = counts[counts > 0] / counts.sum()
        return {"codes_used": float((counts > 0).mean()), "perplexity": float(np.exp(-(p * np.log(p)).sum()))}

    def _one_hot(self, codes) -> Tensor:
        """One-hot vectors [..., K] of integer codes, on the model's device."""
        xp = backend.array_module(codes)
        return Tensor(xp.eye(self.num_codes, dtype=self.codebook.weight.dtype)[codes])

    # ---- capabilities --------------------------------------------------------------------------

    @no_grad()
    def codes(self, x: np.ndarray) -> list:
        """The most probable code of every cell, one grid [N, h/4, w/4]."""
        return [backend.to_device(self.posterior(self.as_input(x)).logits.data.argmax(axis=-1), "cpu")]

    @no_grad()
    def decode_codes(self, codes: list) -> np.ndarray:
        """Images [N, *spec.shape] (pixel means, clipped to [0, 1]) from one grid of codes."""
        (grid,) = codes
        device = next(self.parameters()).device
        means = self._decode(self._one_hot(backend.to_device(np.asarray(grid, np.int64), device)))
        return backend.to_device(F.clip(means, 0.0, 1.0).data, "cpu").reshape(-1, *self.spec.shape)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Codes drawn from the uniform prior, decoded (what the ELBO's prior generates; a
        learned prior over the codes, ``pixelcnn-prior --parent``, gives better samples)."""
        return self.decode_codes([rng.integers(0, self.num_codes, (n, *self.grid))])

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode_codes(self.codes(x))
