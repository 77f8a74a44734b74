"""A plain multirun (Hydra's basic sweeper) rerun with the same command and ``hydra.sweep.dir`` picks up where it
stopped: each job first reads what an earlier run of it left in its folder.

* finished (``run.json`` says so, with the final test when the run tests): the job returns the recorded metrics
  without training again; the sweep summary reads its events as before;
* interrupted after a checkpoint (``checkpoints/last.ckpt``): the job resumes from it (``ckpt_path=last``; one cut
  short by a crash is kept aside as ``last.ckpt.unreadable`` and the job starts again), in its
  own folder, as a single run does;
* failed, or nothing saved: the job runs again from the start (an earlier ``FAILED.txt`` goes).

A job's folder is its job number's, which Hydra's basic sweeper gives in the order of the grid: the same command
gives every cell the same folder. ``run.json`` records the job's overrides (``job_overrides``), and a folder that
holds another job's run is refused in one line, not trained over. The Optuna sweeper's jobs do the same when a
rerun search retries a trial its dead process left running: the retry gets the dead trial's job number, so its
folder (cifar_lit.hydra_ext.optuna_resume); the two jobs' overrides differ only in the trial they report to.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cifar_lit.errors import FAILURE_FILE, RUN_FILE, ConfigError
from cifar_lit.hydra_ext.job_name import TRIAL_CALLBACK
from cifar_lit.hydra_ext.runner import is_multirun, task_overrides

log = logging.getLogger(__name__)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.cifar_lit_optuna_sweeper.CifarLitOptunaSweeper"


def job_overrides() -> list[str] | None:
    """The running multirun job's own overrides (the sweep's values for this job and the command's fixed ones)."""
    return task_overrides() if is_multirun() else None


def same_job(recorded: list[str], overrides: list[str]) -> bool:
    """Whether two runs' overrides are those of one job: equal but for the Optuna trial they report to (a retried
    trial has a number of its own)."""

    def job(items: list[str]) -> list[str]:
        return [item for item in items if not item.lstrip("+~").startswith(f"{TRIAL_CALLBACK}.trial_number=")]

    return job(recorded) == job(overrides)


def read_record(path: Path) -> dict[str, Any] | None:
    """A run's ``run.json`` as a dict; None when it is missing or unreadable (a run killed before writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_finished(record: dict[str, Any], cfg: DictConfig) -> bool:
    """Fit done with its result (``<monitor>_best``: a fit that never logged it failed) and, when the run tests, the
    test too (a job stopped during its final test is not finished)."""
    metrics = record.get("metrics") or {}
    result = cfg.get("monitor") is None or f"{cfg.monitor}_best" in metrics
    return record.get("status") == "finished" and result and (not cfg.get("test") or "test/acc" in metrics)


def resume_sweep_job(cfg: DictConfig) -> dict[str, float] | None:
    """What an earlier run of this sweep job left: its recorded metrics if it finished (the job is then
    done), else None, with ``cfg.ckpt_path=last`` set when it left a ``last.ckpt`` to resume from."""
    overrides = job_overrides()
    if overrides is None or not cfg.get("resume_jobs", True):
        return None
    if HydraConfig.get().sweeper.get("_target_") not in (BASIC_SWEEPER, OPTUNA_SWEEPER):
        return None
    folder = Path(HydraConfig.get().runtime.output_dir)
    record = read_record(folder / RUN_FILE)
    if record is None or record.get("job_overrides") is None:
        return None  # nothing ran here, or a run that recorded no overrides: start afresh
    if not same_job(record["job_overrides"], overrides):
        raise ConfigError(
            f"{folder} holds the run of another job ({' '.join(record['job_overrides'])}), not this one "
            f"({' '.join(overrides)}): a sweep resumes with the command and hydra.sweep.dir it started with; "
            "give a changed sweep a new hydra.sweep.dir"
        )
    (folder / FAILURE_FILE).unlink(missing_ok=True)
    if is_finished(record, cfg):
        log.info("job already finished in %s (run.json): its recorded metrics, not trained again", folder)
        return {name: float(value) for name, value in record["metrics"].items()}
    last = folder / "checkpoints" / "last.ckpt"
    if cfg.get("ckpt_path") is None and last.is_file():
        if not zipfile.is_zipfile(last):  # torch.save's format; a file cut short lacks the zip's closing directory
            last.replace(last.with_name(f"{last.name}.unreadable"))
            log.warning(
                "%s is unreadable (cut short by a crash?): kept as %s.unreadable; the job starts again", last, last.name
            )
            return None
        log.info("job interrupted earlier: resuming from %s", last)
        with open_dict(cfg):
            cfg.ckpt_path = "last"
    return None
