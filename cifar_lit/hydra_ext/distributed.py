"""DDP inside a Hydra multirun: each job's extra processes run that job, in that job's folder, and nothing else.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by re-running the command line (``sys.argv``) with
``hydra.run.dir=<this run's dir> hydra.output_subdir=null`` appended. In a single run that is right: the ranks share
one run folder and only rank 0 writes ``.hydra/``. In a multirun the command line still holds ``-m`` and the sweep
(``optimizer.lr=0.1,0.01``), so rank 1 would run the whole sweep again, in a sweep folder of its own. ``job_scope``
makes the command line this one job's, as a single run in this job's folder, and afterwards undoes what the job's
DDP left in the process (the process group, the launcher's environment variables) so that the next job of the sweep
starts its own ranks.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from cifar_lit.hydra_ext.runner import task_overrides


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def single_run_argv() -> list[str]:
    """The command line that runs the current multirun job, and only it, as a single run."""
    hydra_cfg = HydraConfig.get()
    argv = [sys.argv[0], f"--config-name={hydra_cfg.job.config_name}"]
    argv += [f"--config-dir={s.path}" for s in hydra_cfg.runtime.config_sources if s.provider == "command-line"]
    # as typed: the Optuna sweeper's storage=${oc.env:CIFAR_LIT_OPTUNA_STORAGE} reaches the other ranks (their
    # environment is this one's) as the variable, not as its value on their command line
    return [*argv, *task_overrides(), "hydra.mode=RUN"]  # RUN: hparams_search=optuna asks for MULTIRUN


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
