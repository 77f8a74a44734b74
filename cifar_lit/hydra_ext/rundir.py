"""Check at start-up that the run's output folder can be written, before Hydra creates it and long before the data
is loaded: an unwritable folder would otherwise surface as Hydra's traceback, or as a failed checkpoint save at
the end of the first epoch. A nearly full disk gets a warning.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cifar_lit.errors import ConfigError

log = logging.getLogger(__name__)


LOW_DISK_BYTES = 1 << 30  # a run writes checkpoints and logs; below 1 GiB free a long run may fail mid-way


def check_writable(folder: Path) -> None:
    """Raise ConfigError unless ``folder`` exists or can be created, and a file can be created in it. Nothing is
    left behind: the check writes in the nearest folder that already exists."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    how = "choose another with hydra.run.dir=... (hydra.sweep.dir=... for -m) or paths.log_dir=..."
    if not existing.is_dir():
        raise ConfigError(f"output folder {str(folder)!r} cannot be created: {str(existing)!r} is a file; {how}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"output folder {str(folder)!r} is not writable ({err.strerror}: {existing}); {how}") from err
    free = shutil.disk_usage(existing).free
    if free < LOW_DISK_BYTES:
        log.warning("only %.2f GB free under %s: checkpoints and logs may not fit", free / 1e9, existing)


class OutputDirCheck(Callback):
    """Hydra callback: check the run (or sweep) folder before Hydra creates it; a failure ends the program with a
    one-line message and exit status 1."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)

    @staticmethod
    def _check(folder: str) -> None:
        try:
            check_writable(Path(folder).absolute())
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(1)
