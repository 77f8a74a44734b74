"""What SLURM needs from the project's configs: the GPUs a job asks for, the run folder of a training inside a job,
one line for a submission sbatch refuses, and submitit's repeated sacct warnings cut to one. ``register()`` runs
when ``cifar_lit`` is imported: before an entry point, or a ``compose()`` of the configs, resolves them.

- ``gpus_per_node: ${slurm_gpus:${trainer.accelerator},${trainer.devices},${hydra.launcher.partition}}``:
  ``trainer.devices`` GPUs, none for ``trainer.accelerator=cpu`` (``trainer=cpu``, ``trainer=ddp_cpu``), and for
  ``auto`` what the partition has: ``sinfo`` lists its nodes' generic resources, and a partition without ``gpu``
  among them gets no ``--gpus-per-node`` (sbatch would refuse the job: "Invalid generic resource (gres)
  specification"). Where ``sinfo`` cannot tell (missing, slow, failing, unknown partition), ``trainer.devices``.
- ``hydra.run.dir: ${slurm_run_dir:<runs folder>,${task_name},<time stamp>}``: under SLURM the folder is named by
  the job id, so that every srun task of a DDP run, and the job once requeued, use the same one; the job's second
  training (another srun step, another command in a ``salloc`` shell or batch script) gets ``<job id>-2_<task>``,
  the third ``-3``, ... (``claim_run_folder``). Outside SLURM, the time stamp.
- ``refused_submission``: sbatch's refusal as one line naming the ``hydra.launcher`` setting to change
  (hydra_plugins/cifar_lit_slurm_launcher ends the command with it instead of submitit's traceback; sbatch's own
  error lines, which submitit prints as they come, stay above it).
- submitit learns a job's state from ``sacct``. On a cluster without accounting (a test cluster, some small sites)
  every poll fails and logs the same warning; the job still ends when its result file appears, so the first
  warning says all there is to say.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cifar_lit.hydra_ext.hydra_compat import register_resolver

SACCT_WARNING = "Bypassing sacct error"
SINFO_TIMEOUT_S = 10.0  # sinfo asks the controller; a hung one must not hold up the submission for long


@functools.lru_cache
def partition_has_gpus(partition: str | None) -> bool | None:
    """Whether ``partition`` (None: the cluster's default, starred by ``sinfo``) has nodes with GPUs among their
    generic resources; None when ``sinfo`` cannot tell. One question per partition and process."""
    command = ["sinfo", "--noheader", "--format=%P|%G"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):  # not installed (a container), not executable, hung
        return None
    if result.returncode != 0:
        return None
    rows = [line.partition("|")[::2] for line in result.stdout.splitlines() if "|" in line]
    if partition is None:
        gres = [g for name, g in rows if name.endswith("*")]
    else:
        gres = [g for name, g in rows if name.rstrip("*") == partition]
    return any("gpu" in g for g in gres) if gres else None


def slurm_gpus(accelerator: str, devices: int, partition: str | None = None) -> int | None:
    """GPUs per node for a trainer: ``devices``, or None (sbatch gets no --gpus-per-node) for a CPU trainer and for
    ``auto`` on a partition without GPUs."""
    if accelerator == "cpu" or (accelerator == "auto" and partition_has_gpus(partition) is False):
        return None
    return devices


# ---------------------------------------------------------------------------------------------- run folders
CLAIM_FILE = ".slurm_claim"  # <run folder>/.slurm_claim.<restart count>: which training of the job instance owns it


def claim(path: Path, owner: str) -> bool:
    """Create ``path`` holding ``owner`` unless it exists (atomically: written aside, then hard-linked, so two
    processes never both create it and none reads it half written); True if it is, or already was, ``owner``'s."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f"{path.name}.{os.getpid()}")
    draft.write_text(owner)
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_text() == owner
    finally:
        draft.unlink()
    return True


def claim_run_folder(runs: Path, task: str) -> Path:
    """The run folder under ``runs`` of this training of the SLURM job: the first of ``<job>_<task>``,
    ``<job>-2_<task>``, ... that no other training of this job instance has claimed. A training is an srun step
    (``SLURM_STEP_ID``: its tasks, DDP's ranks, share the folder) or, outside a step, a process. A requeued job
    (``SLURM_RESTART_COUNT``) claims afresh, so its trainings, starting in the same order, find their folders."""
    job, restart = os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_RESTART_COUNT") or "0"
    step = os.environ.get("SLURM_STEP_ID")
    owner = f"step {step}" if step is not None else f"process {os.getpid()}"
    for number in itertools.count(1):
        folder = runs / (f"{job}_{task}" if number == 1 else f"{job}-{number}_{task}")
        if claim(folder / f"{CLAIM_FILE}.{restart}", owner):
            return folder
    raise AssertionError("unreachable")


def slurm_run_dir(runs: str, task: str, stamp: str, *, _root_: Any) -> str:
    """``hydra.run.dir``: the claimed folder under SLURM, else ``<stamp>_<task>``. In a multirun (whose jobs run in
    the sweep folder, and which only reads this key) nothing is claimed."""
    if (job := os.environ.get("SLURM_JOB_ID")) is None:
        return f"{runs}/{stamp}_{task}"
    mode = OmegaConf.select(_root_, "hydra.mode", default=None)
    if getattr(mode, "name", mode) == "MULTIRUN":
        return f"{runs}/{job}_{task}"
    try:
        return str(claim_run_folder(Path(runs), task))
    except OSError:  # an unwritable folder: OutputDirCheck says so in one line
        return f"{runs}/{job}_{task}"


# ------------------------------------------------------------------------------------------- refused submissions
# (what sbatch's refusal mentions, lower case) -> the setting that asked for it
REFUSALS = (  # in this order: "Invalid account or account/partition combination" is about the account
    ("account", "hydra.launcher.account"),
    ("qos", "hydra.launcher.qos"),
    ("gres", "hydra.launcher.gpus_per_node (it follows trainer.accelerator and trainer.devices: trainer=cpu for none)"),
    ("partition", "hydra.launcher.partition (sinfo lists the partitions)"),
    ("feature", "hydra.launcher.constraint"),
    ("time", "hydra.launcher.timeout_min"),
    ("memory", "hydra.launcher.mem_gb"),
    (
        "node configuration",
        "hydra.launcher.cpus_per_task, mem_gb, tasks_per_node (trainer.devices) or nodes: "
        "more than a node of the partition has",
    ),
)


def refused_submission(err: BaseException) -> str | None:
    """One line for an error submitit raised because sbatch refused the submission (its FailedJobError, caused by
    the failed sbatch command), naming the ``hydra.launcher`` setting to change; None for any other error (a job
    that failed, say)."""
    cause = err.__cause__
    if not (isinstance(cause, subprocess.CalledProcessError) and "sbatch" in str(cause.cmd[0] if cause.cmd else "")):
        return None
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    said = (lines[-1] if lines else "no message").removeprefix("sbatch: error: ")
    said = said.removeprefix("Batch job submission failed: ")
    setting = next((s for key, s in REFUSALS if key in said.lower()), "the hydra.launcher settings (docs/slurm.md)")
    return f"sbatch refused the sweep's jobs ({said}): change {setting}"


# ---------------------------------------------------------------------------------------------------- logging
class OnceSacctWarning(logging.Filter):
    """Lets the first "Bypassing sacct error" record through and drops the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_WARNING not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def register() -> None:
    """The resolvers and the submitit log filter; idempotent. (submitit configures its logger when imported, which
    keeps a logger's filters.)"""
    register_resolver("slurm_gpus", slurm_gpus)
    register_resolver("slurm_run_dir", slurm_run_dir)
    submitit_log = logging.getLogger("submitit")
    if not any(isinstance(f, OnceSacctWarning) for f in submitit_log.filters):
        submitit_log.addFilter(OnceSacctWarning())
