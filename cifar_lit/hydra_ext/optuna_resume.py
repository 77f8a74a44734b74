"""An Optuna search rerun with the same command and ``hydra.sweep.dir`` picks up where it stopped
(cifar_lit.hydra_ext.optuna_sweeper).

Each trial records the sweep folder it ran in and its job number (user attrs ``sweep_dir`` and ``job``), written
before its job is launched. A rerun in that folder then knows its own trials:

* ``n_trials`` counts the trials of the folder: the rerun runs what its finished trials leave (a search started in
  a new folder on an old storage, ``hydra.sweeper.storage=<old>/optuna.journal``, still adds ``n_trials`` more);
* a trial of the folder left RUNNING is dead: only one search runs in a sweep folder at a time (two would write
  the same job folders), and the folder's search is starting now. It is failed and retried as Optuna's heartbeat
  does it (``RetryHeartbeatStaleTrialCallback``: a WAITING trial with its parameters, grid cell, user attrs and
  reported epochs), which ``study.ask`` hands out before any new one. This works on every storage, the journal
  file (which has no heartbeat) included; trials of other folders, e.g. other workers sharing a PostgreSQL study,
  are left alone: their heartbeat tells when their worker died (cifar_lit.hydra_ext.optuna_workers). The retry
  copies the system attrs too, successive halving's rung values included: the jobs' pruner (``WithoutRetried``)
  leaves the dead trial out, so the pair counts once (Hyperband still counts it twice).
* a retried trial is launched with its dead trial's job number, so Hydra gives it the same job folder
  (cifar_lit.hydra_ext.job_name), where the job resumes from its ``checkpoints/last.ckpt`` or returns the metrics
  its run.json records (cifar_lit.hydra_ext.job_resume); new trials take the numbers after the folder's last job;
* new trials are those the uninterrupted search would have asked: the sampler's random generators (TPE's and its
  startup RandomSampler's, ...) are saved in the folder (``optuna_sampler.json``) before each launch and restored by
  the rerun, so the draws go on where they stopped (a sampler seeded anew would repeat the first draws, one whose
  seed is shifted would draw others); the grid (``InOrderGridSampler``, for Optuna's GridSampler however it was
  named) gives each new trial the first cell of the seed's order that no trial has taken, whatever the trial's
  number (Optuna's gives trial n cell n, and a retry takes a number).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from cifar_lit.reporting.sweeps import job_number

log = logging.getLogger(__name__)

SWEEP_DIR, JOB = "sweep_dir", "job"  # the user attrs a trial's job is found by (set when it is launched)
ASKED_IN = "asked_in"  # the user attr of the sweep folder whose search asked the trial (set when it is asked)
SAMPLER_STATE = "optuna_sampler.json"  # in the sweep folder: the sampler's random generators after its last ask

# Optuna >= 4.9's name; RetryFailedTrialCallback (deprecated there) before
RetryCallback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
if RetryCallback is None:
    RetryCallback = optuna.storages.RetryFailedTrialCallback


def folder_key(sweep_dir: str | Path) -> str:
    """The sweep folder as trials record it: absolute, so a rerun from the same place finds it."""
    return os.path.abspath(sweep_dir)


def retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """The numbers of the failed trials that have a retry (which stands for them)."""
    with warnings.catch_warnings():  # "experimental" since Optuna 3: noise in every search's log
        warnings.simplefilter("ignore", ExperimentalWarning)
        return {number for trial in trials for number in RetryCallback.retry_history(trial)}


def in_folder(trial: FrozenTrial, sweep_dir: str | Path) -> bool:
    return trial.user_attrs.get(SWEEP_DIR) == folder_key(sweep_dir)


def retry_dead_trials(study: optuna.Study, sweep_dir: str | Path) -> list[int]:
    """Fail the folder's trials left RUNNING (their search died: a rerun in the folder is its only search) and
    queue a retry of each, its reported epochs kept (a pruner's next decision sees them); returns the numbers of
    those retried. A trial asked here but never launched (the search died before numbering its job: ``asked_in``
    is the folder, ``sweep_dir`` is not) has nothing to resume: it is retried only when it holds a grid cell (no
    other trial would take it) or is a retry itself; else the sampler, restored to its state before that ask
    (resume_sampler), asks the same trial again."""
    folder = folder_key(sweep_dir)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    dead = [t for t in running if in_folder(t, sweep_dir) or t.user_attrs.get(ASKED_IN) == folder]
    again = []
    for trial in dead:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        if not in_folder(trial, sweep_dir) and not {"grid_id", "failed_trial"} & set(trial.system_attrs):
            log.warning("trial %d was asked but never launched by a dead search: failed, asked again", trial.number)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryCallback(inherit_intermediate_values=True)
        retry(study, study._storage.get_trial(trial._trial_id))
        job = trial.user_attrs[JOB] if in_folder(trial, sweep_dir) else "not launched"
        log.warning("trial %d (job %s) was left running by a dead search: retried", trial.number, job)
        again.append(trial.number)
    return again


def finished_jobs(study: optuna.Study, sweep_dir: str | Path) -> int:
    """The trials the folder has finished (a failed one that is being retried does not count: its retry will)."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return sum(in_folder(t, sweep_dir) and t.state.is_finished() and t.number not in again for t in trials)


class JobNumbers:
    """The job number of each trial of a folder's search: a retried trial its dead trial's (its job folder), a new
    one the next after the folder's jobs (its trials' and its job folders', so that no folder is taken twice)."""

    def __init__(self, study: optuna.Study, sweep_dir: str | Path) -> None:
        self.sweep_dir, self.sampler = folder_key(sweep_dir), study.sampler
        numbers = [t.user_attrs[JOB] for t in study.get_trials(deepcopy=False) if in_folder(t, sweep_dir)]
        folders = Path(sweep_dir).iterdir() if Path(sweep_dir).is_dir() else ()
        numbers += [n for folder in folders if folder.is_dir() and (n := job_number(folder)) is not None]
        self.next = max(numbers, default=-1) + 1

    def number(self, trial: optuna.Trial) -> int:
        attrs = trial.user_attrs
        if attrs.get(SWEEP_DIR) == self.sweep_dir and JOB in attrs:
            return int(attrs[JOB])
        number, self.next = self.next, self.next + 1
        trial.set_user_attr(SWEEP_DIR, self.sweep_dir)
        trial.set_user_attr(JOB, number)
        return number

    def launch(self, launcher: Launcher, trials: list[optuna.Trial], batch: list[list[str]]) -> list[JobReturn]:
        """Launch the trials' jobs (``batch``, their overrides) under their numbers: at once when the numbers run
        on (a launcher numbers its jobs from the first), else in runs of consecutive numbers. The sampler's state
        after asking them is saved first: a rerun asks the next trials from there."""
        save_sampler_state(self.sampler, self.sweep_dir)
        numbers = [self.number(trial) for trial in trials]
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(numbers) + 1):
            if end == len(numbers) or numbers[end] != numbers[end - 1] + 1:
                returns.extend(launcher.launch(batch[start:end], initial_job_idx=numbers[start]))
                start = end
        return returns


