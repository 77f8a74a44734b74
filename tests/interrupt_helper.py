"""A test-only callback the training subprocess loads through Hydra (``+callbacks.sigterm._target_=...``): it
sends its own process SIGTERM after a given optimizer step, so a run is interrupted at exactly the same batch
every time, however fast the machine is."""

from __future__ import annotations

import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


class SigtermAtStep(Callback):
    """SIGTERM this process once ``step`` optimizer steps are done (Lightning stops at the batch's end)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
