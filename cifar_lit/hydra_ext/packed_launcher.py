"""hydra/launcher=packed: a multirun's jobs side by side on one machine's GPUs, ``jobs_per_device`` on each.

Why a launcher of the project's own: a job must see only its device, and ``CUDA_VISIBLE_DEVICES`` counts only when
it is set before CUDA starts in a process. Hydra's joblib launcher runs jobs in loky workers, shared by all jobs,
so it cannot give a job its device that way. Here every slot gets its own worker process (multiprocessing's
``spawn``), started with the slot's environment: ``CUDA_VISIBLE_DEVICES`` (its device; empty for a ``cpu`` slot),
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (its share of the cores) and ``CIFAR_LIT_DEVICE_SLOT`` (its slot, for logs).
The worker runs the slot's jobs one after another as Hydra's own launchers run a job (``run_job`` in the job's sweep
folder), sending each ``JobReturn`` back through a pipe (cifar_lit.hydra_ext.job_process): a job pays no process
start-up, which on an H200 took 15-19 s with six processes starting at once, more than a short job trains.

Failures behave as with the basic launcher: a job whose task fails writes its ``FAILED.txt`` (cifar_lit.hydra_ext.
runner) and the others go on. A job whose process dies without a result (killed, segfault, ``os._exit``) would end
the whole sweep under the basic launcher; here it gets a ``FAILED.txt`` naming the exit status and returns ``None``
as a failed job of cifar_lit's does, so the others keep running, the sweep summary counts it and the sweep exits 1;
its slot gets a new worker. Ctrl+C or SIGTERM to the launcher stops the workers (SIGTERM: a training saves its
``last.ckpt`` first).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import connection, get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.basecontainer import BaseContainer

from cifar_lit.errors import FAILURE_FILE, ConfigError
from cifar_lit.hydra_ext.job_process import child_environment, slot_worker, task_reference

log = logging.getLogger(__name__)

SLOT_ENV = "CIFAR_LIT_DEVICE_SLOT"
CPU = "cpu"  # the device of the slots on a machine without CUDA devices: the jobs see no GPU


@dataclass(frozen=True)
class Slot:
    index: int
    device: str  # a CUDA device as CUDA_VISIBLE_DEVICES names it, or CPU

    @property
    def cuda_visible_devices(self) -> str:
        return "" if self.device == CPU else self.device


def visible_cuda_devices() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` names them: its own list when set (a
    child gets one of them), else 0..n-1. ``device_count`` asks NVML or the driver and creates no CUDA context."""
    import torch

    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def device_list(devices: Any) -> list[str]:
    """``auto``: every visible CUDA device, or one ``cpu`` group on a machine without one; else the given ids."""
    if devices == "auto":
        return visible_cuda_devices() or [CPU]
    if isinstance(devices, ListConfig):
        devices = OmegaConf.to_container(devices)
    listed = [str(d).strip() for d in (devices if isinstance(devices, (list, tuple)) else [devices])]
    if not listed or not all(listed):
        raise ConfigError(f"hydra.launcher.devices must be auto or a list of devices like [0, 1], got {devices!r}")
    return listed


def positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"hydra.launcher.{name} must be a whole number >= 1, got {value!r}")
    return value


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class Worker:
    """A slot's process and its end of the pipe: sweep configs go out, ``JobReturn`` objects come back."""

    slot: Slot
    process: BaseProcess
    jobs: Connection


@dataclass
class RunningJob:
    idx: int
    overrides: list[str]
    worker: Worker
    config: DictConfig  # the job's sweep config
    job_dir: Path
    result: JobReturn | None = None