def random_states(sampler: Any, prefix: str = "") -> dict[str, np.random.RandomState]:
    """The sampler's random generators by attribute path, those of the samplers it holds included (TPE's own
    ``_rng`` and its startup RandomSampler's ``_random_sampler._rng``)."""
    found: dict[str, np.random.RandomState] = {}
    for name, value in vars(sampler).items():
        if isinstance(value, optuna.samplers.BaseSampler):
            found.update(random_states(value, f"{prefix}{name}."))
        elif isinstance(rng := getattr(value, "rng", value), np.random.RandomState):  # Optuna's LazyRandomState
            found[prefix + name] = rng
    return found


def save_sampler_state(sampler: optuna.samplers.BaseSampler, sweep_dir: str | Path) -> None:
    """The sampler's random generators as JSON in the sweep folder (replaced whole: a crash leaves the last)."""
    states = {}
    for name, rng in random_states(sampler).items():
        kind, keys, pos, has_gauss, cached = rng.get_state()
        states[name] = [kind, keys.tolist(), pos, has_gauss, cached]
    path = Path(sweep_dir) / SAMPLER_STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps({"sampler": type(sampler).__name__, "random_states": states}))
    partial.replace(path)


def resume_sampler(study: optuna.Study, sweep_dir: str | Path) -> None:
    """Restore the generators the folder's search saved (save_sampler_state) into the study's sampler, when it is
    of the same class: its next draws are those the search would have made had it not stopped. Nothing saved, or
    no trial of the folder in the study (a new folder, even on an old storage): the sampler as seeded."""
    if not any(in_folder(trial, sweep_dir) for trial in study.get_trials(deepcopy=False)):
        return  # not a rerun of this folder's search (a study in memory starts afresh each run)
    try:
        saved = json.loads((Path(sweep_dir) / SAMPLER_STATE).read_text())
    except (OSError, ValueError):
        return
    if saved.get("sampler") != type(study.sampler).__name__:
        log.warning("%s was saved by another sampler (%s): not restored", SAMPLER_STATE, saved.get("sampler"))
        return
    generators = random_states(study.sampler)
    for name, (kind, keys, pos, has_gauss, cached) in saved["random_states"].items():
        if name in generators:
            generators[name].set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    log.info("the sampler goes on from its state in %s", Path(sweep_dir) / SAMPLER_STATE)


