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
    chaos_overrides,
    checkpoint_files,
    job_folder,
    job_folders,
    killed,
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


SEARCHES = {
    # 2x2 cells in the seed's order (0.003,0.05), (0.01,0), (0.01,0.05), (0.003,0): successive halving stops the
    # third after its first epoch (it trails the two before it), the fourth (the best) goes on
    "pruned grid": ["hparams_search=pruned_grid", "optimizer.lr=0.01,0.003", "optimizer.weight_decay=0.05,0"],
    # the median pruner (5 startup trials) prunes none of the 4; the other parameters fixed: a search over lr
    "tpe": [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=4",
        "optimizer.lr=tag(log,interval(0.001,0.01))",
        "optimizer.weight_decay=0",
        "model.num_branches=1",
        "model.classifier.dropout=0",
    ],
}
# Where each search is killed, a rerun after each kill: once job 0 has returned (its trial not told yet), in job 1's
# second epoch (step 50), while job 2 writes its last.ckpt, and as a job's final test starts. The grid's job 2 is
# the cell the pruner stops after its first epoch: killed while writing that epoch's last.ckpt (its retry starts
# again and must stop there too), then in its test (its retry resumes past that epoch: nothing to train).
KILLS = {
    "pruned grid": [
        {"job": 0, "at": "job end"},
        {"job": 1, "step": 50},
        {"job": 2, "epoch": 0, "file": "last.ckpt"},
        {"job": 2, "at": "test"},
    ],
    "tpe": [
        {"job": 0, "at": "job end"},
        {"job": 1, "step": 50},
        {"job": 2, "epoch": 1, "file": "last.ckpt"},
        {"job": 3, "at": "test"},
    ],
}


def chaos_args(synthetic_root: Path, tmp_path: Path, sweep: Path, search: str) -> list[str]:
    """A deterministic 4-trial search (``search``: one of SEARCHES) with its own pruner, epochs of 38 steps (batch
    size 8), its process killable through a fuse file (tests/chaos_helper.py); the same command every run."""
    return [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        *SEARCHES[search],
        "data.batch_size=8",
        "experiment=smoke",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "seed=7",
        f"model.blocks={SMALL_BLOCKS}",
        "~callbacks.progress_bar",
        *chaos_overrides(tmp_path / "fuse"),
        f"hydra.sweep.dir={sweep}",
    ]


def record(job: Path) -> dict:
    return json.loads((job / "run.json").read_text())


def summary(sweep: Path) -> list[tuple[str, ...]]:
    """The summary's rows without the wall time (the one column that differs between identical runs)."""
    return sorted(tuple(v for k, v in row.items() if k != "wall time (s)") for row in read_csv(sweep / "summary.csv"))


def outcomes(sweep: Path) -> dict[int, tuple]:
    """Each job's trial as the study ends it (a dead trial's retry standing for it): its parameters, state, value
    and reported val/acc by epoch."""
    trials = [t for t in load_optuna_study(sweep).trials if t.state.name != "FAIL"]
    return {t.user_attrs["job"]: (t.params, t.state.name, t.value, t.intermediate_values) for t in trials}


def folder_names(sweep: Path) -> list[str]:
    return [folder.name for _, folder in sorted(job_folders(sweep).items())]


