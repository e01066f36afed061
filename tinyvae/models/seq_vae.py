"""A sequence VAE over SMILES strings (textbook 21.3.5; Bowman et al. 2016, and for molecules
Gómez-Bombarelli et al. 2018): a GRU reads the tokens into q(z|x) = N(μ, e^ℓ), and a GRU
decoder, its first state tanh(W z + b) and z beside every input token, gives

  log p(x|z) = Σ_t log p(x_t | x_<t, z)      (teacher forcing: the decoder reads x_<t)

over the tokens and the final <eos> (``smiles``). Posterior collapse, the decoder learning to
ignore z, is fought with the chapter's three tools (21.4): the KL weight annealed from 0
(``--kl-anneal``), word dropout (``--word-dropout``: a share of the decoder's input tokens
replaced by <unk>, so it must lean on z; Bowman et al.), free bits, and He et al. 2019's
aggressive inference-network training (``--aggressive``, 21.4.5): while the mutual information
I_q(x; z) still rises from one epoch to the next, the encoder alone is updated on
``--aggressive-inner`` batches before each decoder update; after, both together.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend, objectives, smiles
from .. import functional as F
from .. import nn
from ..autograd import no_grad
from ..distributions import Normal, StandardNormal, like, sample_and_kl
from ..options import option
from ..tensor import Tensor
from .base import Model, StepContext
from .registry import register


@dataclass
class SeqVAEOptions:
    embed_dim: int = option(32, "token embedding size (the encoder and the decoder have one each)", minimum=1)
    hidden: int = option(256, "GRU state size of the encoder and the decoder", minimum=1)
    latent_dim: int = option(64, "latent dimensions", minimum=1)
    beta: float = option(1.0, "weight β of the KL term once annealed", minimum=0.0)
    kl_anneal: str = option("linear", "KL weight schedule: none, linear warm-up, or cyclical",
                            choices=objectives.KL_SCHEDULES)
    warmup_steps: int = option(5000, "length of the KL warm-up, or of one annealing cycle, in steps", minimum=1)
    free_bits: float = option(0.0, "free bits: λ in nats per latent dimension", minimum=0.0)
    word_dropout: float = option(0.0, "share of the decoder's input tokens replaced by <unk> in training",
                                 minimum=0.0, maximum=0.99)
    aggressive: bool = option(False, "aggressive inference-network training (He et al. 2019) while the "
                              "mutual information rises")
    aggressive_inner: int = option(10, "encoder-only updates before each decoder update in the aggressive phase",
                                   minimum=1)
    temperature: float = option(1.0, "softmax temperature of the tokens sampled from the prior", positive=True)


class Encoder(nn.Module):
    """The inference network: token ids [B, T] → μ and ℓ [B, 2·latent], read from the GRU's
    state after each row's <eos> (the pads after it never reach the posterior)."""

    def __init__(self, vocab: int, o: SeqVAEOptions, rng=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, o.embed_dim, rng)
        self.gru = nn.GRU(o.embed_dim, o.hidden, rng=rng)
        self.out = nn.Linear(o.hidden, 2 * o.latent_dim, rng=rng)

    def forward(self, ids: np.ndarray) -> Tensor:
        states, _ = self.gru(self.embed(ids))
        return self.out(states[np.arange(len(ids)), smiles.lengths(ids) - 1])


