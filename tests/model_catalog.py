"""Every registered model, built small: the options of each tiny instance the generated tests
in test_model_catalog.py check. A family that is registered but missing here fails
``test_every_registered_model_is_in_the_catalog``; adding its entries gives it every test."""
import numpy as np

from tinyvae import data, models, smiles
from tinyvae.data import DataSpec

# the parents second-stage families are built on (and trained, for the run tests), by name; a
# catalog entry "family@parent" is that family on that parent
PARENTS = {"vqvae": {"num_codes": 6, "code_dim": 3, "hidden": 4, "codebook_init": "uniform"},
           "vqvae2": {"num_codes": 5, "code_dim": 2, "hidden": 3, "codebook_init": "uniform"},
           "dvae": {"num_codes": 4, "code_dim": 2, "hidden": 3}}

# (model name, options): each family in each of its architectures, latent kept small
MODELS = [
    ("vae", {"arch": "mlp", "latent_dim": 3}),
    ("vae", {"arch": "conv", "latent_dim": 3}),
    ("vae", {"arch": "mlp", "latent_dim": 2, "iwae_k": 3}),
    ("vae", {"arch": "mlp", "latent_dim": 2, "beta": 0.5, "kl_anneal": "linear", "warmup_steps": 4,
             "free_bits": 0.2}),
    ("skip-vae", {"arch": "mlp", "latent_dim": 3, "beta": 2.0}),
    ("skip-vae", {"arch": "conv", "latent_dim": 3}),
    ("info-vae", {"arch": "mlp", "latent_dim": 3}),
    ("info-vae", {"arch": "conv", "latent_dim": 2, "alpha": 0.5, "lam": 10.0, "kernel": "rbf"}),
    ("vae", {"arch": "mlp", "latent_dim": 3, "posterior": "full"}),
    ("vae", {"arch": "conv", "latent_dim": 3, "posterior": "full", "iwae_k": 3}),
    ("vae", {"arch": "mlp", "latent_dim": 3, "posterior": "iaf", "iaf_hidden": 5, "iaf_steps": 3}),
    ("vae", {"arch": "conv", "latent_dim": 2, "posterior": "iaf", "iaf_hidden": 4, "iwae_k": 3}),
    ("vae", {"arch": "mlp", "latent_dim": 3, "posterior": "vmf", "kappa": 5.0}),
    ("vae", {"arch": "conv", "latent_dim": 4, "posterior": "vmf", "iwae_k": 3}),
    ("info-vae", {"arch": "mlp", "latent_dim": 3, "posterior": "vmf", "kappa": 10.0, "lam": 10.0}),
    ("hvae", {"latent_dim": 2, "hidden": 4, "layers": 2}),
    ("hvae", {"latent_dim": 2, "hidden": 3, "layers": 3, "inference": "bottom-up", "residual": False}),
    ("hvae", {"latent_dim": 2, "hidden": 3, "layers": 2, "iaf_steps": 1, "spectral": 0.1}),
    ("hvae", {"arch": "conv", "latent_dim": 1, "hidden": 2, "layers": 2, "spectral": 0.5}),
    ("hvae", {"arch": "conv", "latent_dim": 1, "hidden": 2, "layers": 3, "residual": False}),
    ("m2", {"labels": 2, "hidden": 5, "latent_dim": 2}),
    ("m2", {"labels": 3, "alpha": 0.5, "hidden": 4, "latent_dim": 3, "labelled_share": 0.5}),
    ("mvae", {"arch": "mlp", "latent_dim": 3}),
    ("mvae", {"arch": "mlp", "latent_dim": 2, "scored": "all"}),
    ("mvae", {"arch": "conv", "latent_dim": 2, "label_weight": 5.0, "label_hidden": 4}),
    ("miwae", {"arch": "mlp", "latent_dim": 3, "iwae_k": 3, "impute_k": 4}),
    ("miwae", {"arch": "conv", "latent_dim": 2, "missing": "top-half", "bound": "zero-filled", "iwae_k": 1}),
    ("miwae", {"arch": "mlp", "latent_dim": 2, "posterior": "iaf", "iaf_hidden": 4, "missing_rate": 0.3}),
    ("aae", {"arch": "mlp", "latent_dim": 3, "disc_hidden": 5}),
    ("aae", {"arch": "conv", "latent_dim": 2, "disc_hidden": 4, "adversarial_weight": 0.5}),
    ("ae", {"arch": "mlp", "latent_dim": 3}),
    ("ae", {"arch": "conv", "latent_dim": 3}),
    ("ae", {"arch": "mlp", "latent_dim": 2, "code_penalty": 0.0}),
    ("binary-ae", {"bits": 5}),
    ("binary-ae", {"arch": "conv", "bits": 4, "estimator": "relaxed", "tau": 2.0}),
    ("dvae", {"num_codes": 6, "code_dim": 3, "hidden": 4, "kl_warmup_steps": 2}),
    ("dvae", {"num_codes": 5, "code_dim": 2, "hidden": 4, "estimator": "straight-through", "sigma": 0.5}),
    ("gumbel-vae", {"variables": 3, "classes": 4}),
    ("gumbel-vae", {"arch": "conv", "variables": 2, "classes": 3, "estimator": "straight-through",
                    "anneal_rate": 0.1, "anneal_every": 1}),
    ("vqvae", {"num_codes": 8, "code_dim": 3, "hidden": 4, "codebook": "loss", "codebook_init": "uniform"}),
    ("vqvae", {"num_codes": 8, "code_dim": 3, "hidden": 4, "dead_code_steps": 2}),
    ("vqvae", {"num_codes": 6, "code_dim": 2, "hidden": 4, "likelihood": "bernoulli", "codebook": "loss",
               "dead_code_steps": 1}),
    ("vqvae2", {"num_codes": 8, "code_dim": 3, "hidden": 4, "codebook": "loss", "codebook_init": "uniform"}),
    ("vqvae2", {"num_codes": 8, "code_dim": 2, "hidden": 4, "dead_code_steps": 1}),
    ("vqgan", {"num_codes": 8, "code_dim": 3, "hidden": 4, "codebook_init": "uniform", "disc_channels": 3,
               "disc_start": 0}),
    ("vqgan", {"num_codes": 6, "code_dim": 2, "hidden": 4, "disc_channels": 2, "disc_start": 1000,
               "feature_weight": 0.0}),
    ("pixelcnn-prior@vqvae", {"channels": 4, "blocks": 2}),
    ("pixelcnn-prior@vqvae", {"channels": 3, "blocks": 3, "kernel": 5, "conditional": "class"}),
    ("pixelcnn-prior@vqvae2", {"channels": 3, "blocks": 2, "conditional": "class"}),
    ("pixelcnn-prior@dvae", {"channels": 3, "blocks": 2}),
    ("seq-vae", {"embed_dim": 2, "hidden": 3, "latent_dim": 2}),
    ("seq-vae", {"embed_dim": 3, "hidden": 2, "latent_dim": 3, "word_dropout": 0.3, "free_bits": 0.1,
                 "kl_anneal": "cyclical", "warmup_steps": 3}),
    ("seq-vae", {"embed_dim": 2, "hidden": 2, "latent_dim": 2, "aggressive": True, "aggressive_inner": 2}),
]

