"""The direction follows the monitor (issue 32): checkpoint and early-stopping mode, ``<monitor>_best``, the value the
train entry returns and the Optuna study's direction are all the monitor's, ``min`` for ``val/loss``."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from cifar_lit.errors import ConfigError
from cifar_lit.training.module import BlockClassifier
from cifar_lit.training.monitor import metric_mode
from cifar_lit.training.monitor_check import check_monitor
from tests.conftest import (
    TINY_BLOCKS,
    compose_train,
    job_folder,
    load_optuna_study,
    optuna_search,
    run_cli,
    scalars,
    synthetic_overrides,
)


@pytest.mark.parametrize(
    ("monitor", "mode", "expected"),
    [
        ("val/acc", None, "max"),
        ("test/acc_tta", None, "max"),
        ("val/acc_best", None, "max"),
        ("val/loss", None, "min"),
        ("train/loss", "min", "min"),
        ("val/f1", "max", "max"),  # a name the rule cannot read: monitor_mode says
        (None, None, "max"),
    ],
)
def test_the_mode_comes_from_the_name_or_monitor_mode(monitor, mode, expected):
    assert metric_mode(monitor, mode) == expected


@pytest.mark.parametrize(
    ("monitor", "mode", "message"),
    [("val/f1", None, "set monitor_mode="), ("val/loss", "max", "contradicts"), ("val/acc", "up", "min, max or null")],
)
def test_a_mode_the_project_cannot_trust_is_refused(monitor, mode, message):
    with pytest.raises(ConfigError, match=message):
        metric_mode(monitor, mode)


def test_checkpoint_early_stopping_and_study_follow_the_monitor(tmp_path):
    """One resolver for the callbacks; an explicit hydra.sweeper.direction still wins over the monitor's."""
    pytest.importorskip("optuna")
    for monitor, mode, direction in (("val/loss", "min", "minimize"), ("val/acc", "max", "maximize")):
        cfg = compose_train(
            [f"monitor={monitor}", "callbacks=early_stopping", "hparams_search=optuna", f"hydra.sweep.dir={tmp_path}"],
            output_dir=tmp_path,
        )
        callbacks = OmegaConf.to_container(cfg.callbacks, resolve=True)
        assert (callbacks["model_checkpoint"]["mode"], callbacks["early_stopping"]["mode"]) == (mode, mode)
        assert optuna_search(cfg).directions == [direction]
    explicit = ["monitor=val/loss", "hparams_search=optuna", "hydra.sweeper.direction=maximize"]
    assert optuna_search(compose_train(explicit, output_dir=tmp_path)).directions == ["maximize"]


def test_a_min_best_survives_a_resume():
    """The running minimum goes into the checkpoint (metric states are not in the state dict) and comes back."""
    model = {"blocks": [{"in_channels": 3, "out_channels": 8, "pool": True}]}
    saved = BlockClassifier(model=model, optimizer={"lr": 0.1}, monitor="val/loss")
    for loss in (2.0, 1.5, 1.7):
        saved.best_monitor(torch.tensor(loss))
    checkpoint = {"state_dict": saved.state_dict()}
    saved.on_save_checkpoint(checkpoint)
    resumed = BlockClassifier(model=model, optimizer={"lr": 0.1}, monitor="val/loss")
    resumed.on_load_checkpoint(checkpoint)
    resumed.on_train_start()
    resumed.best_monitor(torch.tensor(1.6))
    assert resumed.best_monitor.compute().item() == pytest.approx(1.5)


def test_a_monitor_of_unknown_direction_needs_monitor_mode_before_training(synthetic_root, tmp_path):
    result = run_cli(
        "train", "monitor=val/f1", *synthetic_overrides(synthetic_root, tmp_path / "cache"), f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if "monitor=" in line]
    assert "monitor_mode=max or monitor_mode=min" in line, line
    assert not (tmp_path / "checkpoints").exists()


def loss_overrides(synthetic_root, cache) -> list[str]:
    return ["monitor=val/loss", f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, cache)]


