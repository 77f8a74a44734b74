"""Hydra callback for multiruns: a summary of every sweep when it ends (one row a job, best first, failures
included)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifar_lit.errors import FAILURE_FILE

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """Writes ``summary.md``, ``summary.csv`` and ``val_acc.png`` (and ``summary_by_seed.md``/``.csv`` for a seed
    sweep) into the sweep dir and prints the tables. When a job failed, the sweep (which went on without it) exits
    with status 1, so scripts and CI notice."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # imported here: Hydra builds this callback for every run, and only a multirun's end needs the event reader
        from cifar_lit.reporting.events import ReportError
        from cifar_lit.reporting.sweeps import job_dirs, write_summary

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            paths = write_summary(sweep_dir, sweep_dir)
        except (ReportError, OSError) as err:
            log.warning("no sweep summary: %s", err)
            paths = []
        for path in paths:  # summary.md, and summary_by_seed.md when jobs differ only in seed
            if path.suffix == ".md":
                print(path.read_text())
        jobs = job_dirs(sweep_dir) if sweep_dir.is_dir() else []
        failed = [job.name for job in jobs if (job / FAILURE_FILE).is_file()]
        if failed:
            sys.exit(f"{len(failed)} of {len(jobs)} jobs failed ({', '.join(failed)}): see their {FAILURE_FILE}")
