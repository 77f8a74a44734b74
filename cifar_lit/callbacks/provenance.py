"""Every run explains itself: ``run.json`` in the run dir, and the same facts as TensorBoard hparams.

``run.json`` says what ran (git commit and whether the tree had changes, when run from the project's checkout; the
versions of the project and the packages; the command that runs it again), on what (accelerator, device name,
devices, nodes, precision, and the precision asked for: ``auto`` when the run chose it,
``cifar_lit.training.precision``), with which data (root, layout and the checksums the data cache stores), and
how it went (parameter count, wall time, status, best ``<monitor>`` and the final ``test/acc``, and
``test/acc_tta`` with test-time augmentation). It is written when fit starts, so a crashed or still-running run
has one, and completed at the end of fit and of the test. A fit resumed from a checkpoint keeps the first
attempt's ``started_at`` and adds ``resumed_at`` and ``earlier_wall_time_s``.

The TensorBoard HPARAMS tab gets one entry per run, made to compare the runs of a sweep: the hyper-parameters a
person compares (``comparable_hparams``: a short curated set and the run's command-line overrides, no ``_target_``,
paths or callback internals; the whole config stays in ``run.json``'s command and ``.hydra/``) against the metrics
``<monitor>_best``, the final ``val/acc``, ``test/acc`` (and ``test/acc_tta``), the epochs run and the wall time.
TensorBoard keeps the first hparams summary of a run and ignores later ones, so it is written once, when the run's
last stage ends: after the test when the run tests, else after fit.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import re
import shlex
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from cifar_lit.errors import RUN_FILE
from cifar_lit.hydra_ext.job_resume import job_overrides, read_record
from cifar_lit.hydra_ext.runner import is_multirun, task_overrides
from cifar_lit.reporting.hparams import comparable_hparams, hparams_summary, swept_columns
from cifar_lit.reporting.secrets import mask_secrets
from cifar_lit.training.epoch_logger import axis_step

ENTRY_POINT = "python -m cifar_lit.train"


PROJECT = "cifar_lit"  # pyproject.toml's [project] name
PACKAGES = (PROJECT, "torch", "torchvision", "lightning", "hydra-core", "torchmetrics")


TEST_METRICS = ("test/acc", "test/acc_tta")  # the second only with test-time augmentation (cifar_lit.tta)


# HPARAMS metrics that are no logged scalar: written as scalars once, at the last epoch, where TensorBoard reads them
EPOCHS_RUN, WALL_TIME = "train/trained_epochs", "train/wall_time_s"  # sorted after train/loss in TIME SERIES


def git_state(repo: Path) -> dict[str, Any]:
    """The commit checked out in ``repo`` and whether tracked or new files differ from it (``dirty``); both None
    when git is missing or ``repo`` is not in a git repository (e.g. an installed package)."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(repo), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def project_name(pyproject: Path) -> str | None:
    """The ``[project]`` name of a pyproject.toml, normalised (``cifar-lit`` -> ``cifar_lit``); None without one."""
    try:
        text = pyproject.read_text()
    except OSError:
        return None
    try:
        import tomllib
    except ImportError:  # Python 3.10: the first `name = "..."` (the [project] table's, in pyproject files)
        match = re.search(r"""^name\s*=\s*["']([^"']+)["']""", text, re.MULTILINE)
        name = match[1] if match else None
    else:
        try:
            name = tomllib.loads(text).get("project", {}).get("name")
        except tomllib.TOMLDecodeError:
            return None
    return re.sub(r"[-_.]+", "_", name).lower() if isinstance(name, str) else None


def is_project_checkout(root: Path) -> bool:
    """Whether ``root``, the folder that holds the package, is the project's own git checkout: its pyproject.toml
    names the project and it is the top level of its git repository. A wheel installed in a venv inside someone's
    repository, or a copy of the project vendored into one, would otherwise report that repository's commit."""
    if project_name(root / "pyproject.toml") != PROJECT:
        return False
    try:
        command = ["git", "-C", str(root), "rev-parse", "--show-toplevel"]
        top = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return Path(top).resolve() == root.resolve()


