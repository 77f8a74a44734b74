"""DDP on CPU (two gloo processes): one run folder whatever the rank, in a single run and in a multirun, and a
synced validation accuracy that is exactly the single-process accuracy of the checkpoint saved that epoch."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.data.loaders import eval_sampler
from tests.conftest import (
    ddp_overrides,
    files_by_folder,
    job_folder,
    load_optuna_study,
    read_csv,
    run_cli,
    scalars,
    single_process_val_acc,
)


def test_eval_shards_cover_the_split_once():
    for size in (101, 100, 2):
        shards = [list(eval_sampler(size, rank, 2)) for rank in range(2)]
        assert sorted(shards[0] + shards[1]) == list(range(size))
        assert [len(eval_sampler(size, rank, 2)) for rank in range(2)] == [len(s) for s in shards]


@pytest.mark.parametrize("loader", ["resident", "torch"])
def test_shards_are_the_data_parallel_ranks_not_the_processes(synthetic_root, tmp_path, loader):
    """Under a model-parallel strategy, 4 processes (global_rank 3 of 4) may form 2 data-parallel replicas: the
    loaders must shard as Lightning's DataLoader re-wiring does, by ``trainer.distributed_sampler_kwargs``."""
    dm = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), val_size=101, loader=loader)
    dm.setup("fit")
    (whole,) = dm.val_dataloader()  # no trainer: one process, the whole split
    dm.trainer = SimpleNamespace(
        global_rank=3, world_size=4, distributed_sampler_kwargs={"num_replicas": 2, "rank": 1}, overfit_batches=0,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )  # fmt: skip
    (shard,) = dm.val_dataloader()
    assert torch.equal(torch.cat([x for x, _ in shard]), torch.cat([x for x, _ in whole])[1::2])
    if loader == "resident":  # a torch DataLoader is sharded for training by Lightning itself
        assert len(torch.cat([y for _, y in dm.train_dataloader()])) == 300 // 2


