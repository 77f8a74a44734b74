"""What makes a stopped run resumable, and its resumed metrics those of an uninterrupted run.

* ``ckpt_path=last`` is resolved to the run's ``checkpoints/last.ckpt`` up front, so a missing one is an error
  naming the folder (Lightning only warns and silently starts from scratch).
* ``InterruptCheckpoint`` saves ``last.ckpt`` when the run is stopped by SIGTERM (SLURM pre-emption, ``kill``) or
  SIGINT (Ctrl+C). Lightning's signal connector turns SIGTERM into a ``SIGTERMException`` at the next batch
  boundary, and both arrive at callbacks' ``on_exception``. Any other exception (a diverged loss, a bug) saves
  nothing: the last good checkpoint stays the newest.
* ``RngStateCheckpoint`` stores the random generators' states in every checkpoint and restores them when training
  resumes: Lightning seeds once at start-up and does not, so dropout masks after a resume would differ.
* ``logger_step`` is the logging step a checkpoint was saved at; the TensorBoard writer of a resumed run is told
  to hide events the stopped run logged after it (``purge_step``), so each epoch keeps exactly one value.
"""

from __future__ import annotations

import copy
import logging
import random
import shlex
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, open_dict

from cifar_lit.checkpoint import CheckpointError, existing_file, read_checkpoint

log = logging.getLogger(__name__)


def writes_last(callback: ModelCheckpoint) -> bool:
    """The callback writes ``last.ckpt``: with ``save_last``, or as a monitor-less checkpoint named ``last``."""
    return bool(callback.save_last) or callback.filename == callback.CHECKPOINT_NAME_LAST


def last_checkpoint(callback: ModelCheckpoint) -> Path:
    return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"


def resolve_ckpt_path(ckpt_path: str | None, callbacks: list[Callback]) -> str | None:
    """The checkpoint file to resume from: ``last`` becomes the run's ``last.ckpt``; any path must be a file."""
    if ckpt_path is None or ckpt_path == "hpc":
        return ckpt_path
    if ckpt_path == "last":
        savers = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        if not savers:
            raise CheckpointError("ckpt_path=last needs the model_checkpoint callback (callbacks=default)")
        path = last_checkpoint(savers[0])
        if not path.is_file():
            raise CheckpointError(
                f"ckpt_path=last: there is no {str(path)!r}. Resume a run with the same overrides plus "
                "hydra.run.dir=<that run's folder> ckpt_path=last, or drop ckpt_path to start a new run"
            )
        return str(path)
    return str(existing_file(ckpt_path))


def with_purge_step(loggers: DictConfig | None, step: int) -> DictConfig | None:
    """The logger group with ``purge_step=step`` given to each TensorBoard logger (it passes it on to its
    ``SummaryWriter``). TensorBoard then hides what the stopped run logged at ``step`` or later, which the
    resumed run logs again; without it, such epochs would show twice (event files of format version 2 are only
    purged on this restart marker, not on steps going backwards)."""
    if not loggers:
        return loggers
    loggers = copy.deepcopy(loggers)
    with open_dict(loggers):
        for node in loggers.values():
            if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("TensorBoardLogger"):
                node.purge_step = step
    return loggers


def resume_hint(cfg: DictConfig) -> str:
    """How to resume the run ``cfg`` describes: its own command line plus its folder and ``ckpt_path=last``."""
    if not HydraConfig.initialized():  # composed outside a Hydra run (tests)
        return "the same overrides plus hydra.run.dir=<the run's folder> ckpt_path=last"
    hydra_cfg = HydraConfig.get()
    args = [a for a in hydra_cfg.overrides.task if not a.startswith(("hydra.run.dir=", "ckpt_path="))]
    args += [f"hydra.run.dir={hydra_cfg.runtime.output_dir}", "ckpt_path=last"]
    return "python -m cifar_lit.train " + " ".join(shlex.quote(a) for a in args)


def logger_step(ckpt_path: str) -> int:
    """The step loggers had reached when ``ckpt_path`` was saved (Lightning logs at ``_batches_that_stepped``)."""
    checkpoint = read_checkpoint(ckpt_path)
    epoch_loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(epoch_loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


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


def rng_states() -> dict[str, Any]:
    """The global generators' states, as types ``torch.load(weights_only=True)`` accepts."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngStateCheckpoint(Callback):
    """Carry the random generators' states through checkpoints (applied when training starts, after the sanity
    check, which is where the uninterrupted run stood when it saved them)."""

    def __init__(self) -> None:
        self.restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restored:
            set_rng_states(self.restored)
            self.restored = None
