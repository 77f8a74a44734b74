"""DDP inside a Hydra multirun: each job's extra processes run that job, in that job's folder, and nothing else.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the command line (``sys.argv``) with
``hydra.run.dir=<this run's dir> hydra.output_subdir=null`` appended. In a single run that is right: the ranks share
one run folder and only rank 0 writes ``.hydra/``. In a multirun the command line still holds ``-m`` and the sweep
(``optimizer.lr=0.1,0.01``), so rank 1 would run the whole sweep again, in a sweep folder of its own. ``job_scope``
makes the command line this one job's, as a single run in this job's folder, and afterwards undoes what the job's
DDP left in the process (the process group, the launcher's environment variables) so that the next job of the sweep
starts its own ranks.

``check_other_ranks``: rank 0 is the command's own process and the other ranks its children, whose exit statuses
nobody read, so a rank that failed after rank 0 had finished left a run (or a sweep's job) recorded as a success.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from cifar_lit.callbacks.provenance import RunProvenance
from cifar_lit.errors import RankError
from cifar_lit.hydra_ext.runner import task_overrides

RANK_EXIT_TIMEOUT_S = 120  # after rank 0 finished, the others have only their interpreter's shutdown left


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def single_run_argv() -> list[str]:
    """The command line that runs the current multirun job, and only it, as a single run."""
    hydra_cfg = HydraConfig.get()
    argv = [sys.argv[0], f"--config-name={hydra_cfg.job.config_name}"]
    argv += [f"--config-dir={s.path}" for s in hydra_cfg.runtime.config_sources if s.provider == "command-line"]
    # as typed: the Optuna sweeper's storage=${oc.env:CIFAR_LIT_OPTUNA_STORAGE} reaches the other ranks (their
    # environment is this one's) as the variable, not as its value on their command line
    return [*argv, *task_overrides(), "hydra.mode=RUN"]  # RUN: hparams_search=... would imply --multirun


@contextmanager
def job_scope() -> Iterator[None]:
    """Within a multirun job: point Lightning's DDP re-launch at this job alone (see the module doc), and leave
    the process as it was when the job ends. Outside a multirun it does nothing."""
    if not in_multirun():
        yield
        return
    hydra_cfg = HydraConfig.get()
    argv, environ, run_dir = list(sys.argv), dict(os.environ), hydra_cfg.run.dir
    sys.argv = single_run_argv()
    with read_write(hydra_cfg):  # Lightning passes hydra.run.dir to the other ranks: make it this job's folder
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = run_dir


def exit_status(code: int) -> str:
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"


def check_other_ranks(trainer: L.Trainer) -> None:
    """On the process that started the other ranks of this node (Lightning's ``ddp`` launcher: rank 0 when the run
    is on one machine), once its own work is done: wait for them to exit and raise RankError, marking run.json
    failed, when one did not exit with status 0. Lightning only watches them while it trains: its observer thread
    kills everything when a rank dies early, but a rank that fails after rank 0 finished went unnoticed, and the
    run, or the sweep's job, was recorded as a success. A rank still alive ``RANK_EXIT_TIMEOUT_S`` later is killed
    (it would otherwise outlive the run) and counts as failed. Does nothing without such children."""
    launcher = getattr(trainer.strategy, "launcher", None)
    procs: list[subprocess.Popen] = list(getattr(launcher, "procs", None) or [])
    if not procs:
        return
    # Lightning's observer holds this very list: emptied, it stops without SIGKILLing this process for a rank that
    # fails now; the failure is this function's to report
    launcher.procs.clear()
    failures = []
    deadline = time.monotonic() + RANK_EXIT_TIMEOUT_S
    for local_rank, proc in enumerate(procs, start=1):
        rank = trainer.global_rank + local_rank
        try:
            code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failures.append(f"rank {rank} (pid {proc.pid}) had not exited {RANK_EXIT_TIMEOUT_S} s later: killed")
            continue
        if code != 0:
            failures.append(f"rank {rank} (pid {proc.pid}) {exit_status(code)}")
    if failures:
        error = RankError(f"{'; '.join(failures)}: the run failed, though rank 0 finished (see the rank's log)")
        for callback in trainer.callbacks:
            if isinstance(callback, RunProvenance):
                callback.on_exception(trainer, trainer.lightning_module, error)
        raise error
