"""A plain grid killed mid-sweep and rerun with the same command and hydra.sweep.dir ends as if never stopped: the
finished jobs are not trained again, the job killed mid-run resumes from its own last.ckpt, the rest run, and the
summary equals an uninterrupted sweep's cell for cell (the runs are deterministic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import (
    SMALL_BLOCKS,
    TINY_BLOCKS,
    chaos_overrides,
    checkpoint_epoch,
    checkpoint_files,
    crash_when,
    job_folder,
    job_folders,
    killed,
    one_done_one_saved,
    read_csv,
    run_cli,
    synthetic_overrides,
)

LRS = ("0.01", "0.003", "0.001")
GRID = f"optimizer.lr={','.join(LRS)}"


def grid_args(synthetic_root: Path, tmp_path: Path, sweep: Path) -> list[str]:
    return [
        "-m",
        "experiment=smoke",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "seed=7",
        f"model.blocks={SMALL_BLOCKS}",
        "~callbacks.progress_bar",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "data.batch_size=8",  # ~36 steps an epoch: the kill lands in job 1's second epoch
        GRID,
        f"hydra.sweep.dir={sweep}",
    ]


def record(job: Path) -> dict:
    return json.loads((job / "run.json").read_text())


def summary(sweep: Path) -> list[tuple[str, ...]]:
    """The summary's rows without the wall time (the one column that differs between identical runs)."""
    return sorted(tuple(v for k, v in row.items() if k != "wall time (s)") for row in read_csv(sweep / "summary.csv"))


CHAOS_CELLS = [f"lr={lr},batch_size={batch}" for lr in LRS for batch in (8, 16)]  # the grid's order


def chaos_args(synthetic_root: Path, tmp_path: Path, sweep: Path) -> list[str]:
    """The 3x2 grid (learning rate x batch size: 38 or 19 steps an epoch), its process killable through a fuse file
    (tests/chaos_helper.py) that the test lays before a run; the same command every run."""
    fixed = [arg for arg in grid_args(synthetic_root, tmp_path, sweep)[:-2] if not arg.startswith("data.batch_size=")]
    return [
        *fixed,
        "test=false",
        GRID,
        "data.batch_size=8,16",
        *chaos_overrides(tmp_path / "fuse"),
        f"hydra.sweep.dir={sweep}",
    ]


@pytest.mark.slow
def test_a_grid_killed_between_jobs_mid_epoch_and_mid_checkpoint_write_ends_as_an_uninterrupted_one(
    synthetic_root, tmp_path
):
    """Issue 32's chaos test: the 3x2 grid is SIGKILLed between two jobs, in a job's second epoch, and while a job
    writes its last.ckpt, the same command rerun after each; it ends with one folder per cell and the summary of an
    uninterrupted sweep, metric for metric."""
    whole = tmp_path / "whole"
    result = run_cli("train", *chaos_args(synthetic_root, tmp_path, whole))
    assert result.returncode == 0, result.stderr[-3000:]

    sweep = tmp_path / "killed"
    args, fuse = chaos_args(synthetic_root, tmp_path, sweep), tmp_path / "fuse"

    def between_jobs() -> bool:  # job 0 done and recorded, job 1's folder made: it has not begun training
        jobs = job_folders(sweep) if sweep.is_dir() else {}
        return 1 in jobs and (jobs[0] / "run.json").is_file() and record(jobs[0])["status"] == "finished"

    crash_when(args, between_jobs, "job 1's folder after job 0 finished")
    assert not (job_folder(sweep, 1) / "checkpoints" / "last.ckpt").exists()
    first_run = record(job_folder(sweep, 0))

    fuse.write_text(json.dumps({"job": 2, "step": 50}))  # job 2 (batch size 8): 38 steps an epoch
    result = run_cli("train", *args)
    assert killed(result) and not fuse.exists(), result.stderr[-3000:]
    assert record(job_folder(sweep, 1))["status"] == "finished" and 3 not in job_folders(sweep)
    assert checkpoint_epoch(job_folder(sweep, 2) / "checkpoints" / "last.ckpt") == 0

    fuse.write_text(json.dumps({"job": 3, "epoch": 1, "file": "last.ckpt"}))  # half of it written, then killed
    result = run_cli("train", *args)
    assert killed(result) and not fuse.exists(), result.stderr[-3000:]
    assert record(job_folder(sweep, 2))["status"] == "finished" and 4 not in job_folders(sweep)

    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all("resumed_at" in record(job_folder(sweep, n)) for n in (2, 3))  # each from its own last.ckpt
    assert [record(job_folder(sweep, n))["status"] for n in range(6)] == ["finished"] * 6
    assert record(job_folder(sweep, 0)) == first_run  # finished before the first kill: never trained again
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [f"{n}_{c}" for n, c in enumerate(CHAOS_CELLS)]
    assert summary(sweep) == summary(whole)
    # nothing the kills left behind: no half-written file, no second best checkpoint (epoch_001-v1.ckpt)
    assert {n: checkpoint_files(job) for n, job in job_folders(sweep).items()} == {
        n: checkpoint_files(job) for n, job in job_folders(whole).items()
    }


