"""TensorBoard logs of a run (``tinyvae train --tensorboard``), written with tensorboardX into
RUN/tensorboard/: every step's loss, learning rate and schedule values; every epoch's metrics
and pictures; the run's config as text. ``tensorboard --logdir RUN/tensorboard`` shows them."""
from __future__ import annotations

import json
import math
import os

import numpy as np

FOLDER = "tensorboard"


class TensorBoardLog:
    def __init__(self, out_dir: str, config: dict):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs tensorboardX: pip install 'tinyvae[tensorboard]'") from None
        self.writer = SummaryWriter(os.path.join(out_dir, FOLDER))
        self.writer.add_text("config", "    " + json.dumps(config, indent=2).replace("\n", "\n    "), 0)

    def step(self, step: int, scalars: dict) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(f"step/{key}", value, step)

    def epoch(self, record: dict, pictures: dict) -> None:
        """The epoch's metrics (finite numbers) and pictures (name → PNG path)."""
        from PIL import Image
        epoch = record["epoch"]
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                    and key not in ("epoch", "step"):
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        for name, path in pictures.items():
            with Image.open(path) as img:
                self.writer.add_image(name, np.asarray(img.convert("RGB")), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
