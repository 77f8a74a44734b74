"""The Optuna (>= 4) search behind ``hparams_search=optuna``: ask a batch of trials, launch them as Hydra jobs
(each its own run folder, through whatever launcher is configured), tell the study how each ended.

A job reaches its trial through the storage, not through this process: the sweeper adds the ``optuna_pruning``
callback (cifar_lit.callbacks.optuna_pruning) to each job's overrides with the study name, storage and trial number,
so a job on a joblib worker or a SLURM node reports its epochs and is pruned all the same. A pruned job leaves
PRUNED.txt in its folder; the sweeper then tells the trial PRUNED, a job that returned its metric COMPLETE, and one
that returned nothing (FAILED.txt) FAIL.

A search exits with status 1 when no trial of its study completed (there is no best value; a search whose trials
were all pruned is the pruner's verdict and exits 0), and, with ``hydra.sweeper.max_failure_rate`` (upstream
hydra-optuna-sweeper's name), stops early once more than that fraction of the trials it ran failed: 1.0, the default,
never stops a search early; its failed jobs still end it with status 1 (``cifar_lit.hydra_ext.sweep``).

The study's direction is the monitor's (``cifar_lit.training.monitor``: a job returns ``<monitor>_best``, so
``monitor=val/loss`` is minimised) unless ``hydra.sweeper.direction`` says otherwise; the pruners read it from the
study, so they prune the trials that are worse that way.

A storage given through $CIFAR_LIT_OPTUNA_STORAGE (the configs' default when set) reaches the jobs as
``${oc.env:CIFAR_LIT_OPTUNA_STORAGE}``, read by each job from its environment: its value, an RDB URL's password
included, is then in no override, no ``.hydra/`` file and no run.json (cifar_lit.reporting.secrets). Several searches
(workers) may share one study in an RDB storage: cifar_lit.hydra_ext.optuna_workers.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from cifar_lit.errors import PRUNED_FILE
from cifar_lit.hydra_ext import optuna_workers as workers
from cifar_lit.hydra_ext.job_name import TRIAL_CALLBACK
from cifar_lit.hydra_ext.optuna_attrs import name_objectives, objective_names, record_job
from cifar_lit.hydra_ext.optuna_resume import JobNumbers, finished_jobs, retry_dead_trials
from cifar_lit.hydra_ext.optuna_sampler import check_sampler
from cifar_lit.hydra_ext.optuna_space import grid_of, plain_config, pruner_config, remaining_cells, search_space
from cifar_lit.hydra_ext.optuna_workers import open_storage, study_lock
from cifar_lit.reporting.secrets import STORAGE_ENV, STORAGE_FROM_ENV, mask_secrets
from cifar_lit.training.monitor import DIRECTIONS, monitor_mode

if TYPE_CHECKING:
    from hydra._internal.callbacks import Callbacks

log = logging.getLogger(__name__)

PRUNING_CALLBACK = f"+{TRIAL_CALLBACK}"


def quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_value(value: Any) -> str:
    """``value`` (a scalar, or a flat dict such as a pruner's config) in Hydra's override syntax."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if value is None:
        return "null"
    return quoted(value) if isinstance(value, str) else str(value)


class OptunaSearch:
    """The search: ``n_trials`` trials, ``n_jobs`` at a time, in a study that resumes from its storage."""

    def __init__(
        self,
        direction: str | None,
        study_name: str,
        storage: str,
        n_trials: int | None,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: dict[str, str],
        max_failure_rate: float = 1.0,
        n_trials_of: str = "folder",
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
    ) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.n_trials_of, self.heartbeat_interval, self.grace_period = n_trials_of, heartbeat_interval, grace_period
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.params = dict(params or {})
        self.launcher: Launcher | None = None
        self.config: DictConfig | None = None
        self.callbacks: Callbacks | None = None  # Hydra's, for the end of a search that stops (``fail``)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.callbacks = config, hydra_context.callbacks
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def pruner_config(self) -> dict[str, Any]:
        return pruner_config(self.pruner_cfg)

    def study_direction(self) -> str:
        """``hydra.sweeper.direction`` when set (it wins, with a warning when it opposes the monitor); null: the
        direction of the sweep config's monitor. Raises ConfigError (a ValueError) for a monitor of unknown direction:
        every trial would fail on it."""
        inferred = DIRECTIONS[monitor_mode(self.config)] if self.config is not None else None
        direction = self.direction or inferred
        if direction not in DIRECTIONS.values():
            raise ValueError(f"hydra.sweeper.direction must be minimize, maximize or null, got {self.direction!r}")
        if inferred and direction != inferred:
            log.warning(
                "hydra.sweeper.direction=%s, although monitor=%s is best to %s",
                direction,
                self.config.monitor,
                inferred,
            )
        return direction

    def storage_from_env(self) -> bool:
        """Whether the storage is $CIFAR_LIT_OPTUNA_STORAGE's value: the jobs then read the variable themselves."""
        return bool(self.storage) and os.environ.get(STORAGE_ENV) == self.storage

    def shown_storage(self) -> str:
        """The storage as the log shows it: its password masked, and where it came from."""
        return mask_secrets(self.storage) + (f" from ${STORAGE_ENV}" if self.storage_from_env() else "")

    def sampler_config(self) -> dict[str, Any]:
        return plain_config(self.sampler_cfg or {})

    def is_grid(self) -> bool:
        return str((self.sampler_cfg or {}).get("_target_", "")).endswith("GridSampler")

    def create_study(self, space: dict[str, BaseDistribution]) -> optuna.Study:
        sampler_cfg = self.sampler_config()
        extra = {"search_space": grid_of(space)} if self.is_grid() else {}
        direction = self.study_direction()
        with study_lock(self.storage, self.study_name):  # workers starting together: one creates tables and study
            storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period)
            earlier = workers.previous_trials(self.study_name, storage)
            # A resumed search: the random draws (RandomSampler, TPE's startup trials) come from the seed, not from
            # the stored trials, and would repeat the first search's; a worker's differ from the others' (its
            # folder). Not the grid's: its seed is the order of its cells (trial n runs cell n), which must stay that
            # of the trials stored.
            if sampler_cfg.get("seed") is not None and not self.is_grid():
                sampler_cfg["seed"] += earlier
                if self.n_trials_of == "study":
                    sampler_cfg["seed"] = workers.worker_seed(sampler_cfg["seed"], self.config.hydra.sweep.dir)
            sampler = instantiate(sampler_cfg, **extra) if sampler_cfg else None
            pruner = instantiate(self.pruner_config())
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction=direction,
                load_if_exists=True,
            )
        if study.direction.name.lower() != direction:  # a resumed study keeps its direction: not the one asked now
            raise ValueError(
                f"study {self.study_name} in {self.storage} is to {study.direction.name.lower()}, not to {direction}"
                " (another monitor?): resume it with the same monitor, or start a new storage"
            )
        name_objectives(study, objective_names(self.config))  # not "Objective 0" in optuna-dashboard
        return study

    def trial_overrides(self, trial: optuna.Trial, fixed: list[str]) -> list[str]:
        """A job's overrides: the trial's parameters, the fixed ones, and the callback that reports to the trial
        (the storage as the variable that holds it, when it came from one)."""
        params = [f"{name}={value}" for name, value in trial.params.items()]
        storage = STORAGE_FROM_ENV if self.storage_from_env() else quoted(self.storage)
        callback = [
            f"{PRUNING_CALLBACK}._target_=cifar_lit.callbacks.optuna_pruning.OptunaPruning",
            f"{PRUNING_CALLBACK}.study_name={quoted(self.study_name)}",
            f"{PRUNING_CALLBACK}.storage={storage}",
            f"{PRUNING_CALLBACK}.trial_number={trial.number}",
            # the pruner too: Optuna's storage keeps the trials' reports, not the study's pruner
            f"{PRUNING_CALLBACK}.pruner={override_value(self.pruner_config())}",
            f"{PRUNING_CALLBACK}.monitor=" + "${monitor}",
        ]
        return [*params, *fixed, *callback]

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.launcher is not None and self.config is not None
        try:
            space, fixed = search_space(self.params, arguments)
            if not space:
                raise ValueError("nothing to search: set hydra.sweeper.params or sweep, e.g. optimizer.lr=0.01,0.001")
            if self.n_trials is None and not self.is_grid():
                raise ValueError("hydra.sweeper.n_trials=null (the whole grid) takes the grid sampler only")
            if self.n_trials_of not in workers.N_TRIALS_OF:
                raise ValueError(f"hydra.sweeper.n_trials_of must be folder or study, got {self.n_trials_of!r}")
            if not 0 <= self.max_failure_rate <= 1:
                raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
            check_sampler(self.sampler_config())  # not at the trial that first needs its package
            study = self.create_study(space)
        except ValueError as err:  # a search space the sampler cannot take: one line, as for any bad config value
            sys.exit(f"error: {err}")
        # the sweep's config, as Hydra's basic sweeper leaves it: the HPARAMS columns of the jobs read their sweeps
        # from it (cifar_lit.reporting.hparams.swept_columns)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        retry_dead_trials(study, sweep_dir)
        # n_trials_of=folder: the sweep folder's trials, so a rerun in it runs what is left (optuna_resume)
        self.folder_left = None if self.n_trials is None else max(0, self.n_trials - finished_jobs(study, sweep_dir))
        if self.is_grid() and not remaining_cells(study, space):  # a resumed grid runs the cells not finished
            log.info("every cell of the grid has a trial in %s: nothing to run", self.shown_storage())
        shown, left = self.shown_storage(), self.trials_left(study, space, 0)
        log.info("Optuna study %s (%s): %d trials over %s", self.study_name, shown, left, list(space))
        returns: list[JobReturn] = []
        failed, jobs, heartbeats = 0, JobNumbers(study, sweep_dir), workers.Heartbeats(study._storage)
        while True:
            with study_lock(study._storage, self.study_name):  # the count and the ask: one step for the workers
                workers.fail_stale_trials(study)  # a dead worker's trials: failed, their retries queued
                left = self.trials_left(study, space, len(returns))
                trials = [study.ask(space) for _ in range(min(self.n_jobs, left))]
            if not trials:
                break
            batch = [self.trial_overrides(trial, fixed) for trial in trials]
            with heartbeats.beating(trials):
                job_returns = jobs.launch(self.launcher, trials, batch)
            for trial, job_return in zip(trials, job_returns, strict=True):
                failed += self.tell(study, trial, job_return) == TrialState.FAIL
            returns.extend(job_returns)
            if failed / len(returns) > self.max_failure_rate and (left := self.trials_left(study, space, len(returns))):
                self.write_results(study)
                self.fail(
                    f"{failed} of the {len(returns)} trials run failed, more than hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}: the search stopped, {left} trials not run"
                )
        if not self.write_results(study) and failed:  # all pruned is the pruner's verdict, not a failure
            self.fail(f"no trial of study {self.study_name} completed: {failed} of {len(returns)} failed")
        return returns

    def trials_left(self, study: optuna.Study, space: dict[str, BaseDistribution], launched: int) -> int:
        """How many trials to ask still, ``launched`` already by this search (optuna_workers.trials_left)."""
        folder_left = None if self.folder_left is None else self.folder_left - launched
        grid = space if self.is_grid() else None
        return workers.trials_left(study, self.n_trials, self.n_trials_of, folder_left, grid)

    def fail(self, message: str) -> NoReturn:
        """End the search with exit status 1 and ``message``. Hydra runs the end-of-multirun callbacks (the sweep
        summary) only after a sweep that returns: they run here first, and the summary's own exit, when it found a
        failed job, then ends the process, its line last (``message`` is logged before it)."""
        log.error(message)
        if self.callbacks is not None:
            self.callbacks.on_multirun_end(config=self.config)
        sys.exit(f"error: {message}")

    @staticmethod
    def tell(study: optuna.Study, trial: optuna.Trial, job_return: JobReturn) -> TrialState:
        """Tell the study how the trial's job ended; returns that state."""
        job_dir = Path(job_return.hydra_cfg.hydra.runtime.output_dir) if job_return.hydra_cfg else None
        value = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        if job_dir is not None and (job_dir / PRUNED_FILE).is_file():
            outcome: dict[str, Any] = {"state": TrialState.PRUNED}
        elif isinstance(value, (int, float)) and math.isfinite(value):
            outcome = {"values": float(value)}
        else:
            outcome = {"state": TrialState.FAIL}
        record_job(study, trial.number, job_dir)  # its folder and epochs, while the trial takes user attrs
        try:
            study.tell(trial, **outcome)
        except RuntimeError:
            # the grid sampler calls study.stop() once its grid is done, which only study.optimize allows; the trial
            # is stored all the same (Optuna stores it in a finally), and n_trials is capped at the grid size
            if not isinstance(study.sampler, optuna.samplers.GridSampler):
                raise
        return outcome.get("state", TrialState.COMPLETE)

    def write_results(self, study: optuna.Study) -> bool:
        """``optimization_results.yaml`` (best parameters and value) in the sweep dir; returns whether it was written:
        not when no trial of the study completed."""
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            log.warning("no trial of study %s completed", self.study_name)
            return False
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        path = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), path)
        log.info("best value %s with %s: %s", best.value, best.params, path)
        return True