@pytest.mark.slow
def test_a_grid_on_joblib_workers_killed_with_its_workers_and_rerun_runs_each_cell_once(synthetic_root, tmp_path):
    """hydra/launcher=joblib, both jobs at once in worker processes, one thread each: the sweep and its workers
    SIGKILLed once job 0 has finished and job 1 has saved its first epoch (held in its second: tests/chaos_helper.py);
    the same command again reads job 0 back from its run.json, resumes job 1 from its last.ckpt, and the summary has
    each cell once."""
    sweep, fuse = tmp_path / "sweep", tmp_path / "fuse"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "threads=1",
        "optimizer.lr=0.01,0.003",
        "trainer.max_epochs=2",
        "test=false",
        f"model.blocks={TINY_BLOCKS}",
        "~callbacks.progress_bar",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "data.batch_size=8",  # 38 steps an epoch
        *chaos_overrides(fuse),
        f"hydra.sweep.dir={sweep}",
    ]
    fuse.write_text(json.dumps({"job": 1, "step": 40, "hold": True}))
    crash_when(args, lambda: one_done_one_saved(sweep), "job 0 finished and job 1's first checkpoint")
    first_job = record(job_folder(sweep, 0))
    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    assert record(job_folder(sweep, 0)) == first_job  # read back, not trained again
    assert record(job_folder(sweep, 1))["status"] == "finished" and "resumed_at" in record(job_folder(sweep, 1))
    assert sorted((row["job"], row["epochs"], row["status"]) for row in read_csv(sweep / "summary.csv")) == [
        ("0", "2", "ok"),
        ("1", "2", "ok"),
    ]
    assert sorted(job_folders(sweep)) == [0, 1]
    for job in job_folders(sweep).values():
        assert (job / "checkpoints" / "last.ckpt").is_file() and "torch threads: 1" in (job / "train.log").read_text()


def test_a_sweep_begun_with_numbered_job_folders_resumes_in_them(synthetic_root, tmp_path):
    """A sweep that an older cifar_lit began (job folders 0/, 1/, ...) and a newer one resumes: the jobs find their
    numbered folders (here all finished: nothing trains), no named folder appears."""
    sweep = tmp_path / "sweep"
    args = grid_args(synthetic_root, tmp_path, sweep)
    command = OverridesParser.create().parse_overrides([arg for arg in args[1:] if not arg.startswith("hydra.")])
    (jobs,) = BasicSweeper.split_arguments(command, max_batch_size=None)  # each job's overrides, as Hydra makes them
    for number, overrides in enumerate(jobs):
        (sweep / str(number) / ".hydra").mkdir(parents=True)
        metrics = {"val/acc_best": 0.5, "test/acc": 0.5}
        done = {"job_overrides": overrides, "status": "finished", "metrics": metrics}
        (sweep / str(number) / "run.json").write_text(json.dumps(done))
    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("job already finished") == len(LRS)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]


def test_a_folder_holding_another_jobs_run_is_refused(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    args = grid_args(synthetic_root, tmp_path, sweep)
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "run.json").write_text(json.dumps({"job_overrides": ["optimizer.lr=0.5"], "status": "finished"}))
    result = run_cli("train", *args[:-2], "optimizer.lr=0.01", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1
    assert "holds the run of another job (optimizer.lr=0.5)" in (sweep / "0" / "FAILED.txt").read_text()


def test_an_unreadable_last_checkpoint_is_set_aside_and_the_job_starts_again(synthetic_root, tmp_path):
    """A last.ckpt cut short (a crash while a CheckpointIO without atomic saves wrote it) would fail the job on
    every rerun: it is kept aside as last.ckpt.unreadable and the job trains from its first epoch."""
    sweep = tmp_path / "sweep"
    args = [*grid_args(synthetic_root, tmp_path, sweep)[:-2], "optimizer.lr=0.01", f"hydra.sweep.dir={sweep}"]
    command = OverridesParser.create().parse_overrides([arg for arg in args[1:] if not arg.startswith("hydra.")])
    ((overrides,),) = BasicSweeper.split_arguments(command, max_batch_size=None)
    (sweep / "0" / "checkpoints").mkdir(parents=True)
    (sweep / "0" / "run.json").write_text(json.dumps({"job_overrides": overrides, "status": "interrupted"}))
    (sweep / "0" / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a zip's start only
    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unreadable" in result.stdout + result.stderr
    assert (sweep / "0" / "checkpoints" / "last.ckpt.unreadable").read_bytes().startswith(b"PK")
    assert record(sweep / "0")["status"] == "finished" and "resumed_at" not in record(sweep / "0")
