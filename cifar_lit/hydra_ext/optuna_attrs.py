"""What a search writes into its study so that the study reads on its own, in optuna-dashboard
(``optuna-dashboard <sweep dir>/optuna.journal``, docs/sweeping.md) or any other Optuna tool, without the sweep
folder's summary beside it:

* the objectives' names (``study.set_metric_names``): a job returns ``<monitor>_best``, so the single objective is
  ``val/acc_best`` by default (``objectives=[...]``: those; cifar_lit.training.monitor.objective_names).
  Unnamed, the dashboard calls it "Objective 0" and a reader has to guess which metric
  and which of its values (the last epoch's or the best) was optimised;
* each trial's job: ``job_dir``, its run folder relative to the sweep folder (``sweep_dir``, the absolute folder
  that cifar_lit.hydra_ext.optuna_resume records before the job starts, together with ``job``, its number), where
  its checkpoints, TensorBoard events and run.json are; and ``epochs``, the epochs it had trained at its last
  report, the trial's last intermediate value's step (the pruning callback reports ``<monitor>`` at ``step=epochs
  trained`` after each validation). For a pruned trial that is the epochs it ran, shown beside its state. The
  study itself holds it, so it is right even when the job ran on a machine whose folder this one cannot read
  (run.json records no epoch count; the job's TensorBoard events, which the sweep summary reads, cost far more).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning

from cifar_lit.hydra_ext.optuna_resume import SWEEP_DIR

log = logging.getLogger(__name__)

JOB_DIR, EPOCHS = "job_dir", "epochs"  # the user attrs record_job writes


def name_objectives(study: optuna.Study, names: list[str]) -> None:
    """Name the study's objectives (``study.set_metric_names``) unless it has those names already: a resumed search
    or another worker writes nothing more into the storage. A study that holds other names (resumed with another
    monitor of the same direction) keeps them, with a warning: its values are the first search's metric too."""
    if not names or study.metric_names == names:
        return
    if study.metric_names is not None:
        log.warning(
            "study %s names its objectives %s, not %s: kept (its trials returned those)",
            study.study_name,
            study.metric_names,
            names,
        )
        return
    with warnings.catch_warnings():  # "experimental" since Optuna 3.2: noise in every search's log
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(names)


def job_attrs(trial: optuna.trial.FrozenTrial, job_dir: Path | None) -> dict[str, Any]:
    """The user attrs that say where the trial's job ran and how far it got (the module's docstring)."""
    attrs: dict[str, Any] = {}
    if job_dir is not None:
        sweep_dir = trial.user_attrs.get(SWEEP_DIR) or job_dir.parent
        attrs[JOB_DIR] = Path(os.path.relpath(os.path.abspath(job_dir), sweep_dir)).as_posix()
    if trial.intermediate_values:
        attrs[EPOCHS] = int(max(trial.intermediate_values))
    return attrs


def record_job(study: optuna.Study, trial_number: int, job_dir: Path | None) -> dict[str, Any]:
    """Record trial ``trial_number``'s job folder and epochs as its user attrs, read from the storage (the job
    reported its epochs there, from its own process); returns what was recorded. To be called once its job has
    ended and before the study is told how: a finished trial takes no more attrs. Nothing is written for a trial
    that is finished already (another worker found it stale and failed it)."""
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial_number)
    trial = storage.get_trial(trial_id)
    if trial.state.is_finished():
        return {}
    attrs = job_attrs(trial, job_dir)
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)
    return attrs
