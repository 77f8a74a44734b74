"""hydra/sweeper=cifar_lit_optuna: the project's Optuna (>= 4) sweeper, found by Hydra like any plugin. The search
itself is in cifar_lit.hydra_ext.optuna_sweeper; this module registers its config, the sampler and pruner options
and the class Hydra instantiates (Hydra only instantiates plugins defined under ``hydra_plugins``). Optuna is
imported when a search starts, so every run's plugin scan works without it.

The config is upstream hydra-optuna-sweeper's (its keys, its ``hydra/sweeper/sampler`` group and option names) plus
what the project adds: pruners (``hydra/sweeper/pruner``), resume, several workers on one study; a config written
for ``hydra/sweeper=optuna`` runs with that one line changed (docs/sweeps.md lists the differences). The options are
registered here, not in conf/, so that any Hydra app that names the sweeper has them.
"""

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
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": "none"}])
    _recursive_: bool = False  # the sampler is built by the search: the grid sampler needs the search space
    # minimize | maximize, or a list of them (a multi-objective search: the app returns that many values); null: the
    # monitor's in cifar_lit (val/acc: maximize, val/loss: minimize; cifar_lit.training.monitor), else minimize
    direction: Any = None
    # null: the app's job name (hydra.job.name), so that a rerun finds its study in the storage
    study_name: str | None = None
    # a file path: Optuna's JournalStorage in that file; a URL with "://": an RDB storage (sqlite:///..., postgresql://);
    # null: in memory, as upstream (no resume, no pruning: the jobs cannot reach the study).
    # $CIFAR_LIT_OPTUNA_STORAGE when set: a password in it is written nowhere (cifar_lit.reporting.secrets)
    storage: str | None = "${oc.env:CIFAR_LIT_OPTUNA_STORAGE,${hydra.sweep.dir}/optuna.journal}"
    n_trials: int | None = 20  # null: the whole grid (grid sampler only)
    n_jobs: int = 1  # trials asked, and jobs launched, at once
    # stop the search (exit status 1) once more than this fraction of its trials failed; 1.0: never stop early (a
    # failed trial still makes the search exit 1 at its end). Upstream hydra-optuna-sweeper's name and meaning
    max_failure_rate: float = 1.0
    # the dotted path of a function f(config, trial) that suggests more parameters (trial.suggest_float(...)) after
    # the params' ones, e.g. one whose range depends on another's value; as upstream's
    custom_search_space: str | None = None
    # what n_trials counts: folder, this sweep folder's trials (a rerun runs what is left; a new folder on an old
    # storage adds n_trials); study, the study's trials: the total of every worker sharing it (optuna_workers)
    n_trials_of: str = "folder"
    # RDB storages: each running trial's heartbeat every heartbeat_interval s (null: none); a trial without one for
    # grace_period s (null: 2 x interval) is failed and retried by the next search to ask (its worker died)
    heartbeat_interval: int | None = 60
    grace_period: int | None = None
    # _target_ configs, chosen in the groups hydra/sweeper/sampler and hydra/sweeper/pruner (SAMPLERS, PRUNERS below)
    sampler: Any = None
    pruner: Any = None
    params: dict[str, str] | None = field(default_factory=dict)  # null too, as upstream's examples may write


def seeded(target: str, **kwargs: Any) -> dict[str, Any]:
    return {"_target_": f"optuna.samplers.{target}", "seed": None, **kwargs}


# hydra/sweeper/sampler=<name>: upstream's options and names (its motpe is gone from Optuna 4: tpe takes several
# objectives). What each needs beyond Optuna is in the sweeps extra (cifar_lit/hydra_ext/optuna_sampler.py checks).
SAMPLERS: dict[str, dict[str, Any]] = {
    "tpe": seeded("TPESampler", n_startup_trials=5),  # Optuna's default: random trials, then a model of the results
    "random": seeded("RandomSampler"),
    # every combination of the choice/range params once, in an order shuffled by the seed; n_trials capped at its size
    "grid": seeded("GridSampler"),
    "cmaes": seeded("CmaEsSampler"),  # CMA-ES over interval params (needs cmaes)
    "gp": seeded("GPSampler", n_startup_trials=10),  # Gaussian-process Bayesian optimisation (scipy, torch)
    "qmc": seeded("QMCSampler", qmc_type="sobol"),  # quasi-random Sobol points: covers the space evenly (needs scipy)
    "nsgaii": seeded("NSGAIISampler", population_size=50),  # a genetic algorithm for several objectives
}
# hydra/sweeper/pruner=<name>: which trials stop early. A trial's steps are its epochs (a job of cifar_lit's train
# reports <monitor> to its trial after each validation: cifar_lit.callbacks.optuna_pruning); other apps report
# nothing, so they take none. Worse is the study's direction.
PRUNERS: dict[str, dict[str, Any]] = {
    # a trial worse than the median of the earlier trials at the same epoch stops there; 5 trials always run to the
    # end, to have a median; pruning from the second epoch on
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 2},
    # asynchronous successive halving: rungs at 1, 3, 9, ... epochs; a third of the trials go on at each
    "successive_halving": {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": 1,
        "reduction_factor": 3,
    },
    # successive halving with several budgets at once; max_resource: the epochs of the first trial that completes
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
}

store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="cifar_lit_optuna", node=CifarLitOptunaSweeperConf, provider="cifar_lit")
for name, node in SAMPLERS.items():
    store.store(
        group="hydra/sweeper/sampler", name=name, node=node, package="hydra.sweeper.sampler", provider="cifar_lit"
    )
for name, node in PRUNERS.items():
    store.store(
        group="hydra/sweeper/pruner", name=name, node=node, package="hydra.sweeper.pruner", provider="cifar_lit"
    )
store.store(
    group="hydra/sweeper/pruner", name="none", node={"pruner": None}, package="hydra.sweeper", provider="cifar_lit"
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
