"""The trainer's options (``RunOptions``; a model family's are its ``Options``), and which of
them a resumed run may change."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from . import backend, data
from .options import check, option

LR_SCHEDULES = ("constant", "iwae")
RESUME_MAY_CHANGE = ("epochs", "device", "data_dir")     # where and how long, never what is trained


@dataclass
class RunOptions:
    dataset: str = option("mnist", "data set", choices=data.DATASETS)
    epochs: int = option(10, "epochs to train (with --resume: the new total)", minimum=1)
    batch_size: int = option(128, "examples per optimizer step", minimum=1)
    lr: float = option(1e-3, "Adam's learning rate", positive=True)
    lr_schedule: str = option("constant", "constant, or iwae: the IWAE paper's 8 stages of 3^i epochs at "
                              "10^(-i/7) x --lr (3280 epochs)", choices=LR_SCHEDULES)
    seed: int = option(0, "seed of the weights, the data order and every random draw", minimum=0)
    device: str = option("cpu", "cpu, or cuda (CuPy on a GPU)", choices=backend.DEVICES)
    train_size: Optional[int] = option(None, "use only the first N training examples", minimum=1)
    test_size: Optional[int] = option(None, "use only the first N test examples", minimum=1)
    data_dir: Optional[str] = option(None, "folder holding <dataset>/*.gz (else $TINYVAE_DATA, the cache)")
    parent: Optional[str] = option(None, "run folder of the trained model a second-stage model builds on "
                                            "(whose data set it takes)")
    skip_grad_norm: Optional[float] = option(None, "skip an update whose gradient norm exceeds this or whose loss "
                                             "is not finite, as VD-VAE does; each epoch's metrics count the skipped "
                                             "updates", positive=True)
    divergence_factor: float = option(100.0, "stop when the loss stays above its running median + this multiple "
                                      "of |median| for --divergence-steps steps in a row (0: never)", minimum=0.0)
    keep_samples: str = option("every", "samples_epochNNN.png for every epoch, or only samples.png, the last",
                               choices=("every", "last"))
    divergence_steps: int = option(10, "steps in a row the loss must stay that high to stop the run", minimum=1)

    def validate(self) -> None:
        check(self)
        if self.device == "cuda" and not backend.cuda_available():
            raise ValueError("--device cuda needs CuPy and a CUDA GPU; none is available here")


def run_options(saved: dict) -> RunOptions:
    """RunOptions from a saved dict; options newer than the record take their defaults."""
    return RunOptions(**{f.name: saved[f.name] for f in fields(RunOptions) if f.name in saved})
