"""The Optuna (>= 4) search behind ``hparams_search=optuna`` and ``hydra/sweeper=cifar_lit_optuna`` in any Hydra app
(upstream hydra-optuna-sweeper's configs; the differences: docs/sweeps.md): ask a batch of trials, launch them as
Hydra jobs (each its own run folder, through whatever launcher is configured), tell the study how each ended
(cifar_lit.hydra_ext.optuna_results).

A job of cifar_lit's train reaches its trial through the storage, not through this process: the sweeper adds the
``optuna_pruning`` callback (cifar_lit.callbacks.optuna_pruning) to its overrides with the study name, storage and
trial number, so a job on a joblib worker or a SLURM node reports its epochs and is pruned all the same. Other apps'
jobs get nothing added; nor do jobs of a study in memory (``storage: null``) or of several objectives (Optuna prunes
single-objective studies only): a pruner is then refused.

A search exits with status 1 when a trial failed, at its end, or, with ``hydra.sweeper.max_failure_rate``
(upstream's name), as soon as more than that fraction of the trials it ran failed (a search whose trials were all
pruned is the pruner's verdict and exits 0).

A storage given through $CIFAR_LIT_OPTUNA_STORAGE (the configs' default when set) reaches the jobs as
``${oc.env:CIFAR_LIT_OPTUNA_STORAGE}``, read by each job from its environment: its value, an RDB URL's password
included, is then in no override, no ``.hydra/`` file and no run.json (cifar_lit.reporting.secrets). Several searches
(workers) may share one study in an RDB storage: cifar_lit.hydra_ext.optuna_workers.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from cifar_lit.hydra_ext import optuna_resume as resume
from cifar_lit.hydra_ext import optuna_workers as workers
from cifar_lit.hydra_ext.hydra_compat import whitelist_kwargs
from cifar_lit.hydra_ext.job_name import TRIAL_CALLBACK
from cifar_lit.hydra_ext.optuna_attrs import name_objectives
from cifar_lit.hydra_ext.optuna_results import tell, write_results
from cifar_lit.hydra_ext.optuna_resume import JobNumbers, finished_jobs, retry_dead_trials
from cifar_lit.hydra_ext.optuna_sampler import check_sampler
from cifar_lit.hydra_ext.optuna_space import (
    grid_of,
    override_value,
    plain_config,
    pruner_config,
    quoted,
    remaining_cells,
    search_space,
)
from cifar_lit.hydra_ext.optuna_workers import open_storage, study_lock
from cifar_lit.reporting.secrets import STORAGE_ENV, STORAGE_FROM_ENV, mask_secrets
from cifar_lit.training.monitor import DIRECTIONS, objective_directions, objective_names

if TYPE_CHECKING:
    from hydra._internal.callbacks import Callbacks

log = logging.getLogger(__name__)

PRUNING_CALLBACK = f"+{TRIAL_CALLBACK}"


class OptunaSearch:
    """The search: ``n_trials`` trials, ``n_jobs`` at a time, in a study that resumes from its storage."""

    def __init__(
        self,
        direction: str | list[str] | None,
        study_name: str | None,
        storage: str | None,
        n_trials: int | None,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: dict[str, str] | None,
        max_failure_rate: float = 1.0,
        custom_search_space: str | None = None,
        n_trials_of: str = "folder",
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
    ) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.custom_search_space = custom_search_space
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
        self.study_name = self.study_name or config.hydra.job.name  # null: the app's, the same on every rerun

    def pruner_config(self) -> dict[str, Any]:
        return pruner_config(self.pruner_cfg)

    def is_train_app(self) -> bool:
        """Whether the jobs are cifar_lit's train (a config with ``monitor`` and ``callbacks``): only they get the
        callback that reports epochs to the trial, and their objectives' directions can be inferred."""
        return self.config is not None and "monitor" in self.config and "callbacks" in self.config

    @cached_property
    def objectives(self) -> list[str]:
        """The names of what the jobs return: cifar_lit's objectives (cifar_lit.training.monitor); none elsewhere."""
        return objective_names(self.config) if self.is_train_app() else []

    @cached_property
    def directions(self) -> list[str]:
        """The study's directions, worked out (and warned about) once a search: ``hydra.sweeper.direction`` (one or
        a list) when set, with a warning when it opposes the objectives' own; null: cifar_lit's objectives' (the
        monitor's), upstream's minimize in other apps. A ValueError (ConfigError) in one line for one it cannot take."""
        given = [self.direction] if isinstance(self.direction, str) else self.direction
        inferred, names = None, self.objectives
        if names:
            try:
                inferred = objective_directions(self.config)
            except ValueError:  # an objective whose name says nothing (model/params): the direction must say it
                if not given:
                    raise
        directions = list(given or inferred or ["minimize"])
        if not directions or any(d not in DIRECTIONS.values() for d in directions):
            raise ValueError(f"hydra.sweeper.direction must be minimize, maximize, a list of them or null, got {given}")
        if names and len(names) != len(directions):
            raise ValueError(f"hydra.sweeper.direction has {len(directions)} directions for the objectives {names}")
        if inferred and directions != inferred:
            log.warning("hydra.sweeper.direction=%s, although %s are best to %s", directions, names, inferred)
        return directions

    def reports_epochs(self) -> bool:
        """Whether the jobs report their epochs to their trial (what a pruner decides on): cifar_lit's train, with a
        storage its jobs can reach (not in memory) and one objective (Optuna prunes single-objective studies only)."""
        return self.is_train_app() and self.storage is not None and len(self.directions) == 1

    def storage_from_env(self) -> bool:
        """Whether the storage is $CIFAR_LIT_OPTUNA_STORAGE's value: the jobs then read the variable themselves."""
        return bool(self.storage) and os.environ.get(STORAGE_ENV) == self.storage

    def shown_storage(self) -> str:
        """The storage as the log shows it: its password masked, and where it came from."""
        if self.storage is None:
            return "in memory"
        return mask_secrets(self.storage) + (f" from ${STORAGE_ENV}" if self.storage_from_env() else "")

    def sampler_config(self) -> dict[str, Any]:
        config = plain_config(self.sampler_cfg or {})
        config.pop("_partial_", None)  # upstream's configs build the grid sampler as a partial; here it is built whole
        return config

    def is_grid(self) -> bool:
        return str((self.sampler_cfg or {}).get("_target_", "")).endswith("GridSampler")

    def check(self, space: dict[str, BaseDistribution]) -> None:
        """The settings a search cannot start with, each a ValueError in one line."""
        if not space:
            raise ValueError("nothing to search: set hydra.sweeper.params or sweep, e.g. optimizer.lr=0.01,0.001")
        if self.n_trials is None and not self.is_grid():
            raise ValueError("hydra.sweeper.n_trials=null (the whole grid) takes the grid sampler only")
        if self.n_trials_of not in workers.N_TRIALS_OF:
            raise ValueError(f"hydra.sweeper.n_trials_of must be folder or study, got {self.n_trials_of!r}")
        if not 0 <= self.max_failure_rate <= 1:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be in [0, 1], got {self.max_failure_rate}")
        if self.pruner_cfg and not self.reports_epochs():
            raise ValueError(
                "hydra.sweeper.pruner needs jobs that report their epochs: cifar_lit's train, one objective and a "
                "storage (not null); set hydra/sweeper/pruner=none"
            )
        check_sampler(self.sampler_config())  # not at the trial that first needs its package

    def create_study(self, space: dict[str, BaseDistribution]) -> optuna.Study:
        sampler_cfg = resume.in_order_grid(self.sampler_config())  # Optuna's grid, its order kept on resume
        extra = {"search_space": grid_of(space)} if self.is_grid() else {}
        directions = self.directions
        with study_lock(self.storage, self.study_name):  # workers starting together: one creates tables and study
            storage = self.storage and open_storage(self.storage, self.heartbeat_interval, self.grace_period)
            earlier = workers.previous_trials(self.study_name, storage) if storage else 0
            # A search in a new folder on a stored study (a rerun in the folder restores the sampler's state instead:
            # resume_sampler): the random draws come from the seed, not from the stored trials, and would repeat the
            # first search's; a worker's differ from the others' (its folder). Not the grid's: its seed is the order
            # of its cells, which must stay that of the trials stored.
            if sampler_cfg.get("seed") is not None and not self.is_grid():
                sampler_cfg["seed"] += earlier
                if self.n_trials_of == "study":
                    sampler_cfg["seed"] = workers.worker_seed(sampler_cfg["seed"], self.config.hydra.sweep.dir)
            sampler = instantiate(sampler_cfg, **extra, **whitelist_kwargs()) if sampler_cfg else None
            pruner = instantiate(self.pruner_config(), **whitelist_kwargs())
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                directions=directions,
                load_if_exists=True,
            )
        stored = [d.name.lower() for d in study.directions]
        if stored != directions:  # a resumed study keeps its directions: not the ones asked now
            raise ValueError(
                f"study {self.study_name} in {self.shown_storage()} is to {stored}, not to {directions} (another "
                "monitor or objectives?): resume it with the same ones, or start a new storage"
            )
        # not "Objective 0" in optuna-dashboard: cifar_lit's objectives (other apps' return values have no names)
        name_objectives(study, self.objectives)
        return study

    def trial_overrides(self, trial: optuna.Trial, fixed: list[str]) -> list[str]:
        """A job's overrides: the trial's parameters, the fixed ones, and for cifar_lit's train the callback that
        reports to the trial (the storage as the variable that holds it, when it came from one)."""
        params = [f"{name}={value}" for name, value in trial.params.items()]
        if not self.reports_epochs():
            return [*params, *fixed]
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

    def ask(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> optuna.Trial:
        """A trial of ``space``, extended by ``custom_search_space`` (upstream's: f(config, trial) suggests more)."""
        trial = study.ask(space)
        trial.set_user_attr(resume.ASKED_IN, resume.folder_key(self.config.hydra.sweep.dir))  # found by a rerun there
        if self.custom_search_space:
            get_method(self.custom_search_space)(self.config, trial)
        return trial

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.launcher is not None and self.config is not None
        try:
            space, fixed = search_space(self.params, arguments)
            self.check(space)
            study = self.create_study(space)
        except ValueError as err:  # a search space the sampler cannot take: one line, as for any bad config value
            sys.exit(f"error: {err}")
        # the sweep's config, as Hydra's basic sweeper leaves it: the HPARAMS columns of the jobs read their sweeps
        # from it (cifar_lit.reporting.hparams.swept_columns)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        retry_dead_trials(study, sweep_dir)
        resume.resume_sampler(study, sweep_dir)  # a rerun in the folder: the draws go on where they stopped
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
                trials = [self.ask(study, space) for _ in range(min(self.n_jobs, left))]
            if not trials:
                break
            batch = [self.trial_overrides(trial, fixed) for trial in trials]
            with heartbeats.beating(trials):
                job_returns = jobs.launch(self.launcher, trials, batch)
            for trial, job_return in zip(trials, job_returns, strict=True):
                failed += tell(study, trial, job_return) == TrialState.FAIL
            returns.extend(job_returns)
            if failed / len(returns) > self.max_failure_rate and (left := self.trials_left(study, space, len(returns))):
                self.write_results(study)
                self.fail(
                    f"{failed} of the {len(returns)} trials run failed, more than hydra.sweeper.max_failure_rate="
                    f"{self.max_failure_rate}: the search stopped, {left} trials not run"
                )
        if not self.write_results(study) and failed:  # all pruned is the pruner's verdict, not a failure
            self.fail(f"no trial of study {self.study_name} completed: {failed} of {len(returns)} failed")
        if failed:  # every failure counts (cifar_lit's sweep summary ends such a sweep so too, after this)
            self.fail(f"{failed} of the {len(returns)} trials of study {self.study_name} failed")
        return returns

    def trials_left(self, study: optuna.Study, space: dict[str, BaseDistribution], launched: int) -> int:
        """How many trials to ask still, ``launched`` already by this search (optuna_workers.trials_left)."""
        folder_left = None if self.folder_left is None else self.folder_left - launched
        grid = space if self.is_grid() else None
        return workers.trials_left(study, self.n_trials, self.n_trials_of, folder_left, grid)

    def write_results(self, study: optuna.Study) -> bool:
        return write_results(study, Path(self.config.hydra.sweep.dir), self.objectives)

    def fail(self, message: str) -> NoReturn:
        """End the search with exit status 1 and ``message``. Hydra runs the end-of-multirun callbacks (the sweep
        summary) only after a sweep that returns: they run here first, and the summary's own exit, when it found a
        failed job, then ends the process, its line last (``message`` is logged before it)."""
        log.error(message)
        if self.callbacks is not None:
            self.callbacks.on_multirun_end(config=self.config)
        sys.exit(f"error: {message}")
