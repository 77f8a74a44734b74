"""A TensorBoard logger whose x axis is the epoch, so that the runs of a sweep can be laid over each other.

Lightning logs each epoch's metrics at the optimizer step (``_batches_that_stepped``) and adds an ``epoch`` scalar.
Batch 64 then has twice the steps per epoch of batch 128 and an lr x batch-size sweep's curves do not line up. This
logger writes every scalar at its epoch instead: the ``epoch`` Lightning adds becomes the step (there is no
``epoch`` card), and a call without one (``LearningRateMonitor``'s, at the start of an epoch) gets the epoch that
call's optimizer step falls in. Nothing in this project logs per optimizer step.

A resumed fit gets ``purge_step`` in epochs (``cifar_lit.training.resume.logger_step``): the first epoch it runs again.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

LR_GROUP = "train"  # the tag group of the learning rates


class EpochTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` writing each scalar at its epoch (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch: int = kwargs.get("purge_step") or 0  # the epoch of the latest epoch-stamped call
        self._epoch_step: int | None = None  # that call's optimizer step; None before the first

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
        if metrics:
            super().log_metrics(metrics, self.epoch if epoch is not None else self.epoch_at(step))
