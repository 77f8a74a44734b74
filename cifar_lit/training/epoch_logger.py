"""A TensorBoard logger whose x axis is the epoch, so that the runs of a sweep can be laid over each other.

Lightning logs each epoch's metrics at the optimizer step (``_batches_that_stepped``) and adds an ``epoch`` scalar.
Batch 64 then has twice the steps per epoch of batch 128 and an lr x batch-size sweep's curves do not line up. This
logger writes every scalar at its epoch instead: the ``epoch`` Lightning adds becomes the step (there is no
``epoch`` card), and a call without one (``LearningRateMonitor``'s, at the start of an epoch) gets the epoch that
call's optimizer step falls in. Nothing in this project logs per optimizer step.

A run that validates more than once an epoch (``trainer.val_check_interval`` a fraction below 1, a batch count or a
time) would log two validations at one epoch, and TensorBoard would show one point. Its steps are therefore
hundredths of an epoch (``EPOCH_STEPS``): every scalar is written at the epochs trained when it is logged, the
batches trained over the batches of an epoch (``epochs_done``), so a validation half-way through the second epoch is
at 150 and the epoch's end at 200. A fixed unit, not batches, keeps batch sizes lined up; the config decides it
(``epoch_steps``), not the batches counted once training starts, because a resumed run's writer needs its unit
before that. The unit is written once as ``STEPS_PER_EPOCH_TAG`` (``cifar_lit.reporting.events`` reads steps back
as epochs with it). Runs that validate once an epoch keep the plain epoch axis.

A resumed fit gets ``purge_step`` in this logger's unit (``cifar_lit.training.resume.logger_step``): the first epoch
it runs again, or, in hundredths, the first one after the point the checkpoint was saved at.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from cifar_lit.reporting.events import STEPS_PER_EPOCH_TAG

LR_GROUP = "train"  # the tag group of the learning rates
EPOCH_STEPS = 100  # steps an epoch of a run validating more than once an epoch
EPOCHS_DONE = "epochs_done"  # a checkpoint's ``epochs_done`` (``BlockClassifier``): where a resumed run's steps start


def epoch_steps(val_check_interval: Any) -> int:
    """The steps an epoch of a run with this ``trainer.val_check_interval``: 1 when it validates at most once an
    epoch, at its end (Lightning's default, null or 1.0), else ``EPOCH_STEPS`` (an int is a batch count)."""
    once = val_check_interval is None or (isinstance(val_check_interval, float) and val_check_interval == 1.0)
    return 1 if once else EPOCH_STEPS


def epochs_done(trainer: L.Trainer) -> float:
    """The epochs the fit has trained, fractional: its batches done over an epoch's (at an epoch's start, the
    epochs before it). The epoch count where the batches of an epoch are unknown (no fit)."""
    batches = trainer.num_training_batches
    if not 0 < batches < math.inf:
        return float(trainer.current_epoch)
    return trainer.fit_loop.epoch_loop.batch_progress.total.completed / batches


def axis_step(trainer: L.Trainer, epoch: int) -> int:
    """Where a value written now goes on the x axis of the run's scalars: ``epoch``, or the epochs trained in
    the run's ``EpochTensorBoardLogger``'s hundredths when it uses them (for writers other than the logger's own
    ``log_metrics``: the branch weights, the figures)."""
    for logger in trainer.loggers:
        if isinstance(logger, EpochTensorBoardLogger) and logger.in_hundredths:
            return logger.step_now()
    return epoch


class EpochTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` writing each scalar at its epoch (see the module docstring). ``val_check_interval``
    is the trainer's (``epoch_steps``); ``trainer`` must be set before a fit in hundredths logs (``follow``)."""

    def __init__(self, *args: Any, val_check_interval: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_steps = epoch_steps(val_check_interval)
        self.trainer: L.Trainer | None = None  # where the fit stands, for steps in hundredths of an epoch
        self.epoch: int = kwargs.get("purge_step") or 0  # the epoch of the latest epoch-stamped call (epoch axis)
        self._epoch_step: int | None = None  # that call's optimizer step; None before the first
        self._unit_written = kwargs.get("purge_step") is not None  # a resumed run's: the stopped run wrote it

    @property
    def in_hundredths(self) -> bool:
        """Steps are hundredths of an epoch: the run validates more than once an epoch, and the trainer is known."""
        return self.epoch_steps > 1 and self.trainer is not None

    def step_now(self) -> int:
        """The step in hundredths of an epoch of a value logged now."""
        return round(epochs_done(self.trainer) * self.epoch_steps)

    @staticmethod
    def follow(trainer: L.Trainer) -> None:
        """Give the trainer's ``EpochTensorBoardLogger``s the trainer: Lightning passes a logger the optimizer step
        only, not where in the epoch it is."""
        for logger in trainer.loggers:
            if isinstance(logger, EpochTensorBoardLogger):
                logger.trainer = trainer

    def epoch_at(self, step: int | None) -> int:
        """The epoch of a call that names no epoch: one after the latest epoch-stamped call when its optimizer step
        is past that call's (an epoch's metrics are logged at the epoch's last step, the next epoch starts one on)."""
        if self._epoch_step is not None and step is not None and step > self._epoch_step:
            return self.epoch + 1
        return self.epoch

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        if epoch is not None:
            self.epoch, self._epoch_step = int(epoch), step
        # LearningRateMonitor's "lr-<optimizer>" would be TensorBoard's first card group (groups sort by name):
        # under train/ it sits with the training curves, and the view opens on accuracy and loss
        metrics = {f"{LR_GROUP}/{key}" if key.startswith("lr-") else key: value for key, value in metrics.items()}
        if not metrics:
            return
        if self.in_hundredths:
            if not self._unit_written:
                self.experiment.add_scalar(STEPS_PER_EPOCH_TAG, self.epoch_steps, 0)
                self._unit_written = True
            super().log_metrics(metrics, self.step_now())
        else:
            super().log_metrics(metrics, self.epoch if epoch is not None else self.epoch_at(step))
