"""A test-only callback the training subprocess loads through Hydra (``+callbacks.interrupt_at._target_=...``): it
interrupts its own run at a fixed optimizer step, so the run stops at the same batch every time, however fast
the machine is."""

from __future__ import annotations

import os
import signal

import lightning as L
from lightning.pytorch.callbacks import Callback


class InterruptAtStep(Callback):
    """``sigterm``: SIGTERM this process once ``step`` optimizer steps are done (Lightning stops at the batch's end);
    ``sigusr1`` likewise SIGUSR1 (SLURM's time-limit warning, ``--signal=USR1@<s>``); ``sigusr1_in_test`` SIGUSR1
    after test batch ``step`` (the warning during the final test). ``ctrl_c``: raise ``KeyboardInterrupt`` inside
    the next step, after its forward pass (as Ctrl+C usually lands)."""

    def __init__(self, step: int, how: str = "sigterm") -> None:
        self.step, self.how = step, how

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.how in ("sigterm", "sigusr1") and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.Signals[self.how.upper()])

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if self.how == "sigusr1_in_test" and batch_idx == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss) -> None:
        if self.how == "ctrl_c" and trainer.global_step == self.step:
            raise KeyboardInterrupt
