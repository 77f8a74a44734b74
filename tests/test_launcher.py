"""hydra/launcher=packed: a multirun's jobs side by side, each in its own process on its own device slot, with the
basic launcher's summary and failure behaviour. No GPU here: fake slots (``devices=[0,1]``), whose jobs train on
the CPU and only see their ``CUDA_VISIBLE_DEVICES``. Most checks use tests/packed_app.py, a Hydra app that records
what its process sees and needs no training; one sweep trains through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import (
    CLI_ENV,
    ROOT,
    TINY_BLOCKS,
    cli_command,
    job_folder,
    load_optuna_study,
    run_cli,
    start_cli,
    synthetic_overrides,
    wait_for,
)

TWO_SLOTS = ["-m", "hydra/launcher=packed", "hydra.launcher.devices=[0,1]", "hydra.launcher.jobs_per_device=1"]


def app_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.packed_app", *args]


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(app_command(*args), cwd=ROOT, env=CLI_ENV, capture_output=True, text=True, timeout=300)


def seen(job_dir: Path) -> dict[str, object]:
    """What the app's job recorded of its process (tests/packed_app.py)."""
    return json.loads((job_dir / "job.json").read_text())


def log_interval(job_dir: Path) -> tuple[datetime, datetime]:
    """The first and last timestamps (milliseconds) of the job's train.log."""
    stamps = [line[1:24] for line in (job_dir / "train.log").read_text().splitlines() if line.startswith("[20")]
    return datetime.strptime(stamps[0], "%Y-%m-%d %H:%M:%S,%f"), datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")


def test_each_job_sees_only_its_slot_and_a_dead_job_is_a_failed_one(tmp_path):
    """Three jobs on two slots: each process gets its slot's device, thread share and slot number; the job whose
    process ends with os._exit(3) gets a FAILED.txt naming the status, the third job runs in a freed slot, the sweep
    summarises all three and exits 1."""
    result = run_app(*TWO_SLOTS, "fate=live,die,live", f"hydra.sweep.dir={tmp_path}")

    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 3 jobs failed (1)" in result.stderr
    assert "exited with status 3" in (tmp_path / "1" / "FAILED.txt").read_text()
    assert not (tmp_path / "0" / "FAILED.txt").exists() and not (tmp_path / "2" / "FAILED.txt").exists()
    assert "| 1 | fate=die |" in (tmp_path / "summary.md").read_text()
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))  # threads_per_job=auto: the cores over two slots
    for job in ("0", "1", "2"):
        record = seen(tmp_path / job)
        slot = record["CIFAR_LIT_DEVICE_SLOT"]
        assert record["CUDA_VISIBLE_DEVICES"] == slot  # devices [0, 1], one job each: slot i is device i
        assert record["OMP_NUM_THREADS"] == record["MKL_NUM_THREADS"] == threads
        assert record["torch_threads"] == int(threads)
    assert {seen(tmp_path / job)["CUDA_VISIBLE_DEVICES"] for job in ("0", "1")} == {"0", "1"}


