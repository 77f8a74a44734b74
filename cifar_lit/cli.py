"""What every entry point shares: turning config groups into objects, clean errors, the final metrics table."""

from __future__ import annotations

import ctypes
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from cifar_lit.checkpoint import CheckpointError
from cifar_lit.errors import ConfigError, DataError
from cifar_lit.module import BlockClassifier
from cifar_lit.report import FAILURE_FILE

log = logging.getLogger(__name__)
T = TypeVar("T")
USER_ERRORS = (ConfigError, DataError, CheckpointError, FloatingPointError)


def plain(cfg: DictConfig | None) -> Any:
    """A resolved config node as plain Python containers (what a checkpoint can store safely)."""
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


def build_module(cfg: DictConfig) -> BlockClassifier:
    return BlockClassifier(
        model=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")) or None,
        channels_last=cfg.get("channels_last", True),
        compile=cfg.get("compile", False),
        label_smoothing=cfg.get("label_smoothing", 0.0),
        tta=cfg.get("tta", "none"),
    )


def set_threads(threads: Any) -> None:
    """``torch.set_num_threads(threads)`` before any tensor work, so parallel jobs (hydra/launcher=joblib) share
    the cores; None keeps torch's default."""
    if threads is None:
        return
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a number of threads >= 1 or null, got {threads!r}")
    torch.set_num_threads(threads)
    log.info("torch threads: %d", threads)


GLIBC_M_TRIM_THRESHOLD, GLIBC_M_MMAP_MAX = -1, -4  # mallopt() parameters, from glibc's malloc.h


def keep_freed_memory(enabled: bool = True) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    CPU tensors come from malloc. By default glibc serves each large block (a batch of activations: 33 MiB for
    128 x 128 x 32 x 32 in bf16) with its own ``mmap`` and unmaps it when the tensor is freed, so every step
    page-faults all of its activations in again: on the 2-core CPU about 100,000 faults and a third of the time
    of a four_blocks step, spent in the kernel (docs/performance.md). With mmap off and heap trimming off, freed
    blocks are reused. Returns whether it applied (Linux with glibc; elsewhere it does nothing)."""
    if not enabled or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    applied = libc.mallopt(GLIBC_M_MMAP_MAX, 0) == 1 and libc.mallopt(GLIBC_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if applied:
        log.info("malloc keeps freed memory for reuse (keep_freed_memory=true)")
    return applied


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a user error raised by the target comes out as itself, not wrapped."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def instantiate_list(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group like ``callbacks`` or ``logger`` that has a ``_target_``."""
    if not group:
        return []
    return [
        hydra.utils.instantiate(node) for node in group.values() if isinstance(node, Mapping) and "_target_" in node
    ]


def run_cli(task: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """Run ``task``. A user error (bad config value, missing data, divergence) ends a single run with its message
    and exit status 1, not a traceback. Inside a multirun any error ends only its job: the error is written to
    the job's ``FAILED.txt``, the sweep goes on, and its summary marks the job failed."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
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


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """The composed config, resolved, as a tree: the top-level values, then one branch per group (Hydra's own
    node left out), so a run's output starts with what it runs. ``.hydra/config.yaml`` in the run dir keeps it."""

    def yaml(node: DictConfig) -> Syntax:
        return Syntax(OmegaConf.to_yaml(node, resolve=True).rstrip(), "yaml", theme="ansi_dark", word_wrap=True)

    groups = [key for key, node in cfg.items() if isinstance(node, DictConfig) and key != "hydra"]
    values = [key for key in cfg if not isinstance(cfg[key], DictConfig)]
    tree = Tree("config", guide_style="dim")
    tree.add(yaml(OmegaConf.masked_copy(cfg, values)))
    for key in groups:
        tree.add(str(key)).add(yaml(cfg[key]))
    Console().print(tree)


@rank_zero_only
def print_metrics(metrics: Mapping[str, float]) -> None:
    table = Table(title="final metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    Console().print(table)
