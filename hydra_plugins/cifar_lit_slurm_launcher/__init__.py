"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, except that a submission sbatch refuses (a
partition, account or GPU request the cluster does not have) ends the command with one line naming the
``hydra.launcher`` setting to change and exit status 1, instead of submitit's thirty-line traceback. The message is
cifar_lit.hydra_ext.slurm's ``refused_submission``; this module is the class Hydra instantiates (Hydra only
instantiates plugins defined under ``hydra_plugins``). submitit is imported when a sweep starts, so every run's
plugin scan works without the slurm extra."""

# (no "from __future__ import annotations": Hydra executes this module outside sys.modules)

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class CifarLitSlurmLauncher(Launcher):
    """Hands everything to submitit's ``SlurmLauncher`` (which submitit pickles and runs on the nodes, unchanged)."""

    def __init__(self, **launcher_cfg: Any) -> None:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

        self.submitit = SlurmLauncher(**launcher_cfg)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.submitit.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from cifar_lit.hydra_ext.slurm import refused_submission

        try:
            return self.submitit.launch(job_overrides, initial_job_idx)
        except Exception as err:
            if (message := refused_submission(err)) is None:
                raise
            sys.exit(f"error: {message}")