# a small image data set for the gradient checks (the conv networks need sides divisible by 4),
# and token sequences of at most 7 SMILES tokens and <eos>
TINY_IMAGES = DataSpec("tiny", (1, 8, 8), "images", 10)
TINY_TOKENS = DataSpec("tiny-tokens", (8,), "tokens", None, smiles.VOCABULARY)


def spec_of(name) -> DataSpec:
    """The tiny data set a catalog entry's family reads."""
    return TINY_TOKENS if "tokens" in models.get(family(name)[0]).data_kinds else TINY_IMAGES


def tiny_split(spec=TINY_IMAGES, n=12, seed=0) -> data.Split:
    """n random examples: pixels in [0, 1], or token ids of 1..T−1 atoms, <eos> and pads."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    if spec.kind == "images":
        return data.Split(spec, rng.random((n, spec.size)).astype(np.float32), labels)
    atoms = [text for text in spec.vocabulary if text not in smiles.SPECIAL]
    strings = ["".join(rng.choice(atoms, rng.integers(1, spec.shape[0]))) for _ in range(n)]
    return data.Split(spec, smiles.encode(strings, spec.vocabulary, spec.shape[0]), 0 * labels)


def family(name):
    """The registered family of a catalog entry's name, and its parent's name (or None)."""
    family, _, parent = name.partition("@")
    return family, parent or None


def build(name, options, seed, spec=None):
    """The model of a catalog entry (with its parent, built from a related seed, if it needs one)."""
    spec = spec or spec_of(name)
    name, parent_name = family(name)
    parent = None
    if parent_name:
        parent = models.build(parent_name, PARENTS[parent_name], spec, np.random.default_rng(seed + 100))
    return models.build(name, options, spec, np.random.default_rng(seed), parent)


def ids():
    return [f"{name}-" + "-".join(f"{k}={v}" for k, v in options.items()) for name, options in MODELS]
