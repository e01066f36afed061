"""VQ-GAN (textbook 21.6.6; Esser et al. 2021): the VQ-VAE (models/vqvae.py) trained with a
patch discriminator D (pix2pix's PatchGAN: one logit per patch) from step ``--disc-start`` on.
Two parameter groups with their own optimizers and losses:

  model          L_rec + L_VQ + w_f·L_feat + λ·L_GAN,   L_GAN = −mean D(x̂)
  discriminator  ½ [mean relu(1 − D(x)) + mean relu(1 + D(sg(x̂)))]          (hinge)

with the adaptive weight (Esser et al. eq. 7) taken at the decoder's last layer W_L,

  λ = w_d · clamp(‖∇_{W_L}(L_rec + w_f·L_feat)‖ / (‖∇_{W_L} L_GAN‖ + 1e-4), 0, --max-adaptive-weight)

held constant in the step (sg). Before --disc-start, D is neither used nor stepped.

The paper's perceptual loss (LPIPS) needs pretrained VGG weights that cannot be downloaded
here; L_feat stands in for it: Σ_l mean |φ_l(x) − φ_l(x̂)| over the discriminator's hidden
features φ_l (feature matching, Salimans et al. 2016; Larsen et al. 2016). ``feature_network``
is the hook: set it to any callable from images [N, C, H, W] to a list of feature maps
(LPIPS's, with its weights) and L_feat uses that instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import functional as F
from .. import grad, nn
from ..autograd import enable_grad
from ..options import option
from ..tensor import Tensor
from .base import StepContext
from .registry import register
from .vqvae import VQVAE, VQVAEOptions


@dataclass
class VQGANOptions(VQVAEOptions):
    disc_channels: int = option(64, "channels of the patch discriminator's first layer", minimum=1)
    disc_start: int = option(2000, "step from which the discriminator trains and the adversarial term counts",
                             minimum=0)
    disc_weight: float = option(0.8, "weight w_d on the adaptive weight λ of the adversarial term", minimum=0.0)
    max_adaptive_weight: float = option(1e4, "clamp of the adaptive weight's gradient-norm ratio", minimum=0.0)
    feature_weight: float = option(1.0, "weight w_f of the feature-matching term (the perceptual loss's "
                                   "stand-in; 0: none)", minimum=0.0)


class PatchDiscriminator(nn.Module):
    """Images [N, C, H, W] → patch logits [N, 1, H/4, W/4]: two stride-2 4×4 convolutions with
    LeakyReLU(0.2), then a 3×3 to one logit per patch; ``features`` gives the hidden maps."""

    def __init__(self, channels: int, width: int, rng=None):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, width, 4, 2, 1, rng=rng), nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Conv2d(width, 2 * width, 4, 2, 1, rng=rng), nn.LeakyReLU(0.2))])
        self.head = nn.Conv2d(2 * width, 1, 3, 1, 1, rng=rng)

    def features(self, x: Tensor) -> list:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)[-1])


@register
class VQGAN(VQVAE):
    name = "vqgan"
    description = "VQ-VAE with a patch discriminator (hinge loss), adaptive weight and feature matching"
    section = "21.6.6"
    Options = VQGANOptions

    def __init__(self, options: VQGANOptions, spec, rng=None):
        super().__init__(options, spec, rng)
        self.discriminator = PatchDiscriminator(spec.shape[0], options.disc_channels, rng)
        # the perceptual stand-in's features; replace with LPIPS's to use the paper's loss
        self.feature_network = self.discriminator.features
        # the VQ-VAE's estimates, and the decoder's gradient with λ held constant
        self.straight_through = ("encoder.", "quantizer.", "decoder.")

    def param_groups(self) -> dict:
        return self.groups_apart(discriminator=self.discriminator)

    def _images(self, out: Tensor) -> Tensor:
        """The decoder's output as images [N, C, H, W] of pixel means (what D sees)."""
        means = F.sigmoid(out) if self.options.likelihood == "bernoulli" else out
        return means.reshape(-1, *self.spec.shape)

    def adaptive_weight(self, rec: Tensor, gan: Tensor) -> float:
        """λ = w_d · clamp(‖∇_{W_L} rec‖ / (‖∇_{W_L} gan‖ + 1e-4), 0, max) at the decoder's
        last layer W_L, as a number (held constant in the step)."""
        last = self.decoder[-2].weight
        g_rec, g_gan = grad(rec, [last], retain_graph=True)[0], grad(gan, [last], retain_graph=True)[0]
        ratio = float(F.sqrt(F.sum(g_rec * g_rec)).item()) / (float(F.sqrt(F.sum(g_gan * g_gan)).item()) + 1e-4)
        return self.options.disc_weight * min(max(ratio, 0.0), self.options.max_adaptive_weight)

    @enable_grad()      # λ needs the graph even where the caller records none (gradcheck's probes)
    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o, x = self.options, batch["x"]
        out, vqs, terms = self._terms(x, ctx)
        real, fake = x.reshape(-1, *self.spec.shape), self._images(out)
        rec = F.mean(terms["rec"])
        if o.feature_weight:
            gaps = [F.mean(F.abs(a - b)) for a, b in zip(self.feature_network(real), self.feature_network(fake))]
            feat = sum(gaps[1:], gaps[0])
            rec = rec + o.feature_weight * feat
            terms["feature_matching"] = float(feat.item())
        model_loss = rec + sum((vq.loss for vq in vqs[1:]), vqs[0].loss)
        if ctx.step < o.disc_start:
            return {"loss": {"model": model_loss}, **terms}
        gan = -F.mean(self.discriminator(fake))
        weight = self.adaptive_weight(rec, gan)
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())
        hinge = 0.5 * (F.mean(F.relu(1 - d_real)) + F.mean(F.relu(1 + d_fake)))
        return {"loss": {"model": model_loss + weight * gan, "discriminator": hinge}, **terms,
                "adaptive_weight": weight, "d_real": float(F.mean(d_real).item()),
                "d_fake": float(F.mean(d_fake).item())}
