"""Under SLURM, the time-limit warning signal requeues the job, which saves and then resumes where it stopped.

``sbatch --signal=USR1@120 --requeue``: SLURM sends SIGUSR1 two minutes before the limit. This callback answers with
``scontrol requeue <job>``; SLURM then stops the job with SIGTERM, on which ``InterruptCheckpoint`` saves
``last.ckpt`` between two batches, and queues it again under the same job id. The requeued job runs the same batch
script: its trainings find their run folders again (named by the job id: ``cifar_lit.hydra_ext.slurm``) and
``${SLURM_RESTART_COUNT:+ckpt_path=last}`` resumes each, mid-epoch, exactly (docs/slurm.md); one requeued before it
saved anything (a warning during data preparation) starts from the beginning (``cifar_lit.training.resume``).

Why not Lightning's own auto-requeue (``SLURMEnvironment(auto_requeue=True)``): its SIGUSR1 handler saves an
``hpc_ckpt_N.ckpt`` from inside the signal handler, in the middle of a step, so the resumed run replays the batch in
flight and no longer matches an uninterrupted one; it also closes the loggers before the run ends. Why not
submitit's checkpoint/requeue (``max_num_timeout``): it serves only jobs submitted through submitit, and its handler
exits the process without saving. Registering a SIGUSR1 handler first keeps Lightning from adding its own.

The handler may run inside a training step, so it never raises: without ``scontrol`` (a container without the SLURM
commands), with one that hangs (``scontrol_timeout_s``) or fails, it logs a warning and training goes on; the job
is then not requeued, but the SIGTERM at the time limit still saves ``last.ckpt`` to resume from by hand.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def slurm_job() -> str | None:
    """The id ``scontrol`` knows this job by (``<array job>_<task>`` for an array task); None outside SLURM."""
    if array_job := os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class SlurmRequeue(Callback):
    """On ``signal_name`` (SIGUSR1: what ``--signal=USR1@<seconds>`` sends) during a run under SLURM, requeue the
    job from its first task; the SIGTERM that follows saves ``last.ckpt``. Outside SLURM it does nothing.
    ``scontrol_timeout_s``: how long the training waits for ``scontrol requeue`` (the warning comes minutes before
    the limit; a hung controller must not eat them).

    The handler must be there for the whole run, not only while fitting: the signal's default action ends the
    process, so a warning during data preparation or the final test killed the job. ``cifar_lit.train`` installs
    it before preparing the data and restores the previous one at the end (``requeue_on_time_limit``); a Trainer
    given the callback otherwise installs it at its first ``setup``, for the rest of the process."""

    def __init__(self, signal_name: str = "SIGUSR1", scontrol_timeout_s: float = 30.0) -> None:
        self.signum = signal.Signals[signal_name]
        self.scontrol_timeout_s = scontrol_timeout_s
        self._installed = False
        self._previous: Any = None

    def install(self) -> None:
        """Under SLURM, answer the signal from now on (idempotent). Before Lightning's signal connector: seeing a
        handler, it adds no auto-requeue of its own."""
        if not self._installed and slurm_job() is not None:
            self._previous = signal.signal(self.signum, self._requeue)
            self._installed = True

    def restore(self) -> None:
        """The handler there was before ``install``."""
        if self._installed:
            signal.signal(self.signum, self._previous)
            self._installed, self._previous = False, None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.install()

    def _requeue(self, signum: int, frame: FrameType | None) -> None:
        if os.environ.get("SLURM_PROCID", "0") != "0":  # one requeue per job; every task gets the signal
            return
        job, name = slurm_job(), self.signum.name
        not_requeued = f"SLURM job {job} not requeued; the SIGTERM at its time limit saves last.ckpt"
        command = ["scontrol", "requeue", str(job)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=self.scontrol_timeout_s)
        except FileNotFoundError:
            log.warning("%s: scontrol is not on PATH: %s", name, not_requeued)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s: scontrol requeue did not answer within %g s: %s", name, self.scontrol_timeout_s, not_requeued
            )
        except OSError as err:  # not executable, ...
            log.warning("%s: scontrol requeue could not run (%s): %s", name, err, not_requeued)
        else:
            if result.returncode == 0:
                log.warning("%s: requeued SLURM job %s; it stops with SIGTERM and resumes", name, job)
            else:
                log.error("%s: scontrol requeue failed (%s): %s", name, result.stderr.strip(), not_requeued)


@contextmanager
def requeue_on_time_limit(callbacks: list[Callback]) -> Iterator[None]:
    """The handlers of the ``SlurmRequeue`` callbacks among ``callbacks`` installed for the block (the whole run)."""
    handlers = [callback for callback in callbacks if isinstance(callback, SlurmRequeue)]
    for handler in handlers:
        handler.install()
    try:
        yield
    finally:
        for handler in reversed(handlers):
            handler.restore()
