"""Save ``last.ckpt`` when SIGTERM (SLURM pre-emption, ``kill``) or SIGINT (Ctrl+C) stops a fit.

Lightning's signal connector turns SIGTERM into a ``SIGTERMException`` at the next batch boundary, and both arrive at
callbacks' ``on_exception``. Any other exception (a diverged loss, a bug) saves nothing: the last good checkpoint
stays the newest.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cifar_lit.training.resume import last_checkpoint, writes_last

log = logging.getLogger(__name__)


class InterruptCheckpoint(Callback):
    """Save ``last.ckpt`` of every ``ModelCheckpoint`` when SIGTERM or SIGINT stops the fit.

    A checkpoint saved mid-epoch resumes mid-epoch, but the interrupted epoch restarts its data from the first
    batch (the loader keeps no position); resuming from an epoch's end reproduces an uninterrupted run exactly.
    """

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, SIGTERMException | KeyboardInterrupt)
        if not interrupted or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING:
            return
        name = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT"
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and writes_last(callback) and callback.dirpath:
                path = last_checkpoint(callback)
                trainer.save_checkpoint(path, weights_only=False)
                if trainer.is_global_zero:
                    log.warning(
                        "%s at epoch %d, step %d: saved %s", name, trainer.current_epoch, trainer.global_step, path
                    )
                return
