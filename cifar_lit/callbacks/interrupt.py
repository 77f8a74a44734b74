"""Save ``last.ckpt`` when SIGTERM (SLURM pre-emption, ``kill``) or SIGINT (Ctrl+C) stops a fit, and make the
resumed run finish the interrupted epoch as an uninterrupted one would.

Lightning's signal connector turns SIGTERM into a ``SIGTERMException`` at the next batch boundary, and both arrive at
callbacks' ``on_exception``. Any other exception (a diverged loss, a bug) saves nothing: the last good checkpoint
stays the newest.

Resuming mid-epoch, Lightning restores the loops' counters and the training loader's position (``ResidentLoader``'s
state), but not what the epoch's metrics have summed so far: the epoch means it logs (``train/loss``) and the states
of the torchmetrics it logs (``train/acc``) would cover only the batches after the resume. This callback carries
them in every checkpoint (each rank's) and puts them back when the run resumes in the epoch they were saved in.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchmetrics import Metric

from cifar_lit.data.loaders import ResidentLoader
from cifar_lit.training.resume import last_checkpoint, writes_last

log = logging.getLogger(__name__)

EPOCH_SUMS = "epoch_sums"  # the checkpoint key of the interrupted epoch's metric sums


class InterruptCheckpoint(Callback):
    """Save ``last.ckpt`` of every ``ModelCheckpoint`` when SIGTERM or SIGINT stops the fit; carry the training
    metrics' running sums through checkpoints, so a run resumed mid-epoch logs that epoch's exact means.

    SIGTERM stops between batches, and the resumed run reproduces the uninterrupted one exactly. Ctrl+C lands
    inside a step: the batch in flight is served again on resume, so that step is redone (and counted twice in
    the epoch's ``train/*`` if it had logged before the interrupt).
    """

    def __init__(self) -> None:
        self.resumed_sums: dict[str, Any] | None = None  # a checkpoint's sums, until the first resumed batch

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        interrupted = isinstance(exception, SIGTERMException | KeyboardInterrupt)
        if not interrupted or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING:
            return
        name = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT"
        if isinstance(exception, KeyboardInterrupt):
            rewind_to_completed_batches(trainer)
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and writes_last(callback) and callback.dirpath:
                path = last_checkpoint(callback)
                trainer.save_checkpoint(path, weights_only=False)
                if trainer.is_global_zero:
                    log.warning(
                        "%s at epoch %d, step %d: saved %s", name, trainer.current_epoch, trainer.global_step, path
                    )
                return

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Every rank's running sums of the epoch's training metrics (every rank saves; rank 0 writes)."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        sums: dict[str, Any] = {"epoch": trainer.current_epoch, "batches": completed_batches(trainer)}
        sums["logged"], sums["metrics"] = {}, {}
        for key, result in training_results(trainer).items():
            if result.has_reset or not result.meta.on_epoch:
                continue
            if result.is_tensor:
                tensors = {"value": result.value}
                if result.meta.is_mean_reduction:
                    tensors["cumulated_batch_size"] = result.cumulated_batch_size
                sums["logged"][key] = {name: every_rank(trainer, t) for name, t in tensors.items()}
            elif isinstance(result.value, Metric) and result.meta.metric_attribute:
                states = result.value.metric_state
                if not all(isinstance(state, torch.Tensor) for state in states.values()):
                    continue  # list states ("cat" reductions) differ in size between ranks: not carried
                sums["metrics"][result.meta.metric_attribute] = {
                    name: every_rank(trainer, state) for name, state in states.items()
                }
        checkpoint[EPOCH_SUMS] = sums

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.resumed_sums = checkpoint.get(EPOCH_SUMS)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Resumed part-way through the epoch the sums were saved in, at the batch they were saved at: give the
        logged metrics their states back (the epoch means Lightning keeps itself exist only once the first batch
        logs them: ``on_train_batch_end``)."""
        sums, self.resumed_sums = self.resumed_sums, None
        batches = completed_batches(trainer)
        if not sums or (sums["epoch"], sums["batches"]) != (trainer.current_epoch, batches):
            return
        if not 0 < batches < trainer.num_training_batches:  # no batch left to resume into
            return
        rank = trainer.global_rank
        for attribute, states in sums["metrics"].items():
            metric = pl_module.get_submodule(attribute)
            for name, state in states.items():
                setattr(metric, name, state[rank].to(metric.device))
        logged = {key: {name: t[rank] for name, t in tensors.items()} for key, tensors in sums["logged"].items()}
        self.resumed_sums = {"epoch": sums["epoch"], "logged": logged}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        """After the first resumed batch logged (the sums now hold that batch alone), add the checkpoint's sums:
        x + sum is exactly the sum + x the uninterrupted run computed."""
        sums, self.resumed_sums = self.resumed_sums, None
        if not sums or sums["epoch"] != trainer.current_epoch:
            return
        results = training_results(trainer)
        for key, saved in sums["logged"].items():
            if (result := results.get(key)) is None:
                continue
            value = saved["value"].to(result.value)
            if result.meta.is_max_reduction or result.meta.is_min_reduction:
                result.value = result.meta.reduce_fx(result.value, value)
            else:
                result.value = result.value + value
            if "cumulated_batch_size" in saved:
                cumulated = saved["cumulated_batch_size"].to(result.cumulated_batch_size)
                result.cumulated_batch_size = result.cumulated_batch_size + cumulated


def training_results(trainer: L.Trainer) -> dict[str, Any]:
    """What the training loop logged this epoch: Lightning's result collection (no public accessor)."""
    return trainer.fit_loop.epoch_loop._results


def completed_batches(trainer: L.Trainer) -> int:
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def every_rank(trainer: L.Trainer, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of each rank, stacked in rank order (all ranks save a checkpoint together)."""
    tensor = tensor.detach()
    return tensor.clone()[None] if trainer.world_size == 1 else trainer.strategy.all_gather(tensor)


def rewind_to_completed_batches(trainer: L.Trainer) -> None:
    """Ctrl+C interrupts a step: make the checkpoint say the run stopped after the last completed batch, as
    SIGTERM's does. The training loader counts the batch in flight as not served, and the epoch loop's counters
    drop it too (Lightning would otherwise take the checkpoint for one saved at a batch's end, and log the rest
    of the run one step late)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    for counts in (progress.total, progress.current):
        counts.ready = counts.started = counts.processed = counts.completed
    loader = trainer.train_dataloader
    if isinstance(loader, ResidentLoader):
        loader.batches_served = min(loader.batches_served, completed_batches(trainer))