def job_dir(sweep_config: DictConfig) -> Path:
    """The job's folder, as ``run_job`` will compute it (``hydra.sweep.dir``/``hydra.sweep.subdir``)."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)  # for ${hydra:...} in the folder names
    try:
        sweep = sweep_config.hydra.sweep
        return Path(str(OmegaConf.select(sweep, "dir"))).absolute() / str(OmegaConf.select(sweep, "subdir"))
    finally:
        if before is not None:
            HydraConfig.instance().set_config(before)


def exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by signal {signal.Signals(-exitcode).name}"
    return f"exited with status {exitcode}"


def died_job_return(job: RunningJob) -> JobReturn:
    """What a job whose process ended without a result returns: ``None`` and a ``FAILED.txt``, as a failed job of
    cifar_lit's (cifar_lit.hydra_ext.runner). A FAILED status would make Hydra's basic sweeper raise once the
    batch is done, before the sweep summary; the Optuna sweeper counts ``None`` as a failed trial."""
    message = f"the job's process {exit_description(job.worker.process.exitcode)} before it returned a result"
    log.error("#%d (slot %d): %s", job.idx, job.worker.slot.index, message)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    with (job.job_dir / FAILURE_FILE).open("a") as file:  # after what the job wrote there, if anything
        file.write(f"JobProcessDied: {message} (hydra/launcher=packed)\n")
    if not (job.job_dir / ".hydra").exists():  # died before run_job wrote it: the summary lists jobs that have it
        (job.job_dir / ".hydra").mkdir()
        OmegaConf.save(job.config.hydra.overrides.task, job.job_dir / ".hydra" / "overrides.yaml")
    ret = JobReturn(overrides=list(job.overrides), working_dir=str(job.job_dir), status=JobStatus.COMPLETED)
    ret.cfg = OmegaConf.create({k: v for k, v in job.config.items_ex(resolve=False) if k != "hydra"})
    ret.hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(job.config.hydra, resolve=False)})
    ret.hydra_cfg.hydra.runtime.output_dir = str(job.job_dir)
    ret.task_name = str(job.config.hydra.job.name)
    ret.return_value = None
    return ret


@contextmanager
def stopping_workers(workers: dict[int, Worker]) -> Iterator[threading.Event]:
    """While jobs run: SIGTERM sets the event the launch loop checks between its steps (an exception raised by the
    handler could land between a worker's start and its entry in ``workers``, leaving it untracked). On the way
    out after Ctrl+C, SIGTERM or an error: SIGTERM the workers still running, wait a while, kill what is left."""
    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set()) if main_thread else None
    try:
        yield stop
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        alive = [worker for worker in workers.values() if worker.process.is_alive()]
        if alive:
            log.error("stopping %d job processes", len(alive))
        for worker in alive:
            worker.process.terminate()
        for worker in alive:
            worker.process.join(timeout=60)  # a training saves last.ckpt on SIGTERM
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


class PackedLauncher:
    def __init__(self, devices: Any = "auto", jobs_per_device: int = 2, threads_per_job: Any = "auto") -> None:
        self.devices = device_list(devices)
        self.jobs_per_device = positive("jobs_per_device", jobs_per_device)
        slot_count = len(self.devices) * self.jobs_per_device
        # slot i is on device i mod n: the first jobs spread over the devices before any doubles up
        self.slots = [Slot(i, self.devices[i % len(self.devices)]) for i in range(slot_count)]
        auto = threads_per_job == "auto"
        self.threads = max(1, usable_cores() // slot_count) if auto else positive("threads_per_job", threads_per_job)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task: tuple[str, str] | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.task = task_reference(task_function)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        at_once = min(len(job_overrides), len(self.slots))
        log.info(
            f"Launching {len(job_overrides)} jobs, {at_once} at a time on devices {', '.join(self.devices)} "
            f"({self.jobs_per_device} a device, {self.threads} threads each), sweep output dir: {sweep_dir}"
        )
        pending = [(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)][::-1]
        free, workers, running, done = list(self.slots), {}, {}, {}
        with stopping_workers(workers) as stop:
            while pending or running:
                while pending and free and not stop.is_set():
                    idx, overrides = pending.pop()
                    slot = free.pop(0)
                    if slot.index not in workers:
                        workers[slot.index] = self.start_worker(slot)
                    running[slot.index] = self.submit(workers[slot.index], idx, overrides)
                if stop.is_set():
                    raise SystemExit(128 + signal.SIGTERM)
                ended = self.wait(running)
                if stop.is_set():  # a signal to the whole group (Ctrl+C, timeout) ended them: stopped, not failed
                    raise SystemExit(128 + signal.SIGTERM)
                for job in ended:
                    slot = job.worker.slot
                    del running[slot.index]
                    free = sorted([*free, slot], key=lambda s: s.index)
                    if job.result is None:  # its worker died with it (or sent what cannot be read): a new one next
                        retire(workers.pop(slot.index))
                    done[job.idx] = job.result if job.result is not None else died_job_return(job)
            for worker in workers.values():  # all jobs done: the workers end
                worker.jobs.send(None)
            for worker in workers.values():
                worker.process.join()
        return [done[initial_job_idx + i] for i in range(len(job_overrides))]

    def start_worker(self, slot: Slot) -> Worker:
        """A fresh process for ``slot``, started with the slot's environment (spawn copies os.environ)."""
        assert self.hydra_context is not None and self.task is not None
        context = get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        resolvers = list(BaseContainer._resolvers)
        singletons = Singleton.get_state()["instances"]
        args = (theirs, self.task, self.hydra_context, singletons, resolvers, self.threads)
        process = context.Process(target=slot_worker, args=args, name=f"slot {slot.index}")
        threads = str(self.threads)
        env = {"CUDA_VISIBLE_DEVICES": slot.cuda_visible_devices, SLOT_ENV: str(slot.index)}
        with child_environment({**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}):
            process.start()
        theirs.close()  # the worker holds the only other end: its exit shows as the end of the pipe
        return Worker(slot, process, ours)

    def submit(self, worker: Worker, idx: int, overrides: list[str]) -> RunningJob:
        assert self.config is not None and self.hydra_context is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        log.info(
            f"\t#{idx} : {' '.join(filter_overrides(overrides))} -> slot {worker.slot.index} "
            f"(CUDA_VISIBLE_DEVICES={worker.slot.cuda_visible_devices})"
        )
        job = RunningJob(idx, overrides, worker, sweep_config, job_dir(sweep_config))
        with suppress(OSError):  # the worker died before it could take the job: ``wait`` sees its end
            worker.jobs.send(sweep_config)
        return job

    @staticmethod
    def wait(running: dict[int, RunningJob]) -> list[RunningJob]:
        """Blocks until a job's result comes or its worker ends, or a second passed; returns the jobs that ended
        (with ``result`` None when the worker died first)."""
        by_pipe = {job.worker.jobs: job for job in running.values()}
        by_sentinel = {job.worker.process.sentinel: job for job in running.values()}
        ready = connection.wait([*by_pipe, *by_sentinel], timeout=1)  # at least once a second: to see a SIGTERM
        ended: dict[int, RunningJob] = {}
        for obj in ready:
            job = by_pipe[obj] if isinstance(obj, Connection) else by_sentinel[obj]
            if job.idx not in ended:
                receive(job)
                ended[job.idx] = job
        return list(ended.values())


def retire(worker: Worker) -> None:
    """A worker whose job ended without a result: whatever is left of it goes (its exit status stays readable)."""
    if worker.process.is_alive():
        worker.process.terminate()
    worker.process.join()
    worker.jobs.close()


def receive(job: RunningJob) -> None:
    """The job's result, if its worker sent one; without one (the worker ended without sending, died while
    sending, or sent what cannot be unpickled here) ``result`` stays None and the job counts as died."""
    try:
        if job.worker.jobs.poll():
            job.result = job.worker.jobs.recv()
    except (EOFError, OSError):
        pass
    except Exception:
        log.exception("#%d: could not read the job's result", job.idx)
