"""Model families, one file each, registered by name (``registry``); the interface they
implement is ``base.Model``. Importing this package registers every family."""
from . import aae, ae, binary_ae, dvae, gumbel_vae, hvae, info_vae, m2, miwae, mvae, pixelcnn_prior, seq_vae, skip_vae, vae, vqgan, vqvae, vqvae2  # noqa: F401  (registers them)
from .base import CAPABILITIES, Model, StepContext
from .registry import ALIASES, build, check_data, checked_options, get, names, register, resolve
from .vae import VAE
from .ae import AE

__all__ = ["Model", "StepContext", "CAPABILITIES", "register", "get", "names", "build", "check_data", "checked_options", "resolve",
           "ALIASES", "VAE", "AE"]
