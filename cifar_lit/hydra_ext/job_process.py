"""The jobs' side of hydra/launcher=packed (cifar_lit.hydra_ext.packed_launcher): a slot's worker process.

A slot's worker is a fresh process (multiprocessing's ``spawn``), so that the environment it starts with (its
``CUDA_VISIBLE_DEVICES``) counts; it then runs its slot's jobs one after another, as the basic launcher runs a
sweep's jobs in one process, so that a job does not pay a process's start-up (imports, a CUDA context: 15-19 s
with six starting at once on an H200, docs/gpu.md). Spawn sends with pickle, which limits what can go: the task
function goes as (module, qualname) and is found again there; OmegaConf's resolvers (closures) do not go at all;
each ``JobReturn`` comes back with plain configs.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.basecontainer import BaseContainer

from cifar_lit.hydra_ext.entry import expose_project_plugins

log = logging.getLogger(__name__)


def resolve_task(module: str, qualname: str) -> Callable[..., Any]:
    """The function ``module.qualname`` with its decorators' ``functools.wraps`` layers taken off: the task that
    Hydra runs (``cifar_lit.train.main`` the module attribute is a wrapper around it)."""
    found: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return inspect.unwrap(found)


def task_reference(task: TaskFunction) -> tuple[str, str]:
    """(module, qualname) by which a job's process finds ``task``: pickle cannot send the task by value, and by
    reference it would find the module attribute, a wrapper. Checked here, before any job starts."""
    module, qualname = getattr(task, "__module__", None), getattr(task, "__qualname__", None)
    try:
        found = resolve_task(module, qualname) if module and qualname else None
    except (ImportError, AttributeError):
        found = None
    if found is not task:
        raise RuntimeError(
            f"hydra/launcher=packed runs each job in a new process, which finds the task function by its module and "
            f"name; {module}.{qualname} is not that function there (defined inside another function?). Define the "
            "task at module level, or use hydra/launcher=basic."
        )
    return module, qualname


def slot_worker(
    jobs: Connection,
    task: tuple[str, str],
    hydra_context: HydraContext,
    singletons: dict[Any, Any],
    resolvers: list[str],
    threads: int,
) -> None:
    """A slot's process: Hydra's state as the launcher had it, then each sweep config received on ``jobs`` run as
    Hydra's launchers run a job, its ``JobReturn`` sent back, until ``None`` comes.

    OmegaConf's resolvers are closures, which pickle cannot send: the worker has its own, registered as the
    launcher's were (Hydra's by ``setup_globals``, cifar_lit's when the package is imported)."""
    expose_project_plugins()  # Singleton.set_state scans the plugins again
    setup_globals()
    Singleton.set_state({"instances": singletons, "omegaconf_resolvers": BaseContainer._resolvers})
    if missing := sorted(set(resolvers) - set(BaseContainer._resolvers)):
        log.warning("resolvers of the launcher's process not registered in the job's: %s", ", ".join(missing))
    import torch

    torch.set_num_threads(threads)
    task_function = resolve_task(*task)
    while (sweep_config := jobs.recv()) is not None:
        send_result(jobs, run_one(hydra_context, task_function, sweep_config))
        if torch.cuda.is_initialized():  # the next job starts with the memory this one cached given back
            torch.cuda.empty_cache()
    jobs.close()


def run_one(hydra_context: HydraContext, task_function: TaskFunction, sweep_config: DictConfig) -> JobReturn:
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    # as plain configs: Hydra's plugin scan, run again in this process, redefined the plugins' config classes, and
    # pickle sends a structured config's class by name only when that name still leads to the same class
    ret.cfg, ret.hydra_cfg = plain(ret.cfg), plain(ret.hydra_cfg)
    return ret


def send_result(jobs: Connection, ret: JobReturn) -> None:
    try:
        jobs.send(ret)
    except Exception as err:  # pickling: only a failed task's exception may hold something unpicklable
        if ret.status != JobStatus.FAILED:
            raise
        ret.return_value = RuntimeError(f"{ret._return_value!r} (not picklable: {err})")
        jobs.send(ret)


def plain(config: DictConfig | None) -> DictConfig | None:
    return None if config is None else OmegaConf.create(OmegaConf.to_container(config, resolve=False))


@contextmanager
def child_environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in os.environ while a child starts (spawn copies the environment), then as they were."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
