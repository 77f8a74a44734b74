"""A Hydra callback that summarises every multirun when it ends: one row a job, best first, failures included."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifar_lit.report import ReportError, write_summary

log = logging.getLogger(__name__)


class SweepSummary(Callback):
    """Writes ``summary.md``, ``summary.csv`` and ``val_acc.png`` into the sweep dir and prints the table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            paths = write_summary(sweep_dir, sweep_dir)
        except (ReportError, OSError) as err:
            log.warning("no sweep summary: %s", err)
            return
        print(paths[0].read_text())
