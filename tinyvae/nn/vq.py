"""Vector quantisation layer (VQ-VAE, van den Oord et al. 2017).

For encoder outputs z_e and the nearest codes e = e_{k(n)}, k(n) = argmin_k ‖z_e,n − e_k‖²:

  quantized   = z_e + sg(e − z_e)         (value e; straight-through gradient to z_e)
  codebook    = ‖sg(z_e) − e‖²            (moves codes toward encoder outputs; mean over elements)
  commitment  = β ‖z_e − sg(e)‖²          (keeps the encoder near its codes)

With ``ema=True`` the codebook is not learned by gradient: each training step sets
  N_k ← γ N_k + (1 − γ) n_k,   m_k ← γ m_k + (1 − γ) Σ_{n: k(n)=k} z_e,n,
  e_k = m_k / Ñ_k   with Laplace-smoothed counts Ñ_k = (N_k + ε) / (Σ N + Kε) · Σ N
and the loss is the commitment term alone. Codes unused for ``dead_code_threshold``
training steps are restarted from random encoder outputs of the current batch.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from kernels import vq as _vq

from .. import backend
from .. import functional as F
from ..random import get_rng
from ..tensor import Tensor
from . import init
from .module import Module, Parameter


class VQOutput(NamedTuple):
    quantized: Tensor          # same shape as the input
    loss: Tensor               # codebook + commitment (commitment only with EMA)
    codebook_loss: Tensor
    commitment_loss: Tensor
    indices: object            # integer array, the input's shape without the code axis
    perplexity: float          # exp(entropy of code usage in this batch)
    usage: float               # fraction of codes used in this batch


class VectorQuantizer(Module):
    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 eps: float = 1e-5, dead_code_threshold: Optional[int] = None, rng=None):
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer: num_codes and dim must be positive, got {num_codes}, {dim}")
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.rng = rng
        codebook = Parameter(init.filled((num_codes, dim)))
        init.uniform_(codebook, -1 / num_codes, 1 / num_codes, rng)
        if ema:
            self.register_buffer("codebook", codebook.data)
            self.register_buffer("ema_count", init.filled(num_codes, 1.0))
            self.register_buffer("ema_sum", init.copied(codebook.data))
        else:
            self.codebook = codebook
        self.register_buffer("unused_steps", init.filled(num_codes, 0, np.int64))

    def _codes(self) -> Tensor:
        """The codebook as a tensor: the parameter, or one tensor over the EMA buffer (kept, so
        its version counts the EMA updates; made anew when the buffer is replaced)."""
        if not self.ema:
            return self.codebook
        view = self.__dict__.get("_ema_codes")
        if view is None or view.data is not self.codebook:
            view = Tensor(self.codebook)
            object.__setattr__(self, "_ema_codes", view)
        return view

    def forward(self, z_e: Tensor, rng=None) -> VQOutput:
        """``rng``: the generator dead-code restarts draw from (default: the layer's own), so a
        trainer can pass its run's generator and a resumed run restarts the same codes."""
        channels_first = z_e.ndim == 4
        if z_e.shape[1 if channels_first else -1] != self.dim or z_e.ndim not in (2, 4):
            raise ValueError(f"VectorQuantizer(dim={self.dim}): expected [N, {self.dim}] or [B, {self.dim}, H, W], "
                             f"got shape {z_e.shape}")
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.dim) if channels_first else z_e
        codes = self._codes()
        index, _ = _vq.nearest(flat.data, codes.data.astype(flat.dtype, copy=False))
        xp = backend.array_module(index)
        counts = xp.bincount(index, minlength=self.num_codes)
        if self.training:
            self._track_usage(counts, flat.data, rng)
            if self.ema:
                self._ema_step(flat.data, index)
                codes = self._codes()
        e = F.embedding(index, codes)
        commitment = self.beta * F.mse_loss(flat, e.detach())
        codebook_loss = F.mse_loss(flat.detach(), e) if not self.ema else Tensor(xp.zeros((), flat.dtype))
        quantized = flat + (e - flat).detach()
        if channels_first:
            b, _, h, w = z_e.shape
            quantized = quantized.reshape(b, h, w, self.dim).permute(0, 3, 1, 2)
            index = index.reshape(b, h, w)
        p = counts / max(len(flat), 1)
        entropy = -float((p[p > 0] * xp.log(p[p > 0])).sum())
        return VQOutput(quantized, codebook_loss + commitment if not self.ema else commitment, codebook_loss,
                        commitment, index, float(np.exp(entropy)), float((counts > 0).mean()))

    def _ema_step(self, flat, index) -> None:
        counts, sums = _vq.ema_update(flat, index, self.num_codes)
        g = self.decay
        self.ema_count[...] = g * self.ema_count + (1 - g) * counts
        self.ema_sum[...] = g * self.ema_sum + (1 - g) * sums
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.num_codes * self.eps) * total
        self.codebook[...] = self.ema_sum / smoothed[:, None]
        self._codes().mark_written()

    def _track_usage(self, counts, flat, rng=None) -> None:
        """Count steps since each code was last used; restart codes past the threshold. The
        bookkeeping runs on the CPU (K numbers); ``unused_steps`` stays on the layer's device."""
        steps = backend.to_device(self.unused_steps, "cpu").copy()
        used = backend.to_device(counts, "cpu") > 0
        steps[used] = 0
        steps[~used] += 1
        dead = np.flatnonzero(steps >= self.dead_code_threshold) if self.dead_code_threshold else []
        if len(dead):
            rows = get_rng(rng if rng is not None else self.rng).integers(0, len(flat), len(dead))
            codes = self.codebook_array()
            device = backend.device_of(codes)
            fresh = backend.to_device(backend.to_device(flat, "cpu")[rows], device).astype(codes.dtype)
            dead_on_device = backend.to_device(dead, device)
            codes[dead_on_device] = fresh
            self._codes().mark_written()
            if self.ema:
                self.ema_sum[dead_on_device] = fresh
                self.ema_count[dead_on_device] = 1
            steps[dead] = 0
        self.unused_steps[...] = backend.to_device(steps, backend.device_of(self.unused_steps))

    def codebook_array(self):
        """The codebook's array (a buffer with EMA, a parameter's data otherwise)."""
        return self.codebook if self.ema else self.codebook.data

    def set_codebook(self, codes) -> None:
        """Replace every code; with EMA, also restart the running sums so e_k = m_k / N_k holds."""
        codes = backend.to_device(np.asarray(codes, dtype=self.codebook_array().dtype), "cpu")
        if codes.shape != (self.num_codes, self.dim):
            raise ValueError(f"set_codebook: expected shape {(self.num_codes, self.dim)}, got {codes.shape}")
        target = self.codebook_array()
        target[...] = backend.to_device(codes, backend.device_of(target))
        self._codes().mark_written()
        if self.ema:
            self.ema_count[...] = 1
            self.ema_sum[...] = target

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, beta={self.beta}, ema={self.ema}"
