"""The real entry points, end to end, on a small synthetic image folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifar_lit.errors import FAILURE_FILE
from cifar_lit.train import train
from tests.conftest import (
    SMALL_BLOCKS,
    TINY_BLOCKS,
    compose_train,
    job_folder,
    read_csv,
    run_cli,
    run_training,
    scalars,
    synthetic_overrides,
)


@pytest.fixture(scope="module")
def smoke_run(synthetic_root, tmp_path_factory) -> Path:
    return run_training(
        tmp_path_factory.mktemp("smoke_run"),
        "experiment=smoke",
        "trainer.max_epochs=2",
        *synthetic_overrides(synthetic_root, tmp_path_factory.mktemp("cache")),
    )


@pytest.mark.slow
def test_smoke_run_writes_events_checkpoints_and_config(smoke_run):
    logged = scalars(smoke_run)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"):
        assert tag in logged, tag
    assert len(logged["val/acc"]) == 2  # one value per epoch
    assert logged["val/acc_best"][-1] == max(logged["val/acc"])
    assert (smoke_run / "checkpoints" / "last.ckpt").is_file()
    assert any(p.name.startswith("epoch_") for p in (smoke_run / "checkpoints").iterdir())
    assert (smoke_run / ".hydra" / "config.yaml").is_file()


@pytest.mark.slow
def test_train_log_has_one_line_per_epoch_with_the_logged_accuracy(smoke_run):
    lines = [line for line in (smoke_run / "train.log").read_text().splitlines() if "epoch_log" in line]
    assert [line.split("epoch ")[1].split(":")[0] for line in lines] == ["1/2", "2/2"]
    for line, val_acc in zip(lines, scalars(smoke_run)["val/acc"], strict=True):
        assert f"val/acc {val_acc:.4f}" in line


@pytest.mark.slow
def test_lightnings_own_messages_reach_train_log_once(smoke_run):
    log = (smoke_run / "train.log").read_text()
    assert log.count("`max_epochs=2` reached") == 1, log[-2000:]


@pytest.mark.slow
def test_eval_reloads_the_checkpoint(smoke_run, synthetic_root, tmp_path):
    best = next(p for p in (smoke_run / "checkpoints").iterdir() if p.name.startswith("epoch_"))
    result = run_cli(
        "eval",
        f"ckpt_path={best}",
        f"hydra.run.dir={tmp_path}",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc_airplane" in result.stdout and "test/acc" in result.stdout
    final_test = scalars(smoke_run)["test/acc"][-1]
    assert f"{final_test:.4f}" in result.stdout  # same checkpoint, same test set, same accuracy


@pytest.mark.slow
@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "ways_out"),
    [
        (["experiment=smoke", "monitor=test/acc"], ["monitor=val/acc", "data.test_every_epoch=true"]),
        (
            ["experiment=fast94", "data.val_size=256", "trainer.max_epochs=1"],
            ["monitor=val/acc", "data.test_every_epoch=true"],
        ),
        (["experiment=smoke", "data.val_size=0", "monitor=val/acc"], ["monitor=test/acc", "data.val_size > 0"]),
        # validation that never runs: the run used to train and end with status 0, without val/acc_best
        (["experiment=smoke", "trainer.limit_val_batches=0"], ["trainer.limit_val_batches=0", "=null"]),
        (
            ["experiment=smoke", "trainer.check_val_every_n_epoch=2"],
            ["trainer.check_val_every_n_epoch=2 is past trainer.max_epochs=1", "trainer.max_epochs=2"],
        ),
    ],
)
def test_a_monitor_that_is_never_logged_fails_before_training(synthetic_root, tmp_path, overrides, ways_out):
    """ModelCheckpoint would find the metric missing only after the first epoch's validation, saving nothing; a run
    that never validates would end without its result."""
    result = run_cli(
        "train",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        *overrides,
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if "monitor=" in line]
    assert all(way_out in line for way_out in ways_out), line
    assert "epoch_log" not in (tmp_path / "train.log").read_text() and not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_multirun_summarises_itself_and_survives_a_failing_job(synthetic_root, tmp_path):
    overrides = ["experiment=smoke", "optimizer.lr=0.01,-1", "test=false", f"hydra.sweep.dir={tmp_path}"]
    result = run_cli("train", "-m", *overrides, *synthetic_overrides(synthetic_root, tmp_path / "cache"))
    assert result.returncode == 1, result.stderr[-3000:]  # the sweep ran on, but says that a job failed
    assert "1 of 2 jobs failed (1_lr=-1)" in result.stderr
    assert (job_folder(tmp_path, 0) / "checkpoints" / "last.ckpt").is_file()
    assert "val/acc" in scalars(job_folder(tmp_path, 0))
    assert "optimizer.lr" in (job_folder(tmp_path, 1) / "FAILED.txt").read_text()
    rows = read_csv(tmp_path / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "ok"), ("1", "failed")]
    assert float(rows[0]["best val acc"]) == max(scalars(job_folder(tmp_path, 0))["val/acc"])
    assert "failed" in result.stdout  # the summary is printed at the end of the sweep


def test_overfits_one_small_batch(synthetic_root, tmp_path):
    """A sound model and optimiser drive the loss on a few fixed batches towards zero."""
    overrides = [
        "debug=overfit",
        "trainer.overfit_batches=1",
        "trainer.max_epochs=60",
        "trainer.check_val_every_n_epoch=60",  # the loss on the training batches is what this test reads
        "test=false",
        "~logger",
        "~callbacks",
        "+trainer.enable_checkpointing=false",
        f"model.blocks={SMALL_BLOCKS}",
        "optimizer.lr=0.01",
        "model.classifier.dropout=0",
        *synthetic_overrides(synthetic_root, tmp_path / "c"),
    ]
    cfg = compose_train(overrides, output_dir=tmp_path)
    metrics = train(cfg)
    assert metrics["train/loss"] < 0.1 and metrics["train/acc"] == 1.0


@pytest.mark.slow
def test_a_run_that_ends_without_its_monitor_fails(synthetic_root, tmp_path):
    """Validation on a clock that never strikes (every hour; the run takes seconds): nothing before training can tell,
    the run's end does. Alone it ends in one line with status 1; in a multirun it is a failed job, its FAILED.txt
    says why, the summary marks it failed and the sweep exits 1 (before: status 0, the job "ok" without a value)."""
    common = [
        "experiment=smoke",
        "test=false",
        "trainer.val_check_interval='00:01:00:00'",
        f"model.blocks={TINY_BLOCKS}",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    ]
    single = run_cli("train", *common, f"hydra.run.dir={tmp_path / 'run'}")
    assert single.returncode == 1 and "Traceback" not in single.stderr, single.stderr[-3000:]
    (line,) = [line for line in single.stderr.splitlines() if line.startswith("error: ")]
    assert "monitor=val/acc was never logged" in line, line
    sweep = tmp_path / "sweep"
    multirun = run_cli("train", "-m", *common, f"hydra.sweep.dir={sweep}")
    assert multirun.returncode == 1, multirun.stderr[-3000:]
    assert "monitor=val/acc was never logged" in (sweep / "0" / FAILURE_FILE).read_text()
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["failed"]
