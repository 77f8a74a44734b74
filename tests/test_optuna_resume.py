"""An Optuna search (pruned grid, TPE) rerun with the same command and hydra.sweep.dir picks up where it stopped: the
grid's order does not change (every cell once), a trial its dead process left RUNNING is failed and retried in its
own job folder from its own last.ckpt, and the search ends as an uninterrupted one would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import (
    SMALL_BLOCKS,
    TINY_BLOCKS,
    crash_when,
    job_folder,
    job_folders,
    load_optuna_study,
    read_csv,
    run_cli,
    synthetic_overrides,
)

CELLS = [(0.001, 32), (0.001, 64), (0.01, 32), (0.01, 64)]


def cells(sweep: Path, *states: str) -> list[tuple]:
    """The (lr, batch size) of the study's trials in those states, sorted (a cell run twice is there twice)."""
    trials = load_optuna_study(sweep).trials
    return sorted((t.params["optimizer.lr"], t.params["data.batch_size"]) for t in trials if t.state.name in states)


@pytest.mark.slow
def test_a_pruned_grid_cut_short_by_n_trials_and_rerun_runs_every_cell_once(synthetic_root, tmp_path):
    """A grid asked for 2 of its 4 cells, then rerun in the same folder for the whole grid: the 2 other cells run.
    (The sampler's seed used to be shifted by the study's trial count on resume, which reshuffled the grid: a cell
    ran twice and another never.)"""
    sweep = tmp_path / "sweep"
    args = [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),  # first: the swept batch size comes later
        "hparams_search=pruned_grid",
        "optimizer.lr=0.01,0.001",
        "data.batch_size=32,64",
        "trainer.max_epochs=1",
        "test=false",
        f"model.blocks={TINY_BLOCKS}",
        "seed=1",  # a seed whose grid order, shifted by 2, put a finished cell among the last two
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli("train", *args, "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(cells(sweep, "COMPLETE", "PRUNED")) == 2
    result = run_cli("train", *args)  # n_trials=null: the whole grid
    assert result.returncode == 0, result.stderr[-3000:]
    assert cells(sweep, "COMPLETE", "PRUNED") == CELLS and len(load_optuna_study(sweep).trials) == 4
    assert sorted(job_folders(sweep)) == [0, 1, 2, 3]
    assert len(read_csv(sweep / "summary.csv")) == 4


def search_args(synthetic_root: Path, tmp_path: Path, sweep: Path, *search: str) -> list[str]:
    """A deterministic search (``search``: what it searches) without a pruner (which cells successive halving stops
    depends on the order cells report in, which a retry changes), its epochs long enough (~36 steps) for a kill to
    land mid-trial."""
    return [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        *search,
        "hydra/sweeper/pruner=none",
        "data.batch_size=8",
        "experiment=smoke",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "seed=7",
        "~callbacks.progress_bar",
        f"hydra.sweep.dir={sweep}",
    ]


def killed_grid_args(synthetic_root: Path, tmp_path: Path, sweep: Path) -> list[str]:
    grid = ["hparams_search=pruned_grid", "optimizer.lr=0.01,0.003", "optimizer.weight_decay=0.05,0"]
    return search_args(synthetic_root, tmp_path, sweep, *grid, f"model.blocks={SMALL_BLOCKS}")


def job_1_saved(sweep: Path) -> bool:
    """Whether job 1 has saved a checkpoint (after its first epoch: a kill now lands mid-trial)."""
    return sweep.is_dir() and 1 in job_folders(sweep) and (job_folder(sweep, 1) / "checkpoints" / "last.ckpt").is_file()


def record(job: Path) -> dict:
    return json.loads((job / "run.json").read_text())


def summary(sweep: Path) -> list[tuple[str, ...]]:
    """The summary's rows without the job number (a retried trial shifts the numbers of the cells after it) and
    the wall time."""
    rows = read_csv(sweep / "summary.csv")
    return sorted(tuple(v for k, v in row.items() if k not in ("job", "wall time (s)")) for row in rows)


def reports(sweep: Path) -> dict[tuple, dict[int, float]]:
    """Each completed cell's reported val/acc by epoch."""
    from optuna.trial import TrialState

    trials = load_optuna_study(sweep).get_trials(states=[TrialState.COMPLETE])
    return {(t.params["optimizer.lr"], t.params["optimizer.weight_decay"]): t.intermediate_values for t in trials}


@pytest.mark.slow
def test_a_pruned_grid_killed_mid_trial_and_rerun_ends_as_an_uninterrupted_one(synthetic_root, tmp_path):
    """SIGKILL in job 1's second epoch leaves its trial RUNNING; the same command again fails that trial, retries
    it in job 1's folder from its last.ckpt (its first epoch's report kept), runs the two cells left, and ends with
    every cell once and the summary of an uninterrupted search."""
    whole = tmp_path / "whole"
    result = run_cli("train", *killed_grid_args(synthetic_root, tmp_path, whole))
    assert result.returncode == 0, result.stderr[-3000:]

    sweep = tmp_path / "killed"
    args = killed_grid_args(synthetic_root, tmp_path, sweep)
    crash_when(args, lambda: job_1_saved(sweep), "job 1's first checkpoint")  # its trial stays RUNNING
    assert record(job_folder(sweep, 1))["status"] != "finished" and 2 not in job_folders(sweep)
    assert [t.state.name for t in load_optuna_study(sweep).trials] == ["COMPLETE", "RUNNING"]
    first_job = record(job_folder(sweep, 0))

    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_optuna_study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] + ["COMPLETE"] * 3  # trial 2: trial 1's retry
    assert trials[2].system_attrs["failed_trial"] == 1 and trials[2].params == trials[1].params
    done = [
        (t.params["optimizer.lr"], t.params["optimizer.weight_decay"]) for t in trials if t.state.name == "COMPLETE"
    ]
    assert sorted(done) == [(0.003, 0), (0.003, 0.05), (0.01, 0), (0.01, 0.05)]  # every cell once
    assert record(job_folder(sweep, 0)) == first_job  # not trained again
    assert "resumed_at" in record(job_folder(sweep, 1))  # the retry, in the dead trial's folder, from its last.ckpt
    assert sorted(job_folders(sweep)) == [0, 1, 2, 3]
    assert summary(sweep) == summary(whole)
    assert reports(sweep) == reports(whole)  # the retry kept its first epoch's report and added the second


