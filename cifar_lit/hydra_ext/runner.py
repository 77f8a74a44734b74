"""How every entry point runs its task under Hydra: a user error (bad config value, missing data, divergence) ends a
single run with its message and exit status 1, not a traceback; in a multirun any error ends only its job.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cifar_lit.errors import FAILURE_FILE, USER_ERRORS

log = logging.getLogger(__name__)


T = TypeVar("T")


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """Run ``task``. A user error (bad config value, missing data, divergence) ends a single run with its message
    and exit status 1, not a traceback. Inside a multirun any error ends only its job: the error is written to
    the job's ``FAILED.txt``, the sweep goes on, and its summary marks the job failed."""
    multirun = is_multirun()
    route_lightning_logs()
    try:
        return task(cfg)
    except USER_ERRORS as err:
        log.error("%s: %s", type(err).__name__, err)
        if multirun:
            record_failure(err)
            return None
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:
        if not multirun:
            raise
        log.exception("job failed")
        record_failure(err)
        return None


def is_multirun() -> bool:
    """Whether this is a multirun job (a config composed without a Hydra run, as tests do, has no mode)."""
    return HydraConfig.initialized() and getattr(HydraConfig.get().mode, "name", None) == "MULTIRUN"


def task_overrides() -> list[str]:
    """This run's command-line overrides (Hydra's task overrides) as typed. Unresolved: an override such as the
    sweeper's ``storage=${oc.env:CIFAR_LIT_OPTUNA_STORAGE}`` names the variable, not its value (a list item read
    from the config would be resolved, the password with it)."""
    return OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)


def route_lightning_logs() -> None:
    """Send Lightning's log records (checkpoint paths, 'max_epochs reached', resume notes) through the root
    logger's handlers, i.e. into Hydra's ``train.log`` as well as the console. Lightning, imported before Hydra
    configured logging, saw a root logger without handlers and gave its loggers a console handler of their own
    with ``propagate=False``, so nothing of theirs reached the run's log file."""
    if not logging.getLogger().hasHandlers():
        return
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # the one Lightning added; the root's console handler stays
                logger.removeHandler(handler)
        logger.propagate = True


def record_failure(err: BaseException) -> None:
    path = Path(HydraConfig.get().runtime.output_dir) / FAILURE_FILE
    path.write_text(f"{type(err).__name__}: {err}\n")
