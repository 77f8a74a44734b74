"""What the SLURM parts of the config resolve to, without a cluster: the GPUs a job asks for (a fake ``sinfo``), the
run folder a training gets inside a job (faked job environments), the one line a refused submission ends in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cifar_lit.hydra_ext import slurm
from cifar_lit.hydra_ext.slurm import claim_run_folder, refused_submission, slurm_gpus


def fake_sinfo(monkeypatch, tmp_path: Path, output: str | None) -> None:
    """PATH holds only a ``sinfo`` printing ``output`` (none at all when None)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    if output is not None:
        (folder / "sinfo").write_text(f"#!/bin/sh\nprintf '{output}'\n")
        (folder / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    slurm.partition_has_gpus.cache_clear()


CPU_AND_GPU = "cpu*|(null)\\ngpu|gpu:a100:4(S:0-1)\\n"  # sinfo -h -o '%P|%G': the default partition starred


@pytest.mark.parametrize(
    ("sinfo", "partition", "expected"),
    [
        ("debug*|(null)\\n", None, None),  # the default partition has no GPUs: ask for none
        (CPU_AND_GPU, None, None),  # the default partition is where sbatch sends the job
        (CPU_AND_GPU, "gpu", 2),
        ("mixed*|gpu:2\\nmixed*|(null)\\n", None, 2),  # some of its nodes have GPUs
        ("debug*|(null)\\n", "nosuch", 2),  # sinfo knows no such partition: as asked (sbatch will name it)
        (None, None, 2),  # no sinfo (a container, another scheduler's login node): as before, trainer.devices
    ],
)
def test_accelerator_auto_asks_for_the_gpus_the_partition_has(monkeypatch, tmp_path, sinfo, partition, expected):
    fake_sinfo(monkeypatch, tmp_path, sinfo)
    assert slurm_gpus("auto", 2, partition) == expected
    assert slurm_gpus("cpu", 2, partition) is None and slurm_gpus("gpu", 2, partition) == 2  # as asked


def job_env(monkeypatch, step: int | None = None, restart: int | None = None, job: str = "77") -> None:
    monkeypatch.setenv("SLURM_JOB_ID", job)
    for name, value in (("SLURM_STEP_ID", step), ("SLURM_RESTART_COUNT", restart)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(value))


def test_each_training_of_a_job_gets_its_folder_and_a_requeued_job_finds_them_again(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    job_env(monkeypatch, step=0)
    first = claim_run_folder(runs, "train")
    assert first == runs / "77_train" and claim_run_folder(runs, "train") == first  # resolved again: the same
    job_env(monkeypatch, step=1)
    assert claim_run_folder(runs, "train") == runs / "77-2_train"  # a second srun in the allocation
    job_env(monkeypatch, step=None)
    assert claim_run_folder(runs, "train") == runs / "77-3_train"  # a plain command in the salloc shell
    job_env(monkeypatch, step=0, restart=1)  # requeued: the trainings start again, in the same order
    assert claim_run_folder(runs, "train") == first
    job_env(monkeypatch, step=1, restart=1)
    assert claim_run_folder(runs, "train") == runs / "77-2_train"
    job_env(monkeypatch, step=0, job="78")
    assert claim_run_folder(runs, "train") == runs / "78_train"


def test_the_tasks_of_one_srun_step_share_their_folder(monkeypatch, tmp_path):
    """DDP over srun tasks: every task resolves the folder; the same step is the same training."""
    job_env(monkeypatch, step=0)
    assert claim_run_folder(tmp_path, "train") == claim_run_folder(tmp_path, "train") == tmp_path / "77_train"


def refusal(stderr: str) -> Exception:
    """What submitit raises when sbatch exits non-zero: its FailedJobError, caused by the sbatch command's error."""
    from submitit.core.utils import FailedJobError

    try:
        raise FailedJobError(stderr) from subprocess.CalledProcessError(1, ["sbatch", "job.sh"])
    except FailedJobError as err:
        return err


@pytest.mark.parametrize(
    ("stderr", "setting"),
    [
        ("sbatch: error: Batch job submission failed: Invalid partition name specified", "hydra.launcher.partition"),
        ("sbatch: error: Invalid generic resource (gres) specification", "hydra.launcher.gpus_per_node"),
        (
            "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified",
            "hydra.launcher.account",
        ),
        (
            "sbatch: error: Batch job submission failed: Requested node configuration is not available",
            "hydra.launcher.cpus_per_task",
        ),
        ("sbatch: error: Batch job submission failed: Requested time limit is invalid", "hydra.launcher.timeout_min"),
    ],
)
def test_a_refused_submission_is_one_line_naming_the_setting(stderr, setting):
    message = refused_submission(refusal(stderr))
    assert message is not None and "\n" not in message and setting in message and stderr.split(": ")[-1] in message


def test_a_job_that_failed_is_not_a_refused_submission():
    from submitit.core.utils import FailedJobError

    assert refused_submission(FailedJobError("Job (task=0) failed during processing with trace: ...")) is None
    assert refused_submission(ValueError("sbatch")) is None
