"""The missing-data VAE MIWAE (Mattei & Frellsen 2019; textbook 21.3.5): the VAE trained on
images with pixels missing, its bound over the observed pixels x_o only,

  log p(x_o) ≥ E[log 1/K Σ_k p(x_o|z_k) p(z_k) / q(z_k|x_o)],   z_k ~ q(z|x_o)

(p(x|z) factorises over pixels, so the missing ones are simply left out of log p(x|z); the
encoder sees the image with them set to 0), and the missing pixels imputed by their mean
under the self-normalised importance weights w̃_k ∝ p(x_o|z_k) p(z_k) / q(z_k|x_o):

  x̂_m = Σ_k w̃_k E[x_m|z_k]                                            (their eq. 13)

Which pixels are missing is drawn once per run (``derived``: ``--missing random``, each
pixel with probability ``--missing-rate``, or ``top-half``, the top half of that share of the
images) and kept in the run folder. ``--bound zero-filled`` is
the baseline: the same VAE trained on the zero-filled images as if they were complete, which
imputes with its reconstruction. Both report the imputation error on the missing pixels beside
that of the per-pixel mean of the observed training pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from .. import objectives
from ..autograd import no_grad
from ..data import pack_mask, unpack_mask
from ..distributions import like
from ..options import option
from ..tensor import Tensor
from .base import StepContext
from .latent import NetworkOptions
from .registry import register
from .vae import GaussianVAE, PosteriorOptions

MISSING = ("random", "top-half")
BOUNDS = ("observed", "zero-filled")


@dataclass
class MIWAEOptions(NetworkOptions, PosteriorOptions):
    missing: str = option("random", "which pixels are missing: random (each pixel with probability "
                          "--missing-rate) or top-half (the top half of an image, with probability "
                          "--missing-rate), drawn once per image", choices=MISSING)
    missing_rate: float = option(0.5, "probability a pixel (random) or an image's top half (top-half) is missing",
                                 minimum=0.0, maximum=0.99)
    bound: str = option("observed", "observed (MIWAE: the bound over the observed pixels) or zero-filled (the "
                        "baseline: the missing pixels taken as 0 and modelled)", choices=BOUNDS)
    iwae_k: int = option(5, "importance samples of the training bound (1: the ELBO)", minimum=1)
    impute_k: int = option(100, "importance samples per test image for the imputation", minimum=1)


@register
class MIWAE(GaussianVAE):
    name = "miwae"
    description = "missing-data VAE: the bound over observed pixels, importance-weighted imputation"
    section = "21.3.5"
    Options = MIWAEOptions
    eval_keys = ("test_elbo", "test_recon", "test_kl", "test_nll_iwae", "iwae_k", "active_units", "kl_per_dim",
                 "test_imputation_mse", "test_mean_imputation_mse")

    def __init__(self, options: MIWAEOptions, spec, rng=None):
        super().__init__(options, spec, rng)
        # the observed training pixels' sums and counts, for the mean-imputation baseline
        self.register_buffer("observed_sum", np.zeros(spec.size))
        self.register_buffer("observed_count", np.zeros(spec.size))

    def derived(self, split, rng: np.random.Generator) -> dict:
        """``observed``: each example's mask, 1 where a pixel is observed (``data.pack_mask``'s bits)."""
        n, (_, height, width) = len(split), self.spec.shape
        if self.options.missing == "random":
            observed = rng.random((n, self.spec.size), dtype=np.float32) >= self.options.missing_rate
        else:
            # an image's top half goes missing only in some images: a part no image shows
            # could be neither learnt nor imputed
            top = np.arange(self.spec.size) // width % height < height // 2
            observed = ~(top[None] & (rng.random((n, 1)) < self.options.missing_rate))
        return {"observed": pack_mask(observed)}

    def _mask(self, bits: np.ndarray, t: Tensor) -> Tensor:
        return like(unpack_mask(bits, self.spec.size), t)

    def _observed(self, mask: Tensor):
        """The mask the bound counts pixels by: the observed ones, or all (zero-filled)."""
        return mask if self.options.bound == "observed" else None

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o, x = self.options, batch["x"]
        mask = self._mask(batch["observed"], x)
        filled = x * mask
        if self.training:
            self.observed_sum[:] += filled.data.sum(axis=0)           # in place: they stay buffers
            self.observed_count[:] += mask.data.sum(axis=0)
        terms = objectives.elbo_terms(self, filled, ctx.rng, self._observed(mask))
        if o.iwae_k > 1:
            loss = -F.mean(objectives.iwae_bound(self, filled, o.iwae_k, ctx.rng, observed=self._observed(mask)))
        else:
            loss = -F.mean(terms["elbo"])
        return {"loss": loss, "recon": terms["recon"], "kl": terms["kl"]}

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        mask = self._mask(batch["observed"], x)
        filled, observed = x * mask, self._observed(mask)
        terms = objectives.elbo_terms(self, filled, ctx.rng, observed)
        metrics = {key: terms[key] for key in ("elbo", "recon", "kl")}
        if iwae_k:
            metrics["nll_iwae"] = -objectives.iwae_bound(self, filled, iwae_k, ctx.rng, observed=observed)
        missing = 1 - mask
        pixel_mean = like(self.observed_sum / np.maximum(self.observed_count, 1), x)
        kept = {"mu": terms["q"].mu, "kl_dims": terms["kl_dims"], "missing": F.sum(missing, axis=1)}
        for key, guess in (("imputation", self._imputed(filled, mask, ctx.rng)), ("mean_imputation", pixel_mean)):
            kept[key] = F.sum(missing * (guess - x) ** 2, axis=1)
        return metrics, kept

    def eval_summary(self, kept: dict) -> dict:
        """The VAE's, and the squared errors of both imputations averaged over every missing
        pixel of the test set (an image with none missing adds nothing)."""
        count = max(float(kept["missing"].sum()), 1.0)
        return {**super().eval_summary(kept), "test_imputation_mse": float(kept["imputation"].sum()) / count,
                "test_mean_imputation_mse": float(kept["mean_imputation"].sum()) / count}

    def _imputed(self, filled: Tensor, mask: Tensor, rng) -> Tensor:
        """The images with their missing pixels filled in: by the importance-weighted mean
        (``--bound observed``) or the reconstruction at the posterior mean (zero-filled)."""
        if self.options.bound == "observed":
            k = self.options.impute_k
            log_w, likelihood = objectives.importance_samples(self, filled, k, rng, observed=mask)
            means = F.reshape(likelihood.mean, k, *filled.shape)
            guess = F.sum(F.softmax(log_w, axis=0)[:, :, None] * means, axis=0)
        else:
            guess = self.likelihood(self.posterior(filled).mu).mean
        return filled + (1 - mask) * guess

    # ---- capabilities -------------------------------------------------------------------------

    @no_grad()
    def impute(self, x: np.ndarray, observed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Images [N, *spec.shape] with the pixels where ``observed`` [N, size] is 0 filled in."""
        inputs = self.as_input(x)
        mask = like(observed, inputs)
        return self._imputed(inputs * mask, mask, rng).numpy().reshape(-1, *self.spec.shape)