@functools.cache
def code_state() -> dict[str, Any]:
    """The git state of the code this process runs, taken once, at its first fit (not at import: importing the
    training code runs no git). The jobs of a multirun sweep share their process (each joblib worker its own), so
    the jobs that start after a commit made during the sweep still name the code they run, not the new HEAD.
    Only the project's own checkout is asked (``is_project_checkout``); an installed package has no commit, its
    version is in ``package_versions``."""
    root = Path(__file__).resolve().parents[2]  # the folder that holds cifar_lit/
    return git_state(root) if is_project_checkout(root) else {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    """Python's version and the installed version of this project and of each package that decides a run's numbers
    (None: absent, e.g. the project run from a checkout it is not installed from)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(trainer: L.Trainer) -> dict[str, Any]:
    """Where the run computes: accelerator type, device name, devices per node, nodes, strategy and precision, and
    the ``CUDA_VISIBLE_DEVICES`` the process started with (None when unset): which GPU ``cuda:0`` was, e.g. in a
    sweep of hydra/launcher=packed."""
    device = trainer.strategy.root_device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "accelerator": device.type,
        "name": name,
        "devices": trainer.num_devices,
        "nodes": trainer.num_nodes,
        "strategy": type(trainer.strategy).__name__,
        "precision": str(trainer.precision),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def reproduce_command() -> str | None:
    """``python -m cifar_lit.train`` and this run's command-line overrides (Hydra's task overrides), shell-quoted;
    None outside Hydra. A multirun job also gets ``hydra.mode=RUN``, so the command reruns that one job even when
    an override (e.g. ``hparams_search=optuna``) makes the config a sweep. Passwords in URLs are masked
    (``cifar_lit.reporting.secrets``): the command then needs the password put back, or the storage given through
    $CIFAR_LIT_OPTUNA_STORAGE, which the command names instead."""
    if not HydraConfig.initialized():
        return None
    overrides = task_overrides()
    if is_multirun():
        overrides.append("hydra.mode=RUN")
    return " ".join([ENTRY_POINT, *(shlex.quote(mask_secrets(override)) for override in overrides)])


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(path)


def earlier_attempts(path: Path, now: str) -> dict[str, Any]:
    """What a resumed fit keeps of the ``run.json`` its interrupted attempts wrote: the first ``started_at``, the
    times it was resumed (``resumed_at``), and the wall time already spent (``earlier_wall_time_s``, so that the
    run's total is ``earlier_wall_time_s + wall_time_s``). Nothing when there is no readable earlier record."""
    earlier = read_record(path)
    if earlier is None:
        return {}
    spent = (earlier.get("earlier_wall_time_s") or 0.0) + (earlier.get("wall_time_s") or 0.0)
    return {
        "started_at": earlier.get("started_at", now),
        "resumed_at": [*earlier.get("resumed_at", []), now],
        "earlier_wall_time_s": round(spent, 3),
    }


class RunProvenance(Callback):
    """Writes ``<output_dir>/run.json`` and the run's TensorBoard hparams, on global rank 0 only.

    Args:
        output_dir: the run dir (``${paths.output_dir}``).
        monitor: the checkpoint metric; its best value ``<monitor>_best`` is the run's headline metric.
        hparams_after_test: the run tests after fit (``${test}``): wait for ``test/acc`` before writing hparams.

    ``config`` (the composed config) and ``precision_requested`` (``trainer.precision`` as composed, before ``auto``
    was resolved) are set by ``cifar_lit.train``: Hydra cannot pass the root config to a node.
    """

    def __init__(self, output_dir: str | Path, monitor: str = "val/acc", hparams_after_test: bool = False) -> None:
        self.path = Path(output_dir) / RUN_FILE
        self.monitor_best = f"{monitor}_best"
        self.hparams_after_test = hparams_after_test
        self.config: DictConfig | None = None
        self.precision_requested: str | int | None = None
        self.record: dict[str, Any] = {}
        self._fit_started = 0.0
        self._final_eval: list[str] = []

    # ------------------------------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._fit_started = time.perf_counter()
        self.record = self.describe(trainer, pl_module)
        if trainer.ckpt_path:  # a resumed fit continues the run that wrote run.json before
            self.record |= earlier_attempts(self.path, self.record["started_at"])
        write_json(self.path, self.record)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        split = self.monitor_best.split("/")[0]  # the final accuracy of the monitored split, when it was logged
        self._final_eval = [f"{split}/acc"] if f"{split}/acc" in trainer.callback_metrics else []
        if trainer.is_global_zero and self.record and trainer.ckpt_path and hasattr(pl_module, "resumed_results"):
            best = pl_module.resumed_results().get(self.monitor_best)  # a fit resumed at its end logs nothing
            self.record["metrics"] |= {} if best is None else {self.monitor_best: best}
        self._stage_done(trainer, (self.monitor_best,), write_hparams=not self.hparams_after_test)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stage_done(trainer, TEST_METRICS, write_hparams=self.hparams_after_test)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero and self.record:
            self.record.update(status="failed", error=mask_secrets(f"{type(exception).__name__}: {exception}"))
            self.record["wall_time_s"] = round(time.perf_counter() - self._fit_started, 3)
            write_json(self.path, self.record)

    # -------------------------------------------------------------------------------------------- parts
    def describe(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Everything known when fit starts; ``wall_time_s`` and ``metrics`` are filled in at the end."""
        cfg = self.config
        datamodule = trainer.datamodule
        return {
            "command": reproduce_command(),
            "job_overrides": job_overrides(),  # a multirun job's: what a rerun sweep checks its folder against
            "tags": list(cfg.get("tags") or []) if cfg is not None else [],
            "seed": cfg.get("seed") if cfg is not None else None,
            "git": dict(code_state()),
            "versions": package_versions(),
            "device": device_info(trainer) | {"precision_requested": self.precision_requested},
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),  # None outside SLURM; a requeue keeps it
            "data": datamodule.source_info() if hasattr(datamodule, "source_info") else None,
            "parameters": sum(p.numel() for p in pl_module.parameters()),
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "wall_time_s": None,
            "status": "running",
            "metrics": {},
        }

    def _stage_done(self, trainer: L.Trainer, metrics: tuple[str, ...], write_hparams: bool) -> None:
        """Record ``metrics`` (those logged) and the wall time so far; write the hparams if this is the last
        stage."""
        if not trainer.is_global_zero or not self.record:  # e.g. a test without a fit: nothing to complete
            return
        for metric in metrics:
            value = trainer.callback_metrics.get(metric)
            if value is not None:
                self.record["metrics"][metric] = float(value)
        self.record.update(status="finished", wall_time_s=round(time.perf_counter() - self._fit_started, 3))
        write_json(self.path, self.record)
        if write_hparams:
            self.log_hparams(trainer)

    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters a person compares between runs (``comparable_hparams`` of the config)."""
        return comparable_hparams(self.config if self.config is not None else OmegaConf.create())

    def log_hparams(self, trainer: L.Trainer) -> None:
        """One hparams summary per TensorBoard logger, with the run's metrics; nothing without a metric (a run
        that never validated), since an hparams entry without metrics says nothing TensorBoard can compare.

        TensorBoard shows a metric's last scalar in the run: the logged ones already hold the values (the final
        test at the epoch after the last one trained, ``*_best`` and ``val/acc`` at the last epoch), the epochs run
        and the wall time are written here."""
        metrics = list(self.record["metrics"])
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not metrics or not loggers:
            return
        extra = {EPOCHS_RUN: trainer.current_epoch, WALL_TIME: self.record["wall_time_s"]}
        summaries = hparams_summary(self.hparams(), [*metrics, *self._final_eval, *extra], swept_columns())
        for logger in loggers:
            writer = logger.experiment
            for tag, value in extra.items():
                writer.add_scalar(tag, value, axis_step(trainer, max(trainer.current_epoch - 1, 0)))
            for summary in summaries:
                writer.file_writer.add_summary(summary)
            writer.flush()
