"""Hierarchical VAE with L stochastic layers (textbook 21.5): z_L at the top, z_1 next to the
image, p(x, z) = p(x|z_1) Π_l p(z_l | z_{l+1}) with p(z_L) = N(0, I) (21.5.1).

Inference, ``--inference top-down`` (LVAE, Sønderby et al. 2016; NVAE; VD-VAE): one
deterministic bottom-up pass over x gives features h_1..h_L; then the top-down pass that
computes the prior p(z_l | z_{l+1}) also gives the posterior q(z_l | x, z_{>l}) from h_l and
the same top-down state, so prior and posterior share the generative path. With the residual
posterior of NVAE (eq. 21.73) q's mean and log-variance are the prior's plus what the encoder
adds: μ_q = μ_p + Δμ, log σ_q² = log σ_p² + Δℓ, and the KL is eq. 21.74,

  KL(q ‖ p) = ½ Σ (Δμ² / σ_p² + e^{Δℓ} − Δℓ − 1)              (residual_kl)

``--inference bottom-up`` (the older models, Burda et al. 2016): q(z_1|x) Π q(z_l | z_{l−1}).

Loss: −log p(x|z_1) + β_t Σ_l γ_l KL_l, with β_t a linear warm-up and, during it, KL balancing
(eq. 21.71): γ_l ∝ s_l · E_batch[KL_l], s_l the layer's size, normalised so Σ γ_l = L (the total
weight is unchanged); plus, if asked, NVAE's spectral regularisation β_sr Σ_i σ_i over the
bottom-up layers' weights (``SpectralPenalty``). Gradient skipping (VD-VAE) is the trainer's
``--skip-grad-norm``, for every model.

Architectures: ``mlp`` (layers of ``latent_dim`` units; with L = 1 exactly the ``vae``'s
784-200-200 networks, drawn in the same order) and ``conv`` (spatial latents of
``latent_dim`` channels: the top ⌈L/2⌉ layers on a 7×7 grid, the rest on 14×14, so the top
carries global structure and the bottom detail (21.5.3); residual cells whose last
convolution starts scaled by 1/√L).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from .. import backend, nn, objectives
from .. import functional as F
from ..autograd import no_grad
from ..distributions import Bernoulli, IAFNormal, Normal, StandardNormal, kl, like
from ..options import option
from ..tensor import Tensor
from . import nets
from .base import Model, StepContext
from .registry import register
from .vqvae import ResidualBlock

HIDDEN = {"mlp": 200, "conv": 32}                 # the defaults of --hidden and --latent-dim
LATENT = {"mlp": 50, "conv": 4}


@dataclass
class HVAEOptions:
    arch: str = option("mlp", "network: mlp (layers of units) or conv (spatial latents on 7×7 and 14×14 grids)",
                       choices=nets.ARCHS)
    layers: int = option(2, "stochastic layers L", minimum=1, maximum=8)
    latent_dim: Optional[int] = option(None, "units per layer (mlp, default 50) or channels per grid cell "
                                             "(conv, default 4)", minimum=1)
    inference: str = option("top-down", "top-down (LVAE/NVAE: prior and posterior share the top-down pass) or "
                                        "bottom-up (q(z_l | z_l-1), mlp only)", choices=("top-down", "bottom-up"))
    residual: bool = option(True, "NVAE's residual posterior: q's mean and log-variance relative to the prior's")
    warmup_steps: int = option(0, "linear KL warm-up over this many steps, with KL balancing across layers "
                                  "during it (0: neither)", minimum=0)
    spectral: float = option(0.0, "weight of NVAE's spectral regularisation of the bottom-up layers", minimum=0.0)
    iaf_steps: int = option(0, "IAF steps inside each layer's posterior (mlp)", minimum=0)
    hidden: Optional[int] = option(None, "width of the ladder: units of the mlp's layers above the encoder and "
                                         "decoder (default 200), channels of the conv's (default 32)", minimum=1)


def residual_kl(q: Normal, p: Normal) -> Tensor:
    """Eq. 21.74 per dimension: with Δμ = μ_q − μ_p and Δℓ = ℓ_q − ℓ_p,
    ½ (Δμ² e^{−ℓ_p} + e^{Δℓ} − Δℓ − 1)."""
    d_mu, d_logvar = q.mu - p.mu, q.logvar - p.logvar
    return 0.5 * (d_mu * d_mu * F.exp(-p.logvar) + F.exp(d_logvar) - d_logvar - 1)


def kl_balance(kls: list, sizes: list) -> np.ndarray:
    """γ_l = L · s_l k_l / Σ_j s_j k_j with k_l the batch mean of KL_l (eq. 21.71): numbers, not
    differentiated; a floor of 0.01 nats keeps a collapsed layer's weight above zero."""
    k = np.array([max(float(F.mean(v).item()), 0.0) + 0.01 for v in kls]) * np.array(sizes, np.float64)
    return len(kls) * k / k.sum()


