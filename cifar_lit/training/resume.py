"""What makes a stopped run resumable from the command line:

* ``ckpt_path=last`` is resolved to the run's ``checkpoints/last.ckpt`` up front, so a missing one is an error
  naming the folder (Lightning only warns and silently starts from scratch), except in a requeued SLURM job: one
  requeued before it saved anything starts from the beginning, with a warning.
* ``logger_step`` is the logging step (the epoch, or hundredths of one) a fit resumed from a checkpoint starts at;
  the TensorBoard writer of a resumed run is told to hide events the stopped run logged from it on
  (``purge_step``), so each epoch (each validation) keeps exactly one value.
* ``resume_hint`` is the command that resumes a stopped run.

The callbacks that save what a resume needs live in ``cifar_lit.callbacks`` (``interrupt``: the checkpoint on a
signal and the interrupted epoch's metric sums; ``rng_state``); the training loader's position in the epoch is
the ``ResidentLoader``'s own state, which Lightning saves and restores.
"""

from __future__ import annotations

import copy
import logging
import os
import shlex
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, open_dict

from cifar_lit.errors import CheckpointError
from cifar_lit.hydra_ext.runner import task_overrides
from cifar_lit.reporting.secrets import mask_secrets
from cifar_lit.training.checkpoint import existing_file, read_checkpoint
from cifar_lit.training.epoch_logger import EPOCHS_DONE

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
        if not path.is_file() and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0:
            # requeued by the time-limit warning (or pre-empted) before anything was saved, e.g. while preparing
            # the data: the job script's ${SLURM_RESTART_COUNT:+ckpt_path=last} has nothing to resume
            log.warning("ckpt_path=last: requeued SLURM job without %s: starting from the beginning", path)
            return None
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
    args = [a for a in task_overrides() if not a.startswith(("hydra.run.dir=", "ckpt_path="))]
    # the seed the run used (seed=null drew one): a resume with another would shuffle the data differently
    args = [f"seed={cfg.seed}" if a.split("=", 1)[0].lstrip("+") == "seed" else a for a in args]
    args += [f"hydra.run.dir={hydra_cfg.runtime.output_dir}", "ckpt_path=last"]
    return "python -m cifar_lit.train " + " ".join(shlex.quote(mask_secrets(a)) for a in args)


def logger_step(ckpt_path: str, epoch_steps: int = 1) -> int:
    """The logging step a fit resumed from ``ckpt_path`` starts at, with ``epoch_steps`` steps an epoch
    (``cifar_lit.training.epoch_logger``).

    On the epoch axis (1): the epoch it runs first, i.e. the epochs the checkpoint had finished processing
    (Lightning counts an epoch processed before its end-of-epoch checkpoint is saved); it logs that epoch again.
    In hundredths: the step after the epochs trained when the checkpoint was saved (``EPOCHS_DONE``). What the
    stopped run logged up to there (a validation half-way through the epoch it resumes in) the resumed run does
    not log again and stays; what it logged later the resumed run does. (The learning rate of an epoch that starts
    right at the checkpoint is logged by both, at the same step with the same value.)"""
    checkpoint = read_checkpoint(ckpt_path)
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    processed = int(progress.get("processed", checkpoint.get("epoch", 0)))
    if epoch_steps == 1:
        return processed
    return round(checkpoint.get(EPOCHS_DONE, processed) * epoch_steps) + 1