@register
class SeqVAE(Model):
    name = "seq-vae"
    description = "sequence VAE: GRU encoder and decoder over SMILES tokens"
    section = "21.3.5"
    Options = SeqVAEOptions
    inputs = "tokens"
    data_kinds = ("tokens",)
    eval_keys = ("test_elbo", "test_recon", "test_kl", "test_recon_accuracy", "nelbo_per_token", "active_units",
                 "mutual_info")

    def __init__(self, options: SeqVAEOptions, spec, rng=None):
        super().__init__(options, spec)
        o, vocab = options, len(spec.vocabulary)
        self.latent_dim, self.length = o.latent_dim, spec.shape[0]
        self.inference = Encoder(vocab, o, rng)
        self.embed = nn.Embedding(vocab, o.embed_dim, rng)
        self.initial_state = nn.Linear(o.latent_dim, o.hidden, rng=rng)
        self.decoder = nn.GRU(o.embed_dim + o.latent_dim, o.hidden, rng=rng)
        self.head = nn.Linear(o.hidden, vocab, rng=rng)
        # the aggressive phase's state (He et al.): on, the best epoch's mutual information so
        # far (−10³⁰ before the first: a checkpoint holds finite numbers only), and the current
        # epoch's running sum of batch estimates; [1]-arrays (a checkpoint holds no 0-d array)
        for buffer, value in (("aggressive_on", float(o.aggressive)), ("mi_best", -1e30), ("mi_sum", 0.0),
                              ("mi_batches", 0.0), ("mi_epoch", 0.0)):
            self.register_buffer(buffer, np.array([value], np.float64))

    # ---- the three distributions ------------------------------------------------------------

    def posterior(self, ids: np.ndarray) -> Normal:
        """q(z|x) of token ids [B, T]."""
        h = self.inference(ids)
        return Normal(h[:, :self.latent_dim], h[:, self.latent_dim:])

    def prior(self) -> StandardNormal:
        return StandardNormal(self.latent_dim)

    def _decode_steps(self, inputs: np.ndarray, z: Tensor, state=None) -> tuple:
        """(token logits [B, T, V], the decoder's last state) for input ids [B, T] with z beside
        every input; the first state from z unless ``state`` is given."""
        if state is None:
            state = F.reshape(F.tanh(self.initial_state(z)), 1, *z.shape[:1], -1)
        steps = inputs.shape[1]
        z_each = F.broadcast_to(F.reshape(z, z.shape[0], 1, z.shape[1]), z.shape[0], steps, z.shape[1])
        states, last = self.decoder(F.concat([self.embed(inputs), z_each], axis=2), state)
        return self.head(states), last

    def token_log_probs(self, ids: np.ndarray, z: Tensor, dropout_rng=None) -> Tensor:
        """log p(x_t | x_<t, z) of every token and the <eos>, 0 at pads, [B, T]. With
        ``dropout_rng`` (training), each input token after <bos> is <unk> with probability
        ``word_dropout``."""
        inputs = np.concatenate([np.full((len(ids), 1), smiles.BOS), ids[:, :-1]], axis=1)
        if dropout_rng is not None and self.options.word_dropout > 0:
            dropped = dropout_rng.random(inputs.shape) < self.options.word_dropout
            dropped[:, 0] = False
            inputs = np.where(dropped & (inputs != smiles.PAD), smiles.UNK, inputs)
        logits, _ = self._decode_steps(inputs, z)
        b, t, v = logits.shape
        nll = F.cross_entropy(F.reshape(logits, b * t, v), ids.reshape(-1), reduction="none")
        return -F.reshape(nll, b, t) * like((ids != smiles.PAD).astype(np.float32), logits)

    def _terms(self, ids: np.ndarray, rng, training: bool) -> dict:
        ids = ids[:, :int(smiles.lengths(ids).max())]          # no step past the batch's longest
        q = self.posterior(ids)
        z, kl_dims = sample_and_kl(q, self.prior(), rng)
        recon = F.sum(self.token_log_probs(ids, z, rng if training else None), axis=1)
        kl = F.sum(kl_dims, axis=-1)
        return {"recon": recon, "kl": kl, "kl_dims": kl_dims, "elbo": recon - kl, "z": z, "q": q}

    # ---- training ---------------------------------------------------------------------------

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        o = self.options
        terms = self._terms(batch["x"], ctx.rng, training=True)
        weight = objectives.kl_weight(o.kl_anneal, ctx.step, o.beta, o.warmup_steps)
        loss = objectives.training_loss(terms, weight, o.free_bits)
        out = {"elbo": terms["elbo"], "recon": terms["recon"], "kl": terms["kl"], "kl_weight": weight}
        if not o.aggressive:
            return {"loss": loss, **out}
        # the batch's I(x; z) for after_step's stopping rule; only aggressive training needs it
        self._batch_mi = objectives.mutual_information(*(backend.to_device(t.data, "cpu").astype(np.float64)
                                                         for t in (terms["z"], terms["q"].mu, terms["q"].logvar)))
        if self.aggressive_on[0]:      # He et al.: the encoder alone on `inner` batches, then the decoder once
            group = "encoder" if ctx.step % (o.aggressive_inner + 1) < o.aggressive_inner else "model"
            loss = {group: loss}
        return {"loss": loss, **out, "aggressive": float(self.aggressive_on[0]), "batch_mutual_info": self._batch_mi}

    def param_groups(self) -> dict:
        """The inference network apart ("encoder"), for the aggressive phase's encoder-only steps."""
        return self.groups_apart(encoder=self.inference)

    def after_step(self, ctx: StepContext) -> None:
        """At each epoch's first step, end the aggressive phase if the last epoch's mean mutual
        information did not rise above the best before it; then count this batch's."""
        if not self.options.aggressive:
            return
        if ctx.epoch != self.mi_epoch[0]:
            if self.mi_batches[0]:
                mean = self.mi_sum[0] / self.mi_batches[0]
                if mean <= self.mi_best[0]:
                    self.aggressive_on[0] = 0.0
                self.mi_best[0] = max(self.mi_best[0], mean)
            self.mi_sum[0], self.mi_batches[0], self.mi_epoch[0] = 0.0, 0.0, ctx.epoch
        self.mi_sum[0] += self._batch_mi
        self.mi_batches[0] += 1

    # ---- evaluation -------------------------------------------------------------------------

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        ids = batch["x"]
        terms = self._terms(ids, ctx.rng, training=False)
        mu = terms["q"].mu
        exact = np.all(self._generate(mu) == ids, axis=1).astype(np.float32)
        metrics = {"elbo": terms["elbo"], "recon": terms["recon"], "kl": terms["kl"],
                   "recon_accuracy": like(exact, mu)}
        kept = {"mu": mu, "logvar": terms["q"].logvar, "z": terms["z"], "elbo": terms["elbo"],
                "tokens": like(smiles.lengths(ids).astype(np.float32), mu)}
        return metrics, kept

    def eval_summary(self, kept: dict) -> dict:
        """−ELBO per token (the tokens and <eos>s of the whole test set), active units, and the
        mutual information I_q(x; z) over (at most) the first 2000 test molecules."""
        first = slice(0, 2000)
        return {"nelbo_per_token": float(-kept["elbo"].sum() / kept["tokens"].sum()),
                "active_units": objectives.active_units(kept["mu"]),
                "mutual_info": objectives.mutual_information(*(kept[k][first].astype(np.float64)
                                                               for k in ("z", "mu", "logvar")))}

    # ---- generation: token ids in, token ids out ---------------------------------------------

    @no_grad()
    def _generate(self, z: Tensor, rng=None) -> np.ndarray:
        """Token ids [N, T] decoded from z one step at a time: the most likely token (greedy) or,
        with ``rng``, one drawn from softmax(logits / temperature); <eos> then <pad>s."""
        n = z.shape[0]
        out = np.full((n, self.length), smiles.PAD, np.int64)
        token, state, done = np.full((n, 1), smiles.BOS), None, np.zeros(n, bool)
        never = np.zeros(len(self.spec.vocabulary), np.float32)
        never[[smiles.PAD, smiles.BOS, smiles.UNK]] = -np.inf           # not tokens a string can hold
        for t in range(self.length):
            logits, state = self._decode_steps(token, z, state)
            scores = backend.to_device(logits.data[:, 0], "cpu") + never
            if rng is None:
                chosen = scores.argmax(axis=1)
            else:                  # the Gumbel-max trick: an exact draw from the softmax
                chosen = (scores / self.options.temperature - np.log(-np.log(rng.random(scores.shape)))).argmax(axis=1)
            chosen[done] = smiles.PAD
            out[:, t] = chosen
            done |= chosen == smiles.EOS
            if done.all():
                break
            token = chosen[:, None]
        return out

    @no_grad()
    def encode(self, x: np.ndarray) -> np.ndarray:
        """Posterior means [N, latent_dim] of token ids [N, T]."""
        return backend.to_device(self.posterior(np.asarray(x)).mu.data, "cpu")

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Greedy decoding of latent points [N, latent_dim] into token ids [N, T]."""
        return self._generate(self.as_input(z))

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n molecules' token ids [n, T]: z ~ N(0, I), tokens drawn one at a time."""
        z = self.as_input(rng.standard_normal((n, self.latent_dim)))
        return self._generate(z, rng)