class SpectralPenalty(nn.Module):
    """Σ_i σ_i, the largest singular values of the given weights (each as a matrix [out, rest]),
    by one power iteration per step from a stored vector u_i (Miyato et al. 2018; NVAE):
    v = Wᵀu / ‖Wᵀu‖ and σ = ‖Wv‖, differentiable in W. ``advance`` stores u ← Wv / ‖Wv‖
    after each optimizer step, so σ tends to the largest singular value as training goes on
    and the penalty is a function of the weights and the stored vectors alone."""

    def __init__(self, weights: list, rng=None):
        super().__init__()
        self.weights = weights
        rng = rng if rng is not None else np.random.default_rng(0)
        for i, w in enumerate(weights):
            u = rng.standard_normal(w.shape[0])
            self.register_buffer(f"u{i}", (u / np.linalg.norm(u)).astype(np.float32))

    def _wv(self, i: int) -> Tensor:
        """W v for v = Wᵀu / ‖Wᵀu‖, [out]."""
        w = F.reshape(self.weights[i], self.weights[i].shape[0], -1)
        v = F.matmul(like(getattr(self, f"u{i}"), w)[None], w)[0]
        v = v / F.sqrt(F.sum(v * v))
        return F.matmul(w, v[:, None])[:, 0]

    def penalty(self) -> Tensor:
        total = 0.0
        for i in range(len(self.weights)):
            wv = self._wv(i)
            total = total + F.sqrt(F.sum(wv * wv))
        return total

    def advance(self) -> None:
        with no_grad():
            for i in range(len(self.weights)):
                wv = self._wv(i).data
                getattr(self, f"u{i}")[...] = wv / (backend.array_module(wv).linalg.norm(wv) + 1e-12)