@pytest.mark.slow
def test_val_loss_keeps_and_tests_the_lowest_loss_epoch(synthetic_root, tmp_path):
    """3 epochs: the best checkpoint, the one tested, is the epoch of the lowest logged val/loss (mode: max kept the
    highest); val/loss_best is logged every epoch as the running minimum and is the run's result."""
    run = tmp_path / "run"
    result = run_cli("train", "trainer.max_epochs=3", *loss_overrides(synthetic_root, tmp_path), f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    logged = scalars(run)
    val_loss = logged["val/loss"]
    best = run / "checkpoints" / f"epoch_{int(np.argmin(val_loss)):03d}.ckpt"
    assert len(val_loss) == 3 and list((run / "checkpoints").glob("epoch_*")) == [best]
    assert f"Loaded model weights from the checkpoint at {best}" in (run / "train.log").read_text()
    assert logged["val/loss_best"] == pytest.approx(list(np.minimum.accumulate(val_loss)))
    assert re.search(rf"val/loss_best +│ +{min(val_loss):.4f}", result.stdout)  # the final metrics, val/loss_best


@pytest.mark.slow
def test_an_optuna_search_on_val_loss_minimises_it(synthetic_root, tmp_path):
    """Each trial completes with its val/loss_best (None before: every trial failed), in a study that minimises;
    the pruning callback reported each epoch's val/loss."""
    import optuna

    sweep = tmp_path / "sweep"
    overrides = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2",
        "test=false",
        "data.batch_size=64",
        "model.num_branches=1",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli("train", *overrides, *loss_overrides(synthetic_root, tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_optuna_study(sweep)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    losses = [scalars(job_folder(sweep, t.number))["val/loss"] for t in trials]  # trial n is job n
    for trial, loss in zip(trials, losses, strict=True):
        assert list(trial.intermediate_values.values()) == pytest.approx(loss)
        assert trial.value == pytest.approx(min(loss))
    assert study.best_value == pytest.approx(min(min(loss) for loss in losses))
    assert math.isfinite(OmegaConf.load(sweep / "optimization_results.yaml").best_value)


class TenBatches:
    """What check_monitor reads of a set-up datamodule: an epoch of 10 training batches, shared by the ranks."""

    eval_splits = ("val",)

    def train_batches(self, world_size: int = 1) -> int:
        return 10 // world_size


@pytest.mark.parametrize(
    ("overrides", "needed"),
    [
        ([], 10),  # validation after the epoch's last batch
        (["trainer.val_check_interval=0.5"], 5),
        (["trainer.val_check_interval=3"], 3),
        (["trainer.accumulate_grad_batches=3"], 4),  # steps after batches 3, 6, 9 and the epoch's last, 10
        (["trainer.check_val_every_n_epoch=2"], 20),
        (["trainer.limit_train_batches=4"], 4),
        (["trainer.devices=2"], 5),  # each rank trains half the epoch
    ],
)
def test_max_steps_must_reach_the_first_validation(overrides, needed):
    """Lightning's schedule worked out from the config and the batch count: ``needed`` steps validate once, one fewer
    never does (the run used to end without its result, an "ok" job of a sweep)."""
    trainer = compose_train([*overrides, f"trainer.max_steps={needed}"]).trainer
    check_monitor("val/acc", trainer, TenBatches())
    trainer.max_steps = needed - 1
    with pytest.raises(ConfigError, match=f"set trainer.max_steps={needed} or more"):
        check_monitor("val/acc", trainer, TenBatches())


@pytest.mark.parametrize(
    "overrides", [["trainer.devices=auto"], ["trainer.val_check_interval='00:00:10:00'"], ["monitor=train/loss"]]
)
def test_a_schedule_the_config_cannot_tell_is_left_to_the_run(overrides):
    """Ranks unknown until the run starts, validation on a clock, a monitor logged without validation: no refusal
    (a run that then ends without its monitor fails at its end)."""
    cfg = compose_train([*overrides, "trainer.max_steps=1"])
    check_monitor(cfg.monitor, cfg.trainer, TenBatches())