@pytest.mark.slow
def test_a_slot_runs_its_jobs_in_one_process(tmp_path):
    """Four jobs on two slots: two worker processes, each running its slot's jobs one after another (a job pays no
    process start-up: 15-19 s a job with six starting at once on an H200, docs/gpu.md)."""
    result = run_app(*TWO_SLOTS, "fate=live,live,live,live", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [seen(tmp_path / job) for job in ("0", "1", "2", "3")]
    by_slot: dict[object, set[object]] = {}
    for record in records:
        by_slot.setdefault(record["CIFAR_LIT_DEVICE_SLOT"], set()).add(record["pid"])
    assert sorted(by_slot) == ["0", "1"] and all(len(pids) == 1 for pids in by_slot.values()), by_slot
    assert len({record["pid"] for record in records}) == 2


def test_training_jobs_run_side_by_side_and_a_failing_one_stops_no_other(synthetic_root, tmp_path):
    """The real CLI, three slots: two trainings overlap in time on devices of their own (run.json records them);
    the third job's bad learning rate fails only that job."""
    overrides = ["experiment=smoke", "test=false", f"model.blocks={TINY_BLOCKS}"]
    slots = [*TWO_SLOTS[:2], "hydra.launcher.devices=[0,1,2]", "hydra.launcher.jobs_per_device=1"]
    sweep = tmp_path / "sweep"
    result = run_cli(
        "train",
        *slots,
        *overrides,
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "optimizer.lr=0.01,0.02,-1",
        f"hydra.sweep.dir={sweep}",
    )

    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 3 jobs failed (2_lr=-1)" in result.stderr
    assert "optimizer.lr" in (job_folder(sweep, 2) / "FAILED.txt").read_text()
    runs = {job: json.loads((job_folder(sweep, job) / "run.json").read_text()) for job in (0, 1)}
    assert all(run["status"] == "finished" for run in runs.values())
    devices = {run["device"]["cuda_visible_devices"] for run in runs.values()}
    assert len(devices) == 2 and devices <= {"0", "1", "2"}
    (start_0, end_0), (start_1, end_1) = log_interval(job_folder(sweep, 0)), log_interval(job_folder(sweep, 1))
    assert start_0 < end_1 and start_1 < end_0, "the two trainings did not run at the same time"


def test_sigterm_to_the_launcher_stops_its_jobs(tmp_path):
    process = start_cli(
        app_command(*TWO_SLOTS, "fate=sleep,sleep", f"hydra.sweep.dir={tmp_path}"), stderr=subprocess.PIPE
    )
    try:
        started = [tmp_path / job / "job.json" for job in ("0", "1")]
        wait_for(lambda: all(path.is_file() for path in started), "the jobs' start", process=process)
        pids = [seen(tmp_path / job)["pid"] for job in ("0", "1")]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"job process {pid} still runs"


def test_ctrl_c_to_the_whole_terminal_group_while_jobs_start_ends_cleanly(tmp_path):
    """Ctrl+C (or ``timeout``) signals the launcher and its jobs at once, here while the jobs are still starting: the
    launcher exits as stopped, with no traceback (it crashed writing a dead job's overrides into a ``.hydra`` folder
    not made yet, on a GPU machine, 2026-12-04), and marks no job failed: they were stopped with the sweep."""
    process = start_cli(
        app_command(*TWO_SLOTS, "fate=sleep,sleep", f"hydra.sweep.dir={tmp_path}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        for line in process.stdout:  # the launcher logs each job as it starts its process
            if "-> slot 1" in line:
                break
        time.sleep(0.5)  # the launcher now waits on its jobs, which are still starting (imports: seconds to go)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    for job in ("0", "1"):
        assert not (tmp_path / job / "job.json").exists()  # the task never ran
        assert not (tmp_path / job / "FAILED.txt").exists()


def test_an_optuna_search_runs_its_trials_through_the_packed_launcher(tmp_path):
    """hydra/sweeper=cifar_lit_optuna with n_jobs=2: the two trials run at once, one a slot, and the study gets
    each trial's returned value."""
    pytest.importorskip("optuna")
    search = ["hydra/sweeper=cifar_lit_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2"]
    result = run_app(*TWO_SLOTS, *search, "+hydra.sweeper.params.x='interval(0.1, 0.9)'", f"hydra.sweep.dir={tmp_path}")

    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_optuna_study(tmp_path).trials
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    assert all(trial.value == pytest.approx(trial.params["x"]) for trial in trials)
    assert {seen(tmp_path / job)["CUDA_VISIBLE_DEVICES"] for job in ("0", "1")} == {"0", "1"}


def test_the_packed_launcher_is_found_from_any_folder(tmp_path):
    """An editable install (CI's) reaches hydra_plugins/ through an import hook Hydra's plugin scan cannot list."""
    command = cli_command("train", "hydra/launcher=packed", "--cfg", "hydra", "-p", "hydra.launcher._target_")
    result = subprocess.run(command, cwd=tmp_path, env=CLI_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hydra_plugins.cifar_lit_packed_launcher.CifarLitPackedLauncher" in result.stdout
