"""Training and evaluation loops behind the ``tinyvae`` command.

One seeded NumPy generator drives everything random in training (shuffling, dynamic
binarization, reparameterisation noise); its state is saved in every checkpoint with the
model and optimizer, so ``resume`` continues exactly where an uninterrupted run would be.
Evaluation draws from generators seeded by (seed, epoch), so it never disturbs training.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np

from . import backend, checkpoint, data, objectives, optim
from .autograd import no_grad
from .models import AE, VAE, build
from .tensor import tensor
from .viz import image_grid, save_png

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, incompatible checkpoint, ...)."""


@dataclass
class Config:
    model: str = "mlp"              # mlp | conv | ae (the mlp network as a deterministic autoencoder)
    dataset: str = "mnist"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"   # constant | iwae (the IWAE paper's 8 stages over 3280 epochs)
    beta: float = 1.0
    kl_anneal: str = "none"         # none | linear | cyclical
    warmup_steps: int = 10000       # linear warm-up length / cyclical cycle length, in steps
    free_bits: float = 0.0
    iwae_k: int = 1                 # training objective: ELBO if 1, the IWAE bound with k samples if > 1
    latent_dim: Optional[int] = None
    seed: int = 0
    device: str = "cpu"
    train_size: Optional[int] = None   # use the first N training images (smoke tests)
    test_size: Optional[int] = None
    data_dir: Optional[str] = None

    def validate(self) -> None:
        if self.model not in ("mlp", "conv", "ae"):
            raise ValueError(f"unknown model {self.model!r}; expected mlp, conv or ae")
        if self.dataset not in data.DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected {' or '.join(data.DATASETS)}")
        for name in ("epochs", "batch_size", "iwae_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.beta < 0 or self.free_bits < 0:
            raise ValueError("--lr must be positive, --beta and --free-bits non-negative")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown --lr-schedule {self.lr_schedule!r}; expected {' or '.join(LR_SCHEDULES)}")
        if self.kl_anneal not in ("none", "linear", "cyclical"):
            raise ValueError(f"unknown --kl-anneal {self.kl_anneal!r}; expected none, linear or cyclical")
        if self.device not in backend.DEVICES:
            raise ValueError(f"unknown device {self.device!r}; expected cpu or cuda")
        if self.device == "cuda" and not backend.cuda_available():
            raise ValueError("--device cuda needs CuPy and a CUDA GPU; none is available here")


LR_SCHEDULES = ("constant", "iwae")


def lr_schedule(config: Config, steps_per_epoch: int):
    """Step number → multiplier of --lr."""
    return optim.IWAEStages(steps_per_epoch) if config.lr_schedule == "iwae" else optim.Constant()


def make_model(config: Config, rng=None) -> VAE:
    preset = "mlp" if config.model == "ae" else config.model
    return (AE if config.model == "ae" else VAE)(preset, config.latent_dim, rng)


def load_pixels(config: Config, split: str) -> np.ndarray:
    images, _ = data.load(config.dataset, split, config.data_dir)
    limit = config.train_size if split == "train" else config.test_size
    return data.to_unit_interval(images[:limit] if limit else images)


@no_grad()
def evaluate(model: VAE, pixels: np.ndarray, rng: np.random.Generator, batch_size: int = 500,
             iwae_k: int = 0, device: str = "cpu") -> dict:
    """Test-set averages (nats per example): ELBO, reconstruction, KL, IWAE_k, active units.
    The test images are binarized once with ``rng``. The model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    binary = data.binarize(pixels, rng)
    sums = {"elbo": 0.0, "recon": 0.0, "kl": 0.0, "iwae": 0.0}
    mus = []
    for idx in data.batches(len(binary), batch_size, rng, shuffle=False):
        x = tensor(binary[idx], device=device)
        terms = objectives.elbo_terms(model, x, rng, deterministic=model.deterministic)
        for key in ("elbo", "recon", "kl"):
            sums[key] += float(terms[key].sum().item())
        mus.append(backend.to_device(terms["mu"].data, "cpu"))
        if iwae_k:
            sums["iwae"] += float(objectives.iwae_bound(model, x, iwae_k, rng).sum().item())
    n = len(binary)
    out = {f"test_{k}": v / n for k, v in sums.items() if k != "iwae"}
    if iwae_k:
        out["test_nll_iwae"] = -sums["iwae"] / n
        out["iwae_k"] = iwae_k
    out["active_units"] = objectives.active_units(np.concatenate(mus))
    model.train(was_training)
    return out


def train(config: Config, out_dir: str, resume: bool = False, progress: bool = True, log=print) -> list:
    """Train, appending one JSON line per epoch to out_dir/metrics.jsonl and writing a checkpoint
    (atomically) and sample/reconstruction PNGs after every epoch. Returns the epoch metrics."""
    config.validate()
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    model = make_model(config, rng).to(config.device)
    opt = optim.Adam(model.parameters(), lr=config.lr)
    start_epoch, step = 1, 0
    metrics_path = os.path.join(out_dir, METRICS)
    if resume:
        start_epoch, step = _restore(out_dir, config, model, opt, rng)
    elif os.path.exists(metrics_path):
        os.remove(metrics_path)    # a fresh run starts a fresh log
    train_pixels = load_pixels(config, "train")
    test_pixels = load_pixels(config, "test")
    schedule = lr_schedule(config, -(-len(train_pixels) // config.batch_size))
    history = []
    for epoch in range(start_epoch, config.epochs + 1):
        t0 = time.perf_counter()
        totals, count = {"loss": 0.0, "recon": 0.0, "kl": 0.0}, 0
        batches = list(data.batches(len(train_pixels), config.batch_size, rng))
        bar = _progress(batches, epoch, config.epochs, progress)
        for idx in bar:
            x = tensor(data.binarize(train_pixels[idx], rng), device=config.device)
            weight = 0.0 if model.deterministic else objectives.kl_weight(
                config.kl_anneal, step, config.beta, config.warmup_steps)
            if config.iwae_k > 1 and not model.deterministic:
                loss = -objectives.iwae_bound(model, x, config.iwae_k, rng).mean()
                terms = objectives.elbo_terms(model, x, rng)          # for reporting only
            else:
                terms = objectives.elbo_terms(model, x, rng, deterministic=model.deterministic)
                loss = objectives.training_loss(terms, weight, config.free_bits)
            value = loss.item()
            if not math.isfinite(value):
                kept = (f"the last good checkpoint (epoch {epoch - 1}) is intact in {out_dir}" if epoch > 1
                        else "no checkpoint was written")
                raise TrainingError(f"loss became non-finite ({value}) at epoch {epoch}, step {step + 1}; "
                                    f"training stopped and {kept}")
            opt.zero_grad()
            loss.backward()
            opt.lr = config.lr * schedule(step)
            opt.step()
            step += 1
            n = len(idx)
            count += n
            totals["loss"] += value * n
            totals["recon"] += float(terms["recon"].data.sum())
            totals["kl"] += float(terms["kl"].data.sum())
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.2f}", recon=f"{totals['recon'] / count:.2f}",
                                kl=f"{totals['kl'] / count:.2f}", refresh=False)
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch, "step": step, "train_loss": totals["loss"] / count,
                  "train_recon": totals["recon"] / count, "train_kl": totals["kl"] / count,
                  "kl_weight": weight, "lr": opt.lr, "seconds": seconds}
        record.update(evaluate(model, test_pixels, np.random.default_rng([config.seed, epoch]),
                               device=config.device))
        history.append(record)
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        _save(out_dir, config, model, opt, rng, epoch, step)
        write_pictures(model, test_pixels, out_dir, np.random.default_rng([config.seed, epoch, 1]))
        log(f"epoch {epoch}/{config.epochs}: loss {record['train_loss']:.2f}  test ELBO {record['test_elbo']:.2f}  "
            f"recon {record['test_recon']:.2f}  KL {record['test_kl']:.2f}  ({seconds:.1f}s)")
    return history


def _progress(batches, epoch, epochs, enabled):
    if not enabled:
        return batches
    from tqdm import tqdm
    return tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, disable=None)


def _save(out_dir, config, model, opt, rng, epoch, step) -> None:
    checkpoint.save(os.path.join(out_dir, CHECKPOINT), {
        "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
        "rng": rng.bit_generator.state, "config": asdict(config), "model_config": model.config()})


def load_checkpoint(run_dir: str) -> dict:
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(path):
        raise TrainingError(f"no checkpoint in {run_dir} (expected {path}); train with --out {run_dir} first")
    return checkpoint.load(path)


def load_model(run_dir: str, device: str = "cpu"):
    """(model, config) of a trained run, in eval mode."""
    state = load_checkpoint(run_dir)
    model = build(state["model_config"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), Config(**{f.name: state["config"][f.name] for f in fields(Config)
                                              if f.name in state["config"]})


def _restore(out_dir, config, model, opt, rng) -> tuple:
    state = load_checkpoint(out_dir)
    saved = state["config"]
    for key in ("model", "dataset", "latent_dim", "batch_size", "seed", "train_size", "lr_schedule"):
        trained = saved.get(key, getattr(Config, key))      # options newer than a checkpoint: their default
        if trained != getattr(config, key):
            raise TrainingError(f"cannot resume: the checkpoint in {out_dir} was trained with "
                                f"{key}={trained!r}, this run asks for {getattr(config, key)!r}")
    if state["model_config"] != model.config():
        raise TrainingError(f"cannot resume: the checkpoint in {out_dir} holds a {state['model_config']} model")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng"]
    if state["epoch"] >= config.epochs:
        raise TrainingError(f"nothing to resume: {out_dir} already has {state['epoch']} epochs; "
                            f"ask for more with --epochs")
    return int(state["epoch"]) + 1, int(state["step"])


# ---- pictures -------------------------------------------------------------------------------

@no_grad()
def decode_means(model, z: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    probs = model.decode(tensor(z.astype(np.float32), device=device)).mean
    return backend.to_device(probs.data, "cpu").reshape(-1, 28, 28)


@no_grad()
def encode_means(model, pixels: np.ndarray) -> np.ndarray:
    device = next(model.parameters()).device
    return backend.to_device(model.encode(tensor(pixels, device=device)).mu.data, "cpu")


def sample_picture(model, n: int, rng) -> np.ndarray:
    """Decoded means of z ~ N(0, I)."""
    return image_grid(decode_means(model, rng.standard_normal((n, model.latent_dim))), columns=int(math.ceil(n ** 0.5)))


def reconstruction_picture(model, pixels: np.ndarray, n: int = 32, columns: int = 8) -> np.ndarray:
    """Rows in pairs: originals, then their reconstructions. ``n`` is rounded up to whole rows,
    so each original sits directly above its reconstruction."""
    n = min(columns * -(-n // columns), len(pixels))
    originals = pixels[:n].reshape(-1, 28, 28)
    recon = decode_means(model, encode_means(model, pixels[:n]))
    tiles = []
    for r in range(0, len(originals), columns):
        tiles += list(originals[r:r + columns]) + list(recon[r:r + columns])
    return image_grid(np.stack(tiles), columns)


def manifold_picture(model, pixels: np.ndarray, n: int = 20, span: float = 2.5) -> tuple:
    """Decoded grid over two latent axes in [−span, span]; other axes at 0. For latents wider than
    two, the axes are the two with the largest posterior-mean variance on ``pixels``."""
    if model.latent_dim == 2:
        axes = (0, 1)
    else:
        axes = tuple(int(a) for a in np.argsort(-np.var(encode_means(model, pixels[:2000]), axis=0))[:2])
    ticks = np.linspace(-span, span, n)
    z = np.zeros((n * n, model.latent_dim))
    z[:, axes[0]] = np.tile(ticks, n)
    z[:, axes[1]] = np.repeat(ticks[::-1], n)
    return image_grid(decode_means(model, z), columns=n), axes


def interpolation_picture(model, pixels: np.ndarray, pairs: int = 8, steps: int = 10, rng=None) -> np.ndarray:
    """Each row: a straight line in latent space between the means of two test images."""
    rng = rng or np.random.default_rng(0)
    picks = rng.choice(len(pixels), 2 * pairs, replace=False)
    mus = encode_means(model, pixels[picks])
    t = np.linspace(0, 1, steps)[None, :, None]
    z = (1 - t) * mus[0::2, None, :] + t * mus[1::2, None, :]
    return image_grid(decode_means(model, z.reshape(-1, model.latent_dim)), columns=steps)


def write_pictures(model, test_pixels, out_dir, rng) -> None:
    was_training = model.training
    model.eval()
    save_png(os.path.join(out_dir, "samples.png"), sample_picture(model, 64, rng))
    save_png(os.path.join(out_dir, "reconstructions.png"), reconstruction_picture(model, test_pixels))
    model.train(was_training)
