"""On a real SLURM: the one-node cluster of scripts/local_slurm.sh (started once, by .ci/run or by hand, never by
these tests). Sweeps through sbatch (hydra/launcher=slurm), DDP across srun tasks, and a training requeued by its
time-limit warning signal that ends as an uninterrupted one. Without the cluster they skip, except under CI=true,
where a cluster that is not up is a failure."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from cifar_lit.callbacks.provenance import RUN_FILE
from tests.conftest import (
    CLI_ENV,
    ROOT,
    TINY_BLOCKS,
    chaos_overrides,
    checkpoint_epoch,
    cli_command,
    crash_when,
    ddp_overrides,
    files_by_folder,
    job_folder,
    one_done_one_saved,
    per_epoch,
    read_csv,
    resume_overrides,
    run_cli,
    run_training,
    scalar_events,
    scalars,
    single_process_val_acc,
    synthetic_overrides,
    wait_for,
)


def cluster_problem() -> str | None:
    """Why the local cluster cannot run jobs, or None when its node takes them."""
    if shutil.which("sinfo") is None:
        return "no SLURM commands (run scripts/local_slurm.sh as root)"
    result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = result.stdout.split()
    if result.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
        return f"no SLURM node up (sinfo: {(result.stderr or result.stdout).strip()!r}; run scripts/local_slurm.sh)"
    return None


@pytest.fixture(autouse=True)
def slurm_cluster(request) -> None:
    """Tests marked ``slurm`` need the cluster up (the two-node torchrun test needs none)."""
    if request.node.get_closest_marker("slurm") is None or (problem := cluster_problem()) is None:
        return
    if os.environ.get("CI") == "true":  # CI starts the cluster (.ci/run): its absence is a failure there
        pytest.fail(problem)
    pytest.skip(problem)


def launcher_overrides() -> list[str]:
    """The local node's size (site values, as a user would give theirs)."""
    return ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sweep_runs_each_job_as_a_slurm_job_and_a_failed_job_fails_the_sweep(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "trainer=cpu",  # a CPU trainer: the job must ask for no GPU, the node has none
        f"model.blocks={TINY_BLOCKS}",
        "trainer.max_epochs=1",
        "test=false",
        "optimizer.lr=0.01,-1",
    ]
    result = run_cli("train", "-m", *launcher_overrides(), *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 2 jobs failed (1_lr=-1)" in result.stderr
    rows = {row["job"]: row for row in read_csv(sweep / "summary.csv")}
    assert {job: row["status"] for job, row in rows.items()} == {"0": "ok", "1": "failed"}
    assert float(rows["0"]["best val acc"]) > 0
    job_id = json.loads((job_folder(sweep, 0) / "run.json").read_text())["slurm_job_id"]
    job = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert re.search(r"ArrayTaskId=0 .*JobName=train", job), job  # job 0 of the sweep's array, as SLURM knows it
    assert "--gpus" not in "".join(p.read_text() for p in sweep.glob(".submitit/*/*_submission.sh"))
    assert (result.stdout + result.stderr).count("Bypassing sacct error") <= 3  # one warning, on its 3 handlers


def tiny_training(synthetic_root, tmp_path) -> list[str]:
    """One epoch of the tiny network on the synthetic images, no test: a job that runs in seconds."""
    return [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        f"model.blocks={TINY_BLOCKS}",
        "trainer.max_epochs=1",
        "test=false",
        "~callbacks.progress_bar",
    ]


@pytest.mark.slurm
@pytest.mark.slow
def test_accelerator_auto_on_a_partition_without_gpus_submits_jobs_that_ask_for_none(synthetic_root, tmp_path):
    """The default trainer (accelerator auto) on a CPU-only partition: sinfo says it has no GPUs, so sbatch gets
    no --gpus-per-node (it would refuse the gres) and the job runs on the CPU."""
    sweep = tmp_path / "sweep"
    overrides = [*tiny_training(synthetic_root, tmp_path), "trainer.accelerator=auto", "optimizer.lr=0.01"]
    result = run_cli("train", "-m", *launcher_overrides(), *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--gpus" not in "".join(p.read_text() for p in sweep.glob(".submitit/*/*_submission.sh"))
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["ok"]


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("override", "setting"),
    [
        ("hydra.launcher.partition=nosuch", "hydra.launcher.partition"),
        ("trainer.accelerator=gpu", "hydra.launcher.gpus_per_node"),  # a GPU trainer on a cluster without GPUs
    ],
)
def test_a_submission_sbatch_refuses_ends_in_one_line_naming_the_setting(override, setting, synthetic_root, tmp_path):
    """Before: submitit's thirty-line traceback ending in sbatch's words, which name no setting."""
    sweep = tmp_path / "sweep"
    overrides = [*tiny_training(synthetic_root, tmp_path), override]
    result = run_cli("train", "-m", *launcher_overrides(), *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()  # sbatch's own error lines (printed by submitit), then ours
    assert lines[-1].startswith("error: sbatch refused") and setting in lines[-1], result.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr[-3000:]


@pytest.mark.slurm
@pytest.mark.slow
def test_two_trainings_in_one_allocation_get_a_run_folder_each(synthetic_root, tmp_path):
    """salloc, then two trainings in its shell (a plain command, then an srun step): both used to be named by the
    job id alone, one folder, the second overwriting the first's last.ckpt. The second gets <job id>-2_train."""
    logs = tmp_path / "logs"
    train = shlex.join(cli_command("train", *tiny_training(synthetic_root, tmp_path), f"paths.log_dir={logs}"))
    salloc = ["salloc", "-N1", "-n1", "--cpus-per-task=1", "bash", "-c", f"{train} && srun {train}"]
    result = subprocess.run(salloc, cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    job = re.search(r"Granted job allocation (\d+)", result.stderr).group(1)
    run_dirs = {p.name: p for p in (logs / "runs").iterdir()}
    assert set(run_dirs) == {f"{job}_train", f"{job}-2_train"}
    for run_dir in run_dirs.values():
        record = json.loads((run_dir / RUN_FILE).read_text())
        assert record["status"] == "finished" and record["slurm_job_id"] == job
        assert checkpoint_epoch(run_dir / "checkpoints" / "last.ckpt") == 0


@pytest.mark.slurm
@pytest.mark.slow
def test_ddp_across_two_srun_tasks_trains_in_the_jobs_run_folder_with_the_exact_synced_accuracy(
    synthetic_root, tmp_path
):
    """Two SLURM tasks, each a whole ``python -m cifar_lit.train``: Lightning joins them into one DDP group, and both
    name the run folder after the job (a timestamp each could differ by a second)."""
    logs = tmp_path / "logs"
    train = cli_command("train", *ddp_overrides(synthetic_root, tmp_path / "cache"), f"paths.log_dir={logs}")
    srun = ["srun", "-N1", "--ntasks-per-node=2", "--cpus-per-task=1", *train]
    result = subprocess.run(srun, cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr  # the second task joined the group
    (run_dir,) = (logs / "runs").iterdir()
    assert run_dir.name == f"{json.loads((run_dir / RUN_FILE).read_text())['slurm_job_id']}_train"
    assert files_by_folder(logs, "events.out.tfevents.*") == {run_dir / "tensorboard"}
    assert files_by_folder(logs, "*.ckpt") == {run_dir / "checkpoints"}
    logged = scalars(run_dir)["val/acc"]
    assert len(logged) == 2
    assert single_process_val_acc(run_dir, synthetic_root, tmp_path) == pytest.approx(logged[-1], abs=1e-6)


def job_state(job: str) -> dict[str, str]:
    """``scontrol show job``'s fields (JobState, Restarts, ...); completed jobs stay known for MinJobAge."""
    text = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


@pytest.mark.slurm
@pytest.mark.slow
def test_the_time_limit_warning_requeues_the_job_which_resumes_in_its_folder_and_ends_as_if_uninterrupted(
    synthetic_root, tmp_path
):
    """sbatch --signal=USR1@<s> --requeue: the warning (sent here by scancel mid-run, as SLURM sends it before the
    limit) requeues the job; SLURM's SIGTERM saves last.ckpt; the requeued job, same id, same batch script, finds
    its run folder and resumes: its metrics are the uninterrupted run's, epoch for epoch."""
    cache, logs = tmp_path / "cache", tmp_path / "logs"
    reference = run_training(tmp_path / "reference", *resume_overrides(synthetic_root, cache, tmp_path / "reference"))
    args = [arg for arg in resume_overrides(synthetic_root, cache, logs) if not arg.startswith("hydra.run.dir=")]
    script = tmp_path / "train.sbatch"
    train = shlex.join(cli_command("train", *args, f"paths.log_dir={logs}"))
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --ntasks=1 --cpus-per-task=1 --time=10 --signal=USR1@120 --requeue --open-mode=append\n"
        f"srun {train} ${{SLURM_RESTART_COUNT:+ckpt_path=last}}\n"  # the requeued job resumes
    )
    output = tmp_path / "slurm.out"
    sbatch = ["sbatch", "--parsable", f"--output={output}", str(script)]
    job = subprocess.run(sbatch, cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, check=True).stdout.strip()
    last = logs / "runs" / f"{job}_train" / "checkpoints" / "last.ckpt"
    wait_for(lambda: checkpoint_epoch(last) == 0, "the end of the first epoch")
    subprocess.run(["scancel", "--signal=USR1", job], check=True)  # what --signal=USR1@120 sends at the limit
    wait_for(lambda: job_state(job).get("Reason") == "BeginTime", "the requeued job pending")  # held ~2 min
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    wait_for(lambda: job_state(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"), "the job's end")
    log, run_dir = output.read_text(), logs / "runs" / f"{job}_train"
    assert job_state(job)["JobState"] == "COMPLETED", log[-3000:]
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # not Lightning's auto-requeue, which saves inside a step
    assert f"requeued SLURM job {job}" in log and "SIGTERM at epoch" in log and "Restored all states" in log
    resumed, expected = scalar_events(run_dir), scalar_events(reference)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert per_epoch(resumed, tag) == per_epoch(expected, tag), tag
    record = json.loads((run_dir / RUN_FILE).read_text())
    assert record["status"] == "finished" and len(record["resumed_at"]) == 1 and record["slurm_job_id"] == job


@pytest.mark.slurm
@pytest.mark.slow
def test_a_slurm_sweep_killed_with_a_job_and_rerun_reads_one_job_back_and_resumes_the_other(synthetic_root, tmp_path):
    """hydra/launcher=slurm: the sweep's process SIGKILLed once job 0 has finished and job 1 has saved an epoch
    (held in its second: tests/chaos_helper.py), then job 1's training process, which SLURM runs on (as a node's
    OOM killer would: scancel's SIGTERM first would let it save). The same command and hydra.sweep.dir submit both
    jobs again: job 0 returns its recorded metrics, job 1 resumes from its last.ckpt, each cell once."""
    sweep, fuse = tmp_path / "sweep", tmp_path / "fuse"
    training = [arg for arg in tiny_training(synthetic_root, tmp_path) if not arg.startswith("trainer.max_epochs=")]
    grid = ["optimizer.lr=0.01,0.003", "trainer.max_epochs=2", "data.batch_size=8"]  # 38 steps an epoch
    args = ["-m", *launcher_overrides(), *training, *grid, *chaos_overrides(fuse), f"hydra.sweep.dir={sweep}"]
    fuse.write_text(json.dumps({"job": 1, "step": 40, "hold": True}))
    crash_when(args, lambda: one_done_one_saved(sweep), "job 0 finished and job 1's first checkpoint")
    held = json.loads((job_folder(sweep, 1) / RUN_FILE).read_text())["slurm_job_id"]
    os.kill(int(fuse.with_name("fuse.held").read_text()), signal.SIGKILL)
    squeue = ["squeue", "-h", "-j", held]
    wait_for(lambda: not subprocess.run(squeue, capture_output=True, text=True).stdout.strip(), "job 1's end")
    first_job = json.loads((job_folder(sweep, 0) / RUN_FILE).read_text())

    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((job_folder(sweep, n) / RUN_FILE).read_text()) for n in (0, 1)]
    assert records[0] == first_job  # read back in its new SLURM job, not trained again
    assert records[1]["status"] == "finished" and "resumed_at" in records[1] and records[1]["slurm_job_id"] != held
    assert sorted((row["job"], row["status"]) for row in read_csv(sweep / "summary.csv")) == [("0", "ok"), ("1", "ok")]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "0_lr=0.01",
        "1_lr=0.003",
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_under_torchrun_train_in_one_run_folder_with_the_exact_synced_accuracy(synthetic_root, tmp_path):
    """torchrun --nnodes=2 as two processes on this machine (node_rank 0 and 1), each a whole cifar_lit.train with
    trainer.num_nodes=2: one DDP group across the "nodes", one run folder (given: each node would stamp its own),
    and the synced validation accuracy of a single process."""
    logs, run_dir, port = tmp_path / "logs", tmp_path / "logs" / "run", free_port()
    overrides = [*ddp_overrides(synthetic_root, tmp_path / "cache"), "trainer.num_nodes=2", "trainer.devices=1"]
    train = ["-m", "cifar_lit.train", *overrides, f"hydra.run.dir={run_dir}"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]  # torchrun
    rendezvous = ["--master_addr=127.0.0.1", f"--master_port={port}"]
    nodes = [
        subprocess.Popen(
            [*torchrun, f"--node_rank={rank}", *rendezvous, *train],
            cwd=ROOT,
            env=CLI_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    assert [p.name for p in logs.iterdir()] == ["run"]
    assert files_by_folder(logs, "events.out.tfevents.*") == {run_dir / "tensorboard"}
    assert files_by_folder(logs, "*.ckpt") == {run_dir / "checkpoints"}
    logged = scalars(run_dir)["val/acc"]
    assert len(logged) == 2
    assert single_process_val_acc(run_dir, synthetic_root, tmp_path) == pytest.approx(logged[-1], abs=1e-6)
