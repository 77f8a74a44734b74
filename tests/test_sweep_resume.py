"""A plain grid killed mid-sweep and rerun with the same command and hydra.sweep.dir ends as if never stopped: the
finished jobs are not trained again, the job killed mid-run resumes from its own last.ckpt, the rest run, and the
summary equals an uninterrupted sweep's cell for cell (the runs are deterministic)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from tests.conftest import (
    SMALL_BLOCKS,
    cli_command,
    job_folder,
    job_folders,
    read_csv,
    run_cli,
    start_cli,
    synthetic_overrides,
    wait_for,
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


@pytest.mark.slow
def test_a_grid_killed_mid_job_and_rerun_ends_as_an_uninterrupted_one(synthetic_root, tmp_path):
    whole = tmp_path / "whole"
    result = run_cli("train", *grid_args(synthetic_root, tmp_path, whole))
    assert result.returncode == 0, result.stderr[-3000:]

    sweep = tmp_path / "killed"
    args = grid_args(synthetic_root, tmp_path, sweep)
    process = start_cli(cli_command("train", *args), start_new_session=True)
    try:
        last = sweep / "1_lr=0.003" / "checkpoints" / "last.ckpt"
        wait_for(last.is_file, "job 1's first checkpoint", timeout=300, process=process)
        os.killpg(process.pid, signal.SIGKILL)  # a crash: nothing gets to save or clean up
        process.wait(timeout=60)
    finally:
        process.kill()
    assert record(job_folder(sweep, 0))["status"] == "finished" and 2 not in job_folders(sweep)
    first_run = record(job_folder(sweep, 0))

    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert record(job_folder(sweep, 0)) == first_run  # not trained again
    assert "resumed_at" in record(job_folder(sweep, 1))  # from its own last.ckpt
    assert record(job_folder(sweep, 2))["status"] == "finished"
    assert sorted(p.name for p in job_folders(sweep).values()) == [f"{n}_lr={lr}" for n, lr in enumerate(LRS)]
    assert summary(sweep) == summary(whole)


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
