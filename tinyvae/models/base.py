"""The interface every model family implements, and what the trainer hands it.

A family is one ``Model`` subclass in its own file, registered by name
(``tinyvae/models/registry.py``). It declares:

  name, description, section   registered name, one line, the textbook section
  Options                      a dataclass of its options (``tinyvae.options.option``: type,
                               default, help, allowed values)
  inputs                       'binary' (the data's pixels binarized, dynamically in training)
                               or 'continuous' (or 'tokens': ids, as they are)
  data_kinds                   the ``DataSpec.kind`` it reads: ('images',) or ('tokens',)
  eval_keys                    the keys ``train.evaluate`` returns for it (test_<metric>, ...;
                               an instance may narrow them where an option decides)
  straight_through             prefixes of the parameters whose gradient is an estimate, not
                               the loss's derivative (a straight-through estimator's); the
                               catalog gradchecks the others and checks these get a gradient
                               (an instance may set its own where an option decides)
  needs_parent                 True for a second-stage model (a prior over another run's
                               codes): it is built with ``parent``, that run's trained model
                               (``--parent RUN``), which it uses but does not train

and implements

  loss(batch, ctx) -> dict     the training loss of a batch: 'loss' (the scalar to minimise,
                               or {group: scalar} where each parameter group has its own loss,
                               as a GAN's generator and discriminator: each group is stepped on
                               its own loss's gradient, a group left out is not stepped),
                               per-example terms in nats (Tensors [N], averaged per epoch as
                               train_<name>), and plain numbers (schedule values, kept as is)
  eval_batch(batch, ctx, iwae_k) -> (metrics, kept)
                               per-example test metrics (arrays [N], averaged as test_<name>)
                               and arrays to keep across batches for ``eval_summary``

and may override ``param_groups`` (parameters optimised separately, each group with its own
optimizer), ``after_step`` (state changed after each optimizer step), ``eval_summary``
(metrics of the whole test set), ``notes`` (warnings about a run's length), ``derived``
(per-example arrays computed once from the data, such as a prior's codes of its parent run:
the trainer keeps them in the run folder and puts them in every batch beside x and y), ``visits``
(an epoch that visits some examples more often than others). Capabilities are methods a family may have; the CLI and
the pictures use them only where present (``can``):

  sample(n, rng)       n images [n, *spec.shape] (means of p(x|z)) from the prior (token
                       models: token ids [n, T]; so for decode and reconstruct)
  encode(x)            a latent point per example (the posterior mean) [N, latent_dim]
  decode(z)            images [N, *spec.shape] from latent points
  reconstruct(x)       images [N, *spec.shape]
  log_weights(x, k, rng)   log p(x, z_k) − log q(z_k|x), [k, N], for the IWAE bound
  codes(x)             discrete codes: one grid [N, h_l, w_l] of indices into ``num_codes``
                       per level, coarsest first (one level for a VQ-VAE, two for VQ-VAE-2)
  decode_codes(c)      images [N, *spec.shape] from such a list of code grids
  sample_at(n, rng, temperature)   samples with the prior's standard deviations scaled
  reconstruct_from(x, top, rng)    a hierarchy's reconstructions with its top ``top`` layers
                       from the posterior and those below from the prior (``layers``: L)
  classify(x)          the label [N] a model with a label inferred from images
  sample_given(labels, rng)   images [n, *spec.shape] of the given labels [n] (one generator
                       state gives every label the same noise: a row per label shares styles)
  restyle(x, labels)   each image's style drawn as another label (M2's analogies)
  impute(x, observed, rng)    images with the pixels where ``observed`` [N, size] is 0 filled in
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Optional

import numpy as np

from .. import nn
from ..data import DataSpec
from ..options import check

CAPABILITIES = ("sample", "encode", "decode", "reconstruct", "log_weights", "codes", "decode_codes", "sample_at",
                "reconstruct_from", "classify", "sample_given", "restyle", "impute")


@dataclass
class StepContext:
    """What a model may know of the run at a step: the optimizer steps taken so far, the
    epoch, the run's generator (all training randomness comes from it, in a fixed order, so
    a resumed run repeats an uninterrupted one), and whether it is training."""
    step: int
    epoch: int
    rng: np.random.Generator
    training: bool = True


class Model(nn.Module):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    section: ClassVar[str] = ""
    Options: ClassVar[type]
    inputs: ClassVar[str] = "binary"
    data_kinds: ClassVar[tuple] = ("images",)
    eval_keys: tuple = ()
    needs_parent: ClassVar[bool] = False
    straight_through: ClassVar[tuple] = ()

    def __init__(self, options, spec: DataSpec, parent: Optional["Model"] = None):
        super().__init__()
        check(options)
        self.options, self.spec = options, spec
        # kept outside the module tree: the parent's parameters are neither trained nor saved here
        object.__setattr__(self, "parent", parent.eval() if parent is not None else None)

    def loss(self, batch: dict, ctx: StepContext) -> dict:
        raise NotImplementedError

    def eval_batch(self, batch: dict, ctx: StepContext, iwae_k: int = 0) -> tuple:
        raise NotImplementedError

    def eval_summary(self, kept: dict) -> dict:
        """Metrics of the whole test set from the arrays ``eval_batch`` kept (concatenated)."""
        return {}

    def derived(self, split, rng: np.random.Generator) -> dict:
        """Per-example arrays [N, ...] computed once from a ``data.Split`` (``rng`` for any
        binarization), handed to ``loss`` and ``eval_batch`` in every batch under their names
        (``train.with_derived`` computes and caches them). None by default."""
        return {}

    def visits(self, split) -> Optional[np.ndarray]:
        """How many times each training epoch visits each example of ``split`` (with its
        ``derived`` fields), [N] ints, shuffled together; None (the default): once each."""
        return None

    def param_groups(self) -> dict:
        """Name → parameters; each group gets its own optimizer (one group by default)."""
        return {"model": list(self.parameters())}

    def groups_apart(self, **modules: nn.Module) -> dict:
        """For ``param_groups``: each named module's parameters as its own group, and every
        other parameter as "model" (a GAN's ``discriminator=self.discriminator``)."""
        apart = {id(p) for module in modules.values() for p in module.parameters()}
        return {"model": [p for p in self.parameters() if id(p) not in apart],
                **{name: list(module.parameters()) for name, module in modules.items()}}

    def after_step(self, ctx: StepContext) -> None:
        """Called after every optimizer step (EMA codebooks, temperature schedules, ...)."""

    def notes(self, total_steps: int) -> list:
        """Lines worth saying before a run of ``total_steps`` optimizer steps (a schedule the
        run will not finish, ...); the trainer logs them."""
        return []

    def as_input(self, array: np.ndarray):
        """A NumPy array (capabilities take NumPy) as a float32 tensor on the model's device."""
        from ..tensor import tensor
        return tensor(np.asarray(array, np.float32), device=next(self.parameters()).device)

    @classmethod
    def can(cls, capability: str) -> bool:
        """Has the family this capability (a method of that name)?"""
        return callable(getattr(cls, capability, None))

    def config(self) -> dict:
        """What rebuilds this model: its registered name and every option (and the vocabulary
        of a token data set, so a run says which ids mean which tokens)."""
        vocabulary = {"vocabulary": list(self.spec.vocabulary)} if self.spec.vocabulary else {}
        return {"name": self.name, "options": asdict(self.options), **vocabulary}