@pytest.mark.slow
def test_ddp_cpu_run_has_one_run_dir_and_the_exact_synced_accuracy(synthetic_root, tmp_path):
    logs = tmp_path / "logs"
    result = run_cli("train", *ddp_overrides(synthetic_root, tmp_path / "cache"), f"paths.log_dir={logs}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in logs.iterdir()] == ["runs"] and len(list((logs / "runs").iterdir())) == 1
    run_dir = next((logs / "runs").iterdir())
    assert files_by_folder(logs, "events.out.tfevents.*") == {run_dir / "tensorboard"}
    assert files_by_folder(logs, "*.ckpt") == {run_dir / "checkpoints"}
    assert files_by_folder(logs, "config.yaml") == {run_dir / ".hydra"}  # rank 1 writes no .hydra/
    logged = scalars(run_dir)["val/acc"]
    assert len(logged) == 2
    assert single_process_val_acc(run_dir, synthetic_root, tmp_path) == pytest.approx(logged[-1], abs=1e-6)


@pytest.mark.slow
def test_ddp_cpu_with_the_per_image_dataloader_counts_each_evaluation_image_once(synthetic_root, tmp_path):
    logs, loader = tmp_path / "logs", "data.loader=torch"  # Lightning would shard it with a padding sampler
    overrides = [*ddp_overrides(synthetic_root, tmp_path / "cache"), "trainer.max_epochs=1", loader]
    result = run_cli("train", *overrides, f"paths.log_dir={logs}")
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next((logs / "runs").iterdir())
    (logged,) = scalars(run_dir)["val/acc"]
    assert single_process_val_acc(run_dir, synthetic_root, tmp_path, loader) == pytest.approx(logged, abs=1e-6)


@pytest.mark.slow
def test_ddp_cpu_in_a_multirun_runs_each_job_once_in_its_own_dir(synthetic_root, tmp_path):
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    overrides = [*ddp_overrides(synthetic_root, tmp_path / "cache"), "trainer.max_epochs=1", "optimizer.lr=0.01,0.02"]
    result = run_cli("train", "-m", *overrides, f"hydra.sweep.dir={sweep}", f"paths.log_dir={logs}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not logs.exists()  # no run or sweep folder of rank 1's own
    jobs = [sweep / "0_lr=0.01", sweep / "1_lr=0.02"]
    assert sorted(p for p in sweep.iterdir() if p.is_dir()) == jobs
    assert files_by_folder(sweep, "*.ckpt") == {job / "checkpoints" for job in jobs}
    assert files_by_folder(sweep, "config.yaml") == {job / ".hydra" for job in jobs}
    for job in jobs:
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, in this job's folder
        assert len(scalars(job)["val/acc"]) == 1
    assert sorted((r["job"], r["status"]) for r in read_csv(sweep / "summary.csv")) == [("0", "ok"), ("1", "ok")]
    assert result.stdout.count("| job |") == 1  # one summary: rank 1 ran no sweep of its own


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["run", "multirun"])
def test_a_ddp_run_whose_rank_1_fails_after_rank_0_finished_fails(synthetic_root, tmp_path, mode):
    """Rank 1 exits with status 3 once everything is done (rank 0 had nothing left to wait for): the run fails all
    the same, in one line naming the rank and its status, run.json says so; a sweep's job has it in its FAILED.txt,
    the summary's row is failed and the sweep's status 1."""
    overrides = [*ddp_overrides(synthetic_root, tmp_path / "cache"), "trainer.max_epochs=1"]
    overrides += ["+callbacks.rank_exit._target_=tests.rank_exit_helper.ExitAtShutdown"]
    sweep = tmp_path / "sweep"
    if mode == "run":
        result = run_cli("train", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    else:
        result = run_cli("train", "-m", *overrides, "optimizer.lr=0.01", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr[-3000:]
    run_dir = tmp_path / "run" if mode == "run" else job_folder(sweep, 0)
    error = json.loads((run_dir / "run.json").read_text())
    assert error["status"] == "failed" and error["error"].startswith("RankError: rank 1 (pid "), error
    assert "exited with status 3" in error["error"]
    if mode == "run":
        assert result.stderr.strip().splitlines()[-1] == "error: " + error["error"].removeprefix("RankError: ")
    else:
        assert (run_dir / "FAILED.txt").read_text().strip() == error["error"]
        assert [(row["job"], row["status"]) for row in read_csv(sweep / "summary.csv")] == [("0", "failed")]


@pytest.mark.slow
def test_an_optuna_trial_pruned_under_ddp_stops_every_rank(synthetic_root, tmp_path):
    """Rank 0 asks the pruner; every rank must stop after the same epoch, or rank 1 goes on alone into the next
    epoch's first all-reduce. A pruner that prunes every report stops the 3-epoch trial after its first."""
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    overrides = [
        *ddp_overrides(synthetic_root, tmp_path / "cache"),
        "trainer.max_epochs=3",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "optimizer.lr=choice(0.01)",  # the search space: one value; the other keys fixed
        "data.batch_size=64",
        "model.classifier.dropout=0",
        "model.num_branches=1",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.01}",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli("train", *overrides, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    # a rank 1 that trained on alone would fail in epoch 2's all-reduce ("Connection closed by peer" once rank 0 is
    # gone), which its job's exit status does not show (rank 0 has finished): its own error output does
    assert "Error executing job" not in result.stderr and "RuntimeError" not in result.stderr, result.stderr[-3000:]
    assert [trial.state for trial in load_optuna_study(sweep).trials] == [TrialState.PRUNED]
    job = job_folder(sweep, 0)
    assert (job / "PRUNED.txt").read_text().startswith("pruned after 1 epoch:")
    assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran the trial, and stopped with rank 0
    assert len(scalars(job)["val/acc"]) == 1
