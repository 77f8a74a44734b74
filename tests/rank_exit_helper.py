"""A test-only callback the training subprocess loads through Hydra (``+callbacks.rank_exit._target_=...``): one DDP
rank ends with a non-zero exit status after everything else it does, i.e. once rank 0 has finished too, as a rank
whose interpreter crashes while shutting down (a native library's atexit, a killed process) would."""

from __future__ import annotations

import atexit
import os

import lightning as L
from lightning.pytorch.callbacks import Callback


class ExitAtShutdown(Callback):
    """On global rank ``rank``: exit with ``status`` when its Python exits (registered when the trainer tears down,
    so fit, test and their collectives complete on every rank first)."""

    def __init__(self, rank: int = 1, status: int = 3) -> None:
        self.rank, self.status = rank, status

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank == self.rank:
            atexit.register(os._exit, self.status)
