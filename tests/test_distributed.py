"""DDP on CPU (two gloo processes): one run folder whatever the rank, in a single run and in a multirun, and a
synced validation accuracy that is exactly the single-process accuracy of the checkpoint saved that epoch."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.data.loaders import eval_sampler
from cifar_lit.hydra_ext.instantiate import instantiate
from cifar_lit.training.checkpoint import load_module
from tests.conftest import SMALL_BLOCKS, compose_train, read_csv, run_cli, scalars, synthetic_overrides


def data_overrides(synthetic_root: Path, cache: Path) -> list[str]:
    # 101 validation images in batches of 25: the ranks get 51 and 50 images, 3 and 2 batches. A padding sampler
    # would count one image twice and the synced accuracy would not be the single-process one.
    return [*synthetic_overrides(synthetic_root, cache), "data.val_size=101", "data.eval_batch_size=25"]


def ddp_overrides(synthetic_root: Path, cache: Path) -> list[str]:
    return [
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "trainer.precision=32",  # the single-process check below evaluates in fp32 too
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        *data_overrides(synthetic_root, cache),
    ]


def files_by_folder(root: Path, pattern: str) -> set[Path]:
    return {p.parent for p in root.rglob(pattern)}


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


def single_process_val_acc(run_dir: Path, synthetic_root: Path, tmp_path: Path, *overrides: str) -> float:
    """The validation accuracy of the run's last checkpoint (saved at the end of the last epoch) in one process:
    what the ranks' synced accuracy must equal (1/101 apart would be one image counted twice)."""
    data = data_overrides(synthetic_root, tmp_path / "cache")
    cfg = compose_train([f"model.blocks={SMALL_BLOCKS}", *data, *overrides], tmp_path)
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=32, logger=False, enable_progress_bar=False)
    return trainer.validate(module, datamodule=instantiate(cfg.data), verbose=False)[0]["val/acc"]


@pytest.mark.slow
def test_ddp_cpu_in_a_multirun_runs_each_job_once_in_its_own_dir(synthetic_root, tmp_path):
    sweep, logs = tmp_path / "sweep", tmp_path / "logs"
    overrides = [*ddp_overrides(synthetic_root, tmp_path / "cache"), "trainer.max_epochs=1", "optimizer.lr=0.01,0.02"]
    result = run_cli("train", "-m", *overrides, f"hydra.sweep.dir={sweep}", f"paths.log_dir={logs}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not logs.exists()  # no run or sweep folder of rank 1's own
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert files_by_folder(sweep, "*.ckpt") == {sweep / "0" / "checkpoints", sweep / "1" / "checkpoints"}
    assert files_by_folder(sweep, "config.yaml") == {sweep / "0" / ".hydra", sweep / "1" / ".hydra"}
    for job in ("0", "1"):
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 ran this job, in this job's folder
        assert len(scalars(sweep / job)["val/acc"]) == 1
    assert sorted((r["job"], r["status"]) for r in read_csv(sweep / "summary.csv")) == [("0", "ok"), ("1", "ok")]
    assert result.stdout.count("| job |") == 1  # one summary: rank 1 ran no sweep of its own