@register
class HVAE(Model):
    name = "hvae"
    description = "hierarchical VAE: L stochastic layers, top-down (LVAE/NVAE) or bottom-up inference"
    section = "21.5"
    Options = HVAEOptions

    def __init__(self, options: HVAEOptions, spec, rng=None):
        if options.latent_dim is None or options.hidden is None:
            options = replace(options, latent_dim=options.latent_dim or LATENT[options.arch],
                              hidden=options.hidden or HIDDEN[options.arch])
        if options.arch == "conv" and (options.inference == "bottom-up" or options.iaf_steps):
            raise ValueError("--arch conv takes --inference top-down and no --iaf-steps; use --arch mlp for those")
        super().__init__(options, spec)
        self.layers, rng = options.layers, rng if rng is not None else np.random.default_rng()
        self.ladder = (MLPLadder if options.arch == "mlp" else ConvLadder)(options, spec, rng)
        bottom_up = self.ladder.bottom_up_weights()
        self.spectral = SpectralPenalty(bottom_up, rng) if options.spectral > 0 else None
        self.eval_keys = ("test_elbo", "test_recon", "test_kl", *(f"test_kl_{l}" for l in self._names()),
                          "test_nll_iwae", "iwae_k", "active_units", "active_units_per_layer")

    def _names(self) -> range:
        return range(1, self.layers + 1)

    # ---- the hierarchy -----------------------------------------------------------------------

    def hierarchy(self, x: Tensor, rng=None, top: Optional[int] = None, temperature: float = 1.0) -> tuple:
        """([(z_l, q_l, p_l, log q_l(z_l) or None)] from the top layer down, the top-down state
        the decoder reads). ``top``: only the top k layers from the posterior, those below drawn
        from the prior at ``temperature`` (q_l is then None). The log-density is given where
        it is not q's closed form's business: a flow's, or bottom-up inference's (whose KL has
        no closed form: z_l's prior depends on z_{l+1}, itself drawn given z_l)."""
        return self.ladder.run(x, rng, self.layers if top is None else top, temperature)

    def likelihood(self, z_1: Tensor, state) -> Bernoulli:
        return Bernoulli(self.ladder.decode(z_1, state))

    def _kl(self, z: Tensor, q, p, log_q: Optional[Tensor]) -> Tensor:
        """KL_l per example [N]: closed form (eq. 21.74 for the residual posterior), or the
        one-sample log q(z) − log p(z) where ``log_q`` is given."""
        if log_q is not None:
            return objectives.per_example(log_q - p.log_prob(z))
        if self.options.residual and isinstance(p, Normal):
            return objectives.per_example(residual_kl(q, p))
        return objectives.per_example(kl(q, p))

    def _terms(self, x: Tensor, rng) -> dict:
        layers, state = self.hierarchy(x, rng)
        recon = objectives.per_example(self.likelihood(layers[-1][0], state).log_prob(x))
        kls = [self._kl(*layer) for layer in layers][::-1]                   # bottom (l = 1) first
        return {"recon": recon, "kls": kls, "kl": sum(kls[1:], kls[0]),
                "mus": [layer[1].mu for layer in layers][::-1]}

    # ---- training and evaluation --------------------------------------------------------------

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o, x = self.options, batch["x"]
        t = self._terms(x, ctx.rng)
        warm = o.warmup_steps and ctx.step < o.warmup_steps
        beta = min(1.0, ctx.step / o.warmup_steps) if o.warmup_steps else 1.0
        gamma = kl_balance(t["kls"], self.ladder.sizes) if warm else np.ones(self.layers)
        weighted = sum(float(g) * k for g, k in zip(gamma, t["kls"]))
        loss = F.mean(beta * weighted - t["recon"])
        if self.spectral is not None:
            loss = loss + o.spectral * self.spectral.penalty()
        return {"loss": loss, "recon": t["recon"], "kl": t["kl"], "kl_weight": beta,
                **{f"kl_{l}": k for l, k in zip(self._names(), t["kls"])}}

    def after_step(self, ctx: StepContext) -> None:
        if self.spectral is not None:
            self.spectral.advance()

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        x = batch["x"]
        t = self._terms(x, ctx.rng)
        metrics = {"elbo": t["recon"] - t["kl"], "recon": t["recon"], "kl": t["kl"],
                   **{f"kl_{l}": k for l, k in zip(self._names(), t["kls"])}}
        if iwae_k:
            chunks = [self.log_weights(x, min(100, iwae_k - done), ctx.rng) for done in range(0, iwae_k, 100)]
            metrics["nll_iwae"] = -(F.logsumexp(F.concat(chunks, axis=0), axis=0) - math.log(iwae_k))
        return metrics, {f"mu_{l}": mu for l, mu in zip(self._names(), t["mus"])}

    def eval_summary(self, kept: dict) -> dict:
        """Active units of each layer (Burda et al. 2016: Cov_x E_q[z] > 0.01) and their sum."""
        per_layer = [objectives.active_units(kept[f"mu_{l}"]) for l in self._names()]
        return {"active_units": sum(per_layer), "active_units_per_layer": per_layer}

    # ---- capabilities ---------------------------------------------------------------------------

    def log_weights(self, x, k: int, rng=None) -> Tensor:
        """log p(x|z_1) + Σ_l log p(z_l | z_{l+1}) − log q(z_l | ·) for k draws of the whole
        hierarchy per example, [k, N] (the k·N rows go through the networks together)."""
        n = x.shape[0]
        rows = F.reshape(F.broadcast_to(x, k, *x.shape), k * n, *x.shape[1:])
        layers, state = self.hierarchy(rows, rng)
        total = objectives.per_example(self.likelihood(layers[-1][0], state).log_prob(rows))
        for z, q, p, log_q in layers:
            log_q = q.log_prob(z) if log_q is None else log_q
            total = total + objectives.per_example(p.log_prob(z)) - objectives.per_example(log_q)
        return F.reshape(total, k, n)

    @no_grad()
    def sample_at(self, n: int, rng: np.random.Generator, temperature: float = 1.0) -> np.ndarray:
        """Pixel means of p(x | z_1) with every z_l drawn from the prior, its standard deviations
        scaled by ``temperature``, [n, *spec.shape]."""
        layers, state = self.ladder.run(None, rng, 0, temperature, n=n)
        return self._pixels(layers[-1][0], state)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.sample_at(n, rng, 1.0)

    @no_grad()
    def reconstruct_from(self, x: np.ndarray, top: int, rng: np.random.Generator) -> np.ndarray:
        """Pixel means with the top ``top`` layers drawn from q(· | x) and the rest from the
        prior: what the top layers alone keep of x."""
        layers, state = self.hierarchy(self.as_input(x), rng, top=top)
        return self._pixels(layers[-1][0], state)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.reconstruct_from(x, self.layers, np.random.default_rng(0))

    def _pixels(self, z_1: Tensor, state) -> np.ndarray:
        return backend.to_device(self.likelihood(z_1, state).mean.data, "cpu").reshape(-1, *self.spec.shape)


