"""One line per epoch in the run's log (``train.log`` and the console): what a run in the background (``nohup``,
SLURM, a CI job) shows of its progress, where a progress bar, which redraws itself in a terminal, shows nothing.
"""

from __future__ import annotations

import logging
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


# metric names whose split-prefixed forms (train/loss, val/acc, ...) are shown; loss_best with monitor=<split>/loss
SHOWN = ("loss", "acc", "acc_best", "loss_best")


class EpochLog(Callback):
    """Logs ``epoch E/N: train/acc ... val/acc ... (T s)`` at the end of every training epoch, on rank 0."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
        shown = "  ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items()) if epoch_metric(name))
        seconds = time.perf_counter() - self.started
        log.info("epoch %d/%d: %s (%.0f s)", trainer.current_epoch + 1, trainer.max_epochs, shown, seconds)


def epoch_metric(name: str) -> bool:
    return "/" in name and name.rsplit("/", 1)[1] in SHOWN
