"""Sweeps beyond Hydra's basic ones: the Optuna search (SQLite study, failed trials), the joblib launcher (parallel
jobs, threads per job) and the SLURM launcher's config."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import SMALL_BLOCKS, compose_train, read_csv, run_cli, scalars, synthetic_overrides


def quick_overrides(synthetic_root: Path, cache: Path) -> list[str]:
    return [
        "trainer.max_epochs=1",
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        *synthetic_overrides(synthetic_root, cache),
    ]


def test_slurm_launcher_takes_its_tasks_and_nodes_from_the_trainer():
    """SLURM cannot run here: at least the job shape it would request follows trainer.devices and num_nodes."""
    slurm = compose_train(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = OmegaConf.to_container(slurm.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 2)
    assert launcher["timeout_min"] >= 60 and launcher["submitit_folder"].startswith(slurm.hydra.sweep.dir)


@pytest.mark.slow
def test_optuna_sweep_records_each_trial_and_survives_a_failed_one(synthetic_root, tmp_path):
    import optuna  # the sweeper's own dependency

    sweep = tmp_path / "sweep"
    overrides = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "optimizer.lr=choice(0.01,-1)",  # -1 fails the job: a FAIL trial, and the search goes on
        "data.batch_size=64",  # fixed on the command line: no longer searched
        "model.classifier.dropout=0",
        f"hydra.sweep.dir={sweep}",
        *quick_overrides(synthetic_root, tmp_path / "cache"),
    ]
    result = run_cli("train", *overrides)
    assert result.returncode == 1, result.stderr[-3000:]  # the search went on, and its exit status says a job failed
    assert "jobs failed" in result.stderr
    study = optuna.load_study(study_name="cifar_lit_block_net", storage=f"sqlite:///{sweep}/optuna.db")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 3
    states = {t.state for t in trials}
    assert states == {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}  # both, with this seed
    for trial in trials:  # trial n is job n
        job = sweep / str(trial.number)
        if trial.params["optimizer.lr"] == -1:
            assert trial.state == optuna.trial.TrialState.FAIL and (job / "FAILED.txt").is_file()
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(max(scalars(job)["val/acc"]))  # the job's val/acc_best
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value == pytest.approx(study.best_value)
    assert len(read_csv(sweep / "summary.csv")) == 3


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_with_their_threads(synthetic_root, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=1", "optimizer.lr=0.01,0.005"]
    result = run_cli("train", "-m", *overrides, f"hydra.sweep.dir={sweep}", *quick_overrides(synthetic_root, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert "torch threads: 1" in (sweep / job / "train.log").read_text()
    assert sorted((r["job"], r["status"]) for r in read_csv(sweep / "summary.csv")) == [("0", "ok"), ("1", "ok")]