class MLPLadder(nn.Module):
    """Fully connected layers of ``latent_dim`` units. The encoder and decoder are the ``vae``'s
    (nets.mlp_encoder, nets.mlp_decoder, drawn first); the encoder's last layer is layer 1's
    posterior head. Above them, per layer l ≥ 2: ``up`` (bottom-up features h_l = tanh(W h_{l−1})
    top-down, or an MLP of z_{l−1} bottom-up) and its posterior head; per layer l < L: ``down``
    (an MLP of z_{l+1}), the prior head on its output and, top-down, ``merge`` (that output's
    share of q's parameters)."""

    def __init__(self, o: HVAEOptions, spec, rng):
        super().__init__()
        d, h, top_down = o.latent_dim, o.hidden, o.inference == "top-down"
        self.options, self.sizes, self.top_down = o, [d] * o.layers, top_down
        extra = d if o.iaf_steps else 0                                      # an IAF context per layer
        self.encoder = nets.mlp_encoder(spec, 2 * d + extra, rng)
        self.decoder = nets.mlp_decoder(spec, d, rng)
        mlp = lambda n_in: nn.Sequential(nn.Linear(n_in, h, rng=rng), nn.Tanh(),       # noqa: E731
                                         nn.Linear(h, h, rng=rng), nn.Tanh())
        above = range(o.layers - 1)
        trunk = self.encoder[2].weight.shape[0]                              # h_1's width: 200
        self.up = nn.ModuleList([nn.Sequential(nn.Linear(trunk if l == 0 else h, h, rng=rng), nn.Tanh()) if top_down
                                 else mlp(d) for l in above])
        self.heads = nn.ModuleList([nn.Linear(h, 2 * d + extra, rng=rng) for _ in above])
        self.down = nn.ModuleList([mlp(d) for _ in above])
        self.priors = nn.ModuleList([nn.Linear(h, 2 * d, rng=rng) for _ in above])
        self.merge = nn.ModuleList([nn.Linear(h, 2 * d + extra, bias=False, rng=rng) for _ in above]) \
            if top_down else None
        self.flows = nn.ModuleList([nn.ModuleList([nn.MADE(d, h, context=d, reverse=t % 2 == 1, rng=rng)
                                                   for t in range(o.iaf_steps)]) for _ in range(o.layers)])

    def bottom_up_weights(self) -> list:
        modules = [self.encoder, self.up, self.heads]
        return [m.weight for part in modules for _, m in part.named_modules() if isinstance(m, nn.Linear)]

    def _posterior(self, params: Tensor, l: int, prior) -> object:
        """q_l from its parameters [N, 2d (+ d context)]: residual on the prior's if asked."""
        d = self.options.latent_dim
        mu, logvar = params[:, :d], params[:, d:2 * d]
        if self.options.residual and isinstance(prior, Normal) and self.top_down:
            mu, logvar = prior.mu + mu, prior.logvar + logvar
        if self.options.iaf_steps:
            return IAFNormal(mu, logvar, params[:, 2 * d:], list(self.flows[l]))
        return Normal(mu, logvar)

    def _prior(self, l: int, z_above: Optional[Tensor]):
        """p(z_l | z_{l+1}) (layers indexed 0 = bottom): N(0, I) at the top."""
        if z_above is None:
            return StandardNormal(self.options.latent_dim), None
        t = self.down[l](z_above)
        p = self.priors[l](t)
        d = self.options.latent_dim
        return Normal(p[:, :d], p[:, d:]), t

    def _trunk(self, x: Tensor) -> Tensor:
        """h_1: the encoder without its last layer (784-200-200, tanh)."""
        for i in range(4):
            x = self.encoder[i](x)
        return x

    def run(self, x, rng, top: int, temperature: float, n: Optional[int] = None) -> tuple:
        big_l, ref = self.options.layers, self.decoder[0].weight
        if x is not None and not self.top_down:
            return self._bottom_up(x, rng, top, temperature), None
        features = [self._trunk(x)] if x is not None else []
        for up in (self.up if x is not None else []):
            features.append(up(features[-1]))
        heads = [self.encoder[4], *self.heads]
        layers, z = [], None
        for l in reversed(range(big_l)):
            p, t = self._prior(l, z)
            if big_l - l <= top:
                params = heads[l](features[l]) + (self.merge[l](t) if t is not None else 0.0)
                q = self._posterior(params, l, p)
                z, log_q = _draw(q, rng)
            else:
                q, log_q, z = None, None, _prior_draw(p, n if x is None else x.shape[0], rng, temperature, ref)
            layers.append((z, q, p, log_q))
        return layers, None

    def _bottom_up(self, x: Tensor, rng, top: int, temperature: float) -> list:
        """q(z_1|x) from the encoder and q(z_l | z_{l−1}) above it; then, from the top down,
        the priors, with the layers below the top ``top`` redrawn from them."""
        heads, drawn, h = [self.encoder[4], *self.heads], [], self._trunk(x)
        for l in range(self.options.layers):
            q = self._posterior(heads[l](h if l == 0 else self.up[l - 1](drawn[-1][0])), l, None)
            z, log_q = _draw(q, rng)
            drawn.append((z, q, q.log_prob(z) if log_q is None else log_q))
        layers, z = [], None
        for l in reversed(range(self.options.layers)):
            p = self._prior(l, z)[0]
            if self.options.layers - l <= top:
                z, q, log_q = drawn[l]
            else:
                q, log_q, z = None, None, _prior_draw(p, x.shape[0], rng, temperature, x)
            layers.append((z, q, p, log_q))
        return layers

    def decode(self, z_1: Tensor, state) -> Tensor:
        return self.decoder(z_1)


