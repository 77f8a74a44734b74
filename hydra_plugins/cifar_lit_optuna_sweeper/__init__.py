"""hydra/sweeper=cifar_lit_optuna: the project's Optuna (>= 4) sweeper, found by Hydra like any plugin. The search
itself is in cifar_lit.hydra_ext.optuna_sweeper; this module registers its config and the class Hydra instantiates
(Hydra only instantiates plugins defined under ``hydra_plugins``). Optuna is imported when a search starts, so
every run's plugin scan works without it."""

# (no "from __future__ import annotations": Hydra executes this module outside sys.modules, where dataclasses
# cannot resolve string annotations)

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class CifarLitOptunaSweeperConf:
    _target_: str = "hydra_plugins.cifar_lit_optuna_sweeper.CifarLitOptunaSweeper"
    defaults: list[Any] = field(
        default_factory=lambda: ["_self_", {"optuna_sampler": "tpe"}, {"optuna_pruner": "none"}]
    )
    _recursive_: bool = False  # the sampler is built by the search: the grid sampler needs the search space
    # minimize | maximize; null: the monitor's (val/acc: maximize, val/loss: minimize; cifar_lit.training.monitor)
    direction: str | None = None
    study_name: str = "cifar_lit_block_net"
    # a file path: Optuna's JournalStorage in that file; a URL with "://": an RDB storage (sqlite:///..., postgresql://)
    # $CIFAR_LIT_OPTUNA_STORAGE when set: a password in it is written nowhere (cifar_lit.reporting.secrets)
    storage: str = "${oc.env:CIFAR_LIT_OPTUNA_STORAGE,${hydra.sweep.dir}/optuna.journal}"
    n_trials: int | None = 20  # null: the whole grid (grid sampler only)
    n_jobs: int = 1  # trials asked, and jobs launched, at once
    # stop the search (exit status 1) once more than this fraction of its trials failed; 1.0: never stop early (a
    # failed trial still makes the search exit 1 at its end). Upstream hydra-optuna-sweeper's name and meaning
    max_failure_rate: float = 1.0
    # what n_trials counts: folder, this sweep folder's trials (a rerun runs what is left; a new folder on an old
    # storage adds n_trials); study, the study's trials: the total of every worker sharing it (optuna_workers)
    n_trials_of: str = "folder"
    # RDB storages: each running trial's heartbeat every heartbeat_interval s (null: none); a trial without one for
    # grace_period s (null: 2 x interval) is failed and retried by the next search to ask (its worker died)
    heartbeat_interval: int | None = 60
    grace_period: int | None = None
    # _target_ configs, chosen in conf/'s groups hydra/sweeper/optuna_sampler (tpe, random, grid, cmaes) and
    # hydra/sweeper/optuna_pruner (none, median, successive_halving, hyperband)
    sampler: Any = None
    pruner: Any = None
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper", name="cifar_lit_optuna", node=CifarLitOptunaSweeperConf, provider="cifar_lit"
)


class CifarLitOptunaSweeper(Sweeper):
    """Hydra's side of the sweeper: hands the config, launcher and sweep over to the implementation."""

    def __init__(self, **sweeper_cfg: Any) -> None:
        from cifar_lit.hydra_ext.optuna_sweeper import OptunaSearch

        self.search = OptunaSearch(**sweeper_cfg)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
