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
  are left alone: their heartbeat tells when their worker died (cifar_lit.hydra_ext.optuna_workers). (The retry
  copies the system attrs too: successive halving and hyperband then count a rung value of the dead trial twice,
  its own and its retry's.)
* a retried trial is launched with its dead trial's job number, so Hydra gives it the same job folder
  (cifar_lit.hydra_ext.job_name), where the job resumes from its ``checkpoints/last.ckpt`` or returns the metrics
  its run.json records (cifar_lit.hydra_ext.job_resume); new trials take the numbers after the folder's last job.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from cifar_lit.reporting.sweeps import job_number

log = logging.getLogger(__name__)

SWEEP_DIR, JOB = "sweep_dir", "job"  # the user attrs a trial's job is found by

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
    queue a retry of each, its reported epochs kept (a pruner's next decision sees them); returns their numbers."""
    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if in_folder(t, sweep_dir)]
    for trial in dead:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryCallback(inherit_intermediate_values=True)
        retry(study, study._storage.get_trial(trial._trial_id))
        log.warning("trial %d (job %s) was left running by a dead search: retried", trial.number, trial.user_attrs[JOB])
    return [t.number for t in dead]


def finished_jobs(study: optuna.Study, sweep_dir: str | Path) -> int:
    """The trials the folder has finished (a failed one that is being retried does not count: its retry will)."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    return sum(in_folder(t, sweep_dir) and t.state.is_finished() and t.number not in again for t in trials)


class JobNumbers:
    """The job number of each trial of a folder's search: a retried trial its dead trial's (its job folder), a new
    one the next after the folder's jobs (its trials' and its job folders', so that no folder is taken twice)."""

    def __init__(self, study: optuna.Study, sweep_dir: str | Path) -> None:
        self.sweep_dir = folder_key(sweep_dir)
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
        on (a launcher numbers its jobs from the first), else in runs of consecutive numbers."""
        numbers = [self.number(trial) for trial in trials]
        returns: list[JobReturn] = []
        start = 0
        for end in range(1, len(numbers) + 1):
            if end == len(numbers) or numbers[end] != numbers[end - 1] + 1:
                returns.extend(launcher.launch(batch[start:end], initial_job_idx=numbers[start]))
                start = end
        return returns