def _draw(q, rng) -> tuple:
    """(z ~ q by reparameterisation, log q(z) for a flow, else None)."""
    if isinstance(q, IAFNormal):
        z, log_q = q.rsample_and_log_prob(q.noise(rng=rng))
        return z, log_q
    return q.rsample(rng=rng), None


def _prior_draw(p, n: int, rng, temperature: float, ref: Tensor) -> Tensor:
    """z ~ p with its standard deviation scaled by ``temperature`` (N(0, I): [n, dim] with
    ``ref``'s dtype and device)."""
    if isinstance(p, StandardNormal):
        return like(temperature * p.sample(n, rng), ref)
    return p.mu + temperature * F.exp(0.5 * p.logvar) * p.noise(rng=rng)


class ConvLadder(nn.Module):
    """Spatial latents of c channels: layers 1..⌊L/2⌋ on the grid of half the image's side
    (14×14 for MNIST), the rest on a quarter (7×7). Bottom-up: a stride-2 convolution to 14×14,
    a residual block per layer there, a stride-2 convolution to 7×7, a residual block per layer
    there. Top-down from a learned 7×7 state:
    per layer, the prior from the state (N(0, I) at the top), the posterior from [h_l, state]
    (3×3 convolution), then state ← cell(state + 1×1(z_l)), a transposed convolution to 14×14
    where the grid changes, and finally transposed convolutions to the image."""

    def __init__(self, o: HVAEOptions, spec, rng):
        super().__init__()
        ch, c, big_l = o.hidden, o.latent_dim, o.layers
        channels, side, width = spec.shape
        if side % 4 or width % 4:
            raise ValueError(f"--arch conv needs image sides that are multiples of 4, got {side}x{width}")
        self.options = o
        self.fine = big_l // 2                                               # layers on the finer grid
        self.grids = [(side // 2, width // 2) if l < self.fine else (side // 4, width // 4) for l in range(big_l)]
        self.sizes = [c * g * w for g, w in self.grids]
        scaled = 1 / math.sqrt(big_l)
        self.stem = nn.Sequential(nn.Unflatten(1, spec.shape), nn.Conv2d(channels, ch, 4, 2, 1, rng=rng))
        self.up_cells = nn.ModuleList([_scaled(ResidualBlock(ch, rng=rng), scaled) for _ in range(big_l)])
        self.downsample = nn.Conv2d(ch, ch, 4, 2, 1, rng=rng)
        self.start = nn.Parameter(nn.init.filled((1, ch, side // 4, width // 4)))
        self.priors = nn.ModuleList([nn.Conv2d(ch, 2 * c, 1, rng=rng) for _ in range(big_l - 1)])
        self.posteriors = nn.ModuleList([nn.Conv2d(2 * ch, 2 * c, 3, 1, 1, rng=rng) for _ in range(big_l)])
        self.inputs = nn.ModuleList([nn.Conv2d(c, ch, 1, rng=rng) for _ in range(big_l)])
        self.down_cells = nn.ModuleList([_scaled(ResidualBlock(ch, rng=rng), scaled) for _ in range(big_l)])
        self.upsample = nn.ConvTranspose2d(ch, ch, 4, 2, 1, rng=rng)
        to_14 = [] if self.fine else [nn.ConvTranspose2d(ch, ch, 4, 2, 1, rng=rng)]      # L = 1: from 7×7
        self.out = nn.Sequential(*to_14, nn.ReLU(), nn.ConvTranspose2d(ch, channels, 4, 2, 1, rng=rng), nn.Flatten())

    def bottom_up_weights(self) -> list:
        modules = [self.stem, self.up_cells, self.downsample]
        return [m.weight for part in modules for _, m in part.named_modules() if isinstance(m, nn.Conv2d)]

    def run(self, x, rng, top: int, temperature: float, n: Optional[int] = None) -> tuple:
        o, c, big_l = self.options, self.options.latent_dim, self.options.layers
        features = []
        if x is not None:
            h = self.stem(x)
            for l in range(big_l):
                if l == self.fine:
                    h = self.downsample(F.relu(h))
                h = self.up_cells[l](h)
                features.append(h)
            n = x.shape[0]
        state = F.broadcast_to(self.start, n, *self.start.shape[1:])
        layers = []
        for l in reversed(range(big_l)):
            if l == self.fine - 1:
                state = self.upsample(F.relu(state))
            g = self.grids[l]
            if l == big_l - 1:
                p = StandardNormal(self.sizes[l])
            else:
                params = F.reshape(self.priors[l](state), n, 2, -1)
                p = Normal(params[:, 0], params[:, 1])
            if big_l - l <= top:
                params = F.reshape(self.posteriors[l](F.concat([features[l], state], axis=1)), n, 2, -1)
                mu, logvar = params[:, 0], params[:, 1]
                if o.residual and isinstance(p, Normal):
                    mu, logvar = p.mu + mu, p.logvar + logvar
                q = Normal(mu, logvar)
                z = q.rsample(rng=rng)
            else:
                q, z = None, _prior_draw(p, n, rng, temperature, state)
            layers.append((z, q, p, None))
            state = self.down_cells[l](state + self.inputs[l](F.reshape(z, n, c, *g)))
        return layers, state

    def decode(self, z_1: Tensor, state) -> Tensor:
        return self.out(state)


def _scaled(block: ResidualBlock, factor: float) -> ResidualBlock:
    """The block with its last convolution's weights scaled (VD-VAE: 1/√L keeps the top-down
    sum of L residual cells from growing with depth at initialisation)."""
    nn.init.scale_(block.body[-1].weight, factor)
    return block