def in_order_grid(sampler_cfg: dict[str, Any]) -> dict[str, Any]:
    """A sampler's config (``_target_`` and arguments) with Optuna's grid sampler, however it was named (the
    ``grid`` option, an upstream config's ``_target_``), made InOrderGridSampler: the same cells in the same order,
    kept on resume."""
    if sampler_cfg.get("_target_") == "optuna.samplers.GridSampler":
        return {**sampler_cfg, "_target_": f"{__name__}.{InOrderGridSampler.__name__}"}
    return sampler_cfg


class InOrderGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler (the cells shuffled by ``seed``), each new trial given the first cell of that order
    that no trial has taken. Optuna's gives trial n cell n, but a retried trial takes a number of its own: a
    resumed grid then ran its cells in another order (with a pruner, other verdicts: successive halving compares a
    cell with those that reported before it). Uninterrupted, the order is Optuna's; once every cell is taken,
    Optuna's choice (a cell not finished)."""

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return  # a retry or an enqueued trial: its cell is set
        trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
        ours = [t.system_attrs for t in trials if self._same_search_space(t.system_attrs.get("search_space", {}))]
        taken = {attrs["grid_id"] for attrs in ours if "grid_id" in attrs}
        free = [grid_id for grid_id in range(len(self._all_grids)) if grid_id not in taken]
        if not free:
            super().before_trial(study, trial)
            return
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", free[0])


class WithoutRetried(optuna.pruners.BasePruner):
    """``pruner`` deciding as if each failed trial that has a retry had never run: the retry stands for it. A
    retry carries its dead trial's reports and successive halving's rung values (the retry callback copies them),
    so the pair counted twice at each rung the dead trial had passed, and a resumed pruned grid pruned otherwise
    than an uninterrupted one. (Hyperband builds a study of its own per bracket, which this cannot filter.)"""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.pruner.prune(StudyWithoutRetried(study), trial)


class StudyWithoutRetried:
    """``study`` whose ``get_trials`` leaves out the failed trials that have a retry (the pruners' only view of the
    other trials); everything else is the study's."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        again = retried(self._study.get_trials(deepcopy=False))
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if t.number not in again]