@pytest.mark.slow
@pytest.mark.parametrize("search", list(SEARCHES))
def test_a_search_killed_at_several_points_and_rerun_each_time_ends_as_an_uninterrupted_one(
    search, synthetic_root, tmp_path
):
    """Issue 32's chaos test for Optuna: a pruned grid and a 4-trial TPE search are SIGKILLed at the points KILLS
    names, the same command rerun after each. Each rerun fails the trial left RUNNING and retries it in its job
    folder (job 0's returns its recorded metrics, the others resume from their last.ckpt), then goes on as the
    uninterrupted search would: the same cells or draws in the same job folders, the pruner's same verdicts, the
    same summary."""
    whole = tmp_path / "whole"
    result = run_cli("train", *chaos_args(synthetic_root, tmp_path, whole, search))
    assert result.returncode == 0, result.stderr[-3000:]

    sweep, fuse = tmp_path / "killed", tmp_path / "fuse"
    args = chaos_args(synthetic_root, tmp_path, sweep, search)
    for point in KILLS[search]:
        fuse.write_text(json.dumps(point))
        result = run_cli("train", *args)
        job = point["job"]
        assert folder_names(sweep) == folder_names(whole)[: job + 1]  # the uninterrupted search's next cell or draw
        assert killed(result) and not fuse.exists(), result.stderr[-3000:]
        assert load_optuna_study(sweep).trials[-1].state.name == "RUNNING"  # left by the dead search
        assert all(record(job_folder(sweep, n))["status"] == "finished" for n in range(job))  # the retries' too
        if job == 0:
            first_job = record(job_folder(sweep, 0))
            assert first_job["status"] == "finished"  # returned, not yet told
        if job == 1:
            assert "job already finished" in result.stdout + result.stderr  # job 0's retry: run.json read back

    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_optuna_study(sweep).trials
    assert [t.state.name for t in trials].count("FAIL") == len(KILLS[search])  # each dead trial retried once
    assert record(job_folder(sweep, 0)) == first_job  # finished before the first kill: never trained again
    resumed = {point["job"] for point in KILLS[search][1:]}  # their last retries, from their own last.ckpt
    assert all("resumed_at" in record(job_folder(sweep, n)) for n in resumed)
    assert folder_names(sweep) == folder_names(whole)
    assert outcomes(sweep) == outcomes(whole)  # the retries kept the dead trials' reports
    assert summary(sweep) == summary(whole)
    assert {n: checkpoint_files(job) for n, job in job_folders(sweep).items()} == {
        n: checkpoint_files(job) for n, job in job_folders(whole).items()
    }


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


def test_a_retried_trial_counts_once_at_a_successive_halving_rung(tmp_path):
    """Trials at rung 0 (1 epoch): 0.9, 0.5 (its search died: failed, then retried with its rung value copied),
    0.4, 0.3. A new trial at 0.8 competes with 5 values, as in a search never stopped: only the best third (0.9)
    goes on, so it is pruned. Counting the dead trial and its retry both (6 values: the best two go on) let it
    through."""
    import optuna

    from cifar_lit.hydra_ext.optuna_resume import SWEEP_DIR, WithoutRetried, folder_key, retry_dead_trials

    halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    study = optuna.create_study(direction="maximize", pruner=WithoutRetried(halving))
    for value in (0.9, 0.5, 0.4, 0.3):
        trial = study.ask()
        trial.report(value, 1)
        trial.should_prune()  # records the rung value
        if value == 0.5:  # left running by a dead search
            trial.set_user_attr(SWEEP_DIR, folder_key(tmp_path))
            trial.set_user_attr("job", 1)
        else:
            study.tell(trial, value)
    assert retry_dead_trials(study, tmp_path) == [1]
    retry = study.ask()  # the retry, running again: its copied rung value stands for the dead trial's
    assert study._storage.get_trial(retry._trial_id).system_attrs["completed_rung_0"] == 0.5
    new = study.ask()
    new.report(0.8, 1)
    assert new.should_prune()


@pytest.mark.parametrize("grid", [False, True])
def test_a_trial_asked_but_never_launched_by_a_dead_search_is_asked_again(tmp_path, grid):
    """The search died between asking trial 1 and launching its job: the trial, marked with the folder when asked,
    is RUNNING without a job folder. A rerun in the folder fails it; on a grid it is retried (it holds a cell no
    other trial would take: before, the grid ended a cell short), elsewhere the sampler asks it again. Either way it
    is not counted as a finished job, and the next job number is 1."""
    import optuna

    from cifar_lit.hydra_ext.optuna_resume import (
        ASKED_IN,
        JOB,
        SWEEP_DIR,
        JobNumbers,
        finished_jobs,
        folder_key,
        retry_dead_trials,
    )

    sampler = optuna.samplers.GridSampler({"x": [1, 2, 3]}, seed=0) if grid else optuna.samplers.RandomSampler(0)
    study = optuna.create_study(sampler=sampler)
    done = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2, 3])})
    done.set_user_attr(SWEEP_DIR, folder_key(tmp_path))
    done.set_user_attr(JOB, 0)
    study.tell(done, 1.0)
    asked = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2, 3])})
    asked.set_user_attr(ASKED_IN, folder_key(tmp_path))  # as OptunaSearch.ask marks it; then the search died

    assert retry_dead_trials(study, tmp_path) == ([asked.number] if grid else [])
    states = [t.state.name for t in study.get_trials()]
    assert states == (["COMPLETE", "FAIL", "WAITING"] if grid else ["COMPLETE", "FAIL"])
    assert finished_jobs(study, tmp_path) == 1 and JobNumbers(study, tmp_path).next == 1