@pytest.mark.slow
def test_a_tpe_search_killed_mid_trial_and_rerun_runs_its_n_trials(synthetic_root, tmp_path):
    """A 4-trial TPE search killed in its second trial and rerun: 4 trials completed in all (the killed one's retry
    among them, in its folder), none left running, no job folder taken twice."""
    sweep = tmp_path / "sweep"
    search = ["hparams_search=optuna", "hydra.sweeper.n_trials=4", "optimizer.lr=tag(log,interval(0.001,0.01))"]
    fixed = ["optimizer.weight_decay=0", "model.num_branches=1", "model.classifier.dropout=0"]
    args = search_args(synthetic_root, tmp_path, sweep, *search, *fixed, f"model.blocks={SMALL_BLOCKS}")
    crash_when(args, lambda: job_1_saved(sweep), "job 1's first checkpoint")
    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_optuna_study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] + ["COMPLETE"] * 3
    assert trials[2].params == trials[1].params and "resumed_at" in record(job_folder(sweep, 1))
    assert sorted(job_folders(sweep)) == [0, 1, 2, 3] and len(read_csv(sweep / "summary.csv")) == 4


class Launcher:
    """A launcher that records the job numbers it is asked to launch and returns nothing."""

    def __init__(self) -> None:
        self.launched: list[list[int]] = []

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[None]:
        self.launched.append(list(range(initial_job_idx, initial_job_idx + len(batch))))
        return [None] * len(batch)


def test_a_dead_trial_is_retried_under_its_job_number_and_new_trials_take_the_next(tmp_path):
    """Without training: jobs 0 and 2 (finished) and 1 (left RUNNING) of a folder, a RUNNING trial of another folder
    (a live worker's). The folder's rerun retries trial 1 as job 1 and numbers a new trial 3, launched apart (a
    launcher numbers a batch from its first job); the other folder's trial stays RUNNING."""
    import optuna

    from cifar_lit.hydra_ext.optuna_resume import JobNumbers, finished_jobs, retry_dead_trials

    study = optuna.create_study()
    sweep, other = tmp_path / "sweep", tmp_path / "other"
    for number, folder in ((0, sweep), (1, sweep), (2, sweep), (0, other)):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.report(0.5, 1)
        JobNumbers(study, folder).number(trial)
        if folder == sweep and number != 1:
            study.tell(trial, 1.0)
    assert retry_dead_trials(study, sweep) == [1]
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "RUNNING", "WAITING"]
    assert finished_jobs(study, sweep) == 2  # the failed trial 1 is its retry's to finish
    jobs, launcher = JobNumbers(study, sweep), Launcher()
    trials = [study.ask(), study.ask()]
    assert trials[0].params == study.trials[1].params and trials[0].number == 4
    jobs.launch(launcher, trials, [[], []])
    assert launcher.launched == [[1], [3]]
    assert study.trials[4].intermediate_values == {1: 0.5}  # the dead trial's report, kept for the pruner
