"""hydra/launcher=packed: a multirun's jobs side by side on this machine's GPUs, ``jobs_per_device`` at a time on
each, every slot a worker process that sees only its own device and runs its slot's jobs in turn. The launching is in
cifar_lit.hydra_ext.packed_launcher; this module registers the config (conf/hydra/launcher/packed.yaml builds on it)
and the class Hydra instantiates (Hydra only instantiates plugins defined under ``hydra_plugins``)."""

# (no "from __future__ import annotations": Hydra executes this module outside sys.modules, where dataclasses
# cannot resolve string annotations)

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class CifarLitPackedLauncherConf:
    _target_: str = "hydra_plugins.cifar_lit_packed_launcher.CifarLitPackedLauncher"
    devices: Any = "auto"  # auto: every visible CUDA device (one "cpu" group without one); or a list: [0, 1]
    jobs_per_device: int = 2
    threads_per_job: Any = "auto"  # auto: the cores this process may use // (devices x jobs_per_device), >= 1


ConfigStore.instance().store(
    group="hydra/launcher", name="cifar_lit_packed", node=CifarLitPackedLauncherConf, provider="cifar_lit"
)


class CifarLitPackedLauncher(Launcher):
    """Hydra's side of the launcher: hands the config, task and jobs over to the implementation."""

    def __init__(self, **launcher_cfg: Any) -> None:
        from cifar_lit.hydra_ext.packed_launcher import PackedLauncher

        self.packed = PackedLauncher(**launcher_cfg)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.packed.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        return self.packed.launch(job_overrides, initial_job_idx)
