"""How the Optuna search (cifar_lit.hydra_ext.optuna_sweeper) reads a finished job and writes the search's result.

A job's outcome becomes its trial's state: PRUNED when the pruner stopped it (``PRUNED.txt`` in its folder, written by
cifar_lit.callbacks.optuna_pruning), COMPLETE with the value(s) it returned, else FAIL with a reason, logged in one
line: the exception a job of any Hydra app raised, the ``FAILED.txt`` of a cifar_lit job, or a return value that is
not what the study's directions ask (one finite number a direction). The result goes to
``optimization_results.yaml`` in the sweep folder, as upstream hydra-optuna-sweeper writes it: the best parameters
and value, or for several objectives the Pareto front (``solutions``), each with its job number.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from cifar_lit.errors import FAILURE_FILE, PRUNED_FILE
from cifar_lit.hydra_ext.optuna_attrs import record_job
from cifar_lit.hydra_ext.optuna_resume import JOB

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def job_dir(job_return: JobReturn) -> Path | None:
    return Path(job_return.hydra_cfg.hydra.runtime.output_dir) if job_return.hydra_cfg else None


def objective_values(value: Any, n_objectives: int) -> list[float]:
    """The trial's values from what its job returned; ValueError, saying what was expected, when they are not
    ``n_objectives`` finite numbers (one number, or a list or tuple of them)."""
    values = list(value) if isinstance(value, (list, tuple)) and n_objectives > 1 else [value]
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if len(numbers) != len(values) or len(values) != n_objectives:
        wanted = "a finite number" if n_objectives == 1 else f"a list of {n_objectives} finite numbers"
        raise ValueError(f"returned {value!r}, not {wanted} (one a hydra.sweeper.direction)")
    return [float(v) for v in numbers]


def job_outcome(job_return: JobReturn, n_objectives: int) -> tuple[dict[str, Any], str | None]:
    """``study.tell``'s arguments for the trial whose job returned ``job_return``, and why it failed (None: it
    did not)."""
    folder = job_dir(job_return)
    if folder is not None and (folder / PRUNED_FILE).is_file():
        return {"state": TrialState.PRUNED}, None
    if job_return.status != JobStatus.COMPLETED:  # the task raised (an app without cifar_lit's runner)
        error = job_return._return_value
        return {"state": TrialState.FAIL}, f"{type(error).__name__}: {error}"
    if folder is not None and (folder / FAILURE_FILE).is_file():  # cifar_lit's runner caught the error
        return {"state": TrialState.FAIL}, (folder / FAILURE_FILE).read_text().strip()
    try:
        return {"values": objective_values(job_return.return_value, n_objectives)}, None
    except ValueError as err:
        return {"state": TrialState.FAIL}, str(err)


def tell(study: optuna.Study, trial: optuna.Trial, job_return: JobReturn) -> TrialState:
    """Tell the study how the trial's job ended, a failure logged in one line; returns the trial's state."""
    outcome, failure = job_outcome(job_return, len(study.directions))
    record_job(study, trial.number, job_dir(job_return))  # its folder and epochs, while the trial takes user attrs
    if failure is not None:
        log.warning("trial %d failed: %s", trial.number, failure)
    try:
        study.tell(trial, **outcome)
    except RuntimeError:
        # the grid sampler calls study.stop() once its grid is done, which only study.optimize allows; the trial
        # is stored all the same (Optuna stores it in a finally), and n_trials is capped at the grid size
        if not isinstance(study.sampler, optuna.samplers.GridSampler):
            raise
    return outcome.get("state", TrialState.COMPLETE)


def solution(trial: FrozenTrial) -> dict[str, Any]:
    return {"params": trial.params, "values": trial.values, "job": trial.user_attrs.get(JOB)}


def write_results(study: optuna.Study, sweep_dir: Path, metric_names: Sequence[str] | None = None) -> bool:
    """``optimization_results.yaml`` in ``sweep_dir``: the best parameters and value, or the Pareto front of a
    multi-objective study (each solution with its job number, for the sweep summary); returns whether it was
    written: not when no trial of the study completed."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        log.warning("no trial of study %s completed", study.study_name)
        return False
    if len(study.directions) == 1:
        best = study.best_trial
        results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        log.info("best value %s with %s", best.value, best.params)
    else:
        front = sorted(study.best_trials, key=lambda trial: trial.number)
        results = {"name": "optuna", "objectives": list(metric_names or []), "solutions": [solution(t) for t in front]}
        log.info("Pareto front of %d trials: %s", len(front), [t.number for t in front])
    path = sweep_dir / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), path)
    log.info("results: %s", path)
    return True
