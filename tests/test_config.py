"""Every config of every group composes; bad values are refused before training, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.profilers import SimpleProfiler

from cifar_lit.callbacks.provenance import RunProvenance
from cifar_lit.errors import ConfigError
from cifar_lit.hydra_ext.instantiate import build_module, instantiate, instantiate_list
from cifar_lit.reporting.console import print_config_tree
from tests.conftest import CONF_DIR, compose_train

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "paths"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in options(g)])
def test_every_option_composes(override, tmp_path):
    cfg = compose_train([override], output_dir=tmp_path)
    build_module(cfg)  # the model, optimizer and scheduler configs are valid
    instantiate(cfg.data)
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


def test_defaults_are_the_four_block_reference_run():
    cfg = compose_train([])
    assert len(cfg.model.blocks) == 4 and {b.out_channels for b in cfg.model.blocks} == {128}
    assert cfg.model.classifier.dropout > 0
    assert cfg.optimizer._target_ == "torch.optim.RMSprop" and cfg.optimizer.lr == 0.001
    assert cfg.data.batch_size == 128 and cfg.trainer.max_epochs == 40


def test_seed_two_blocks_experiment():
    cfg = compose_train(["experiment=seed_two_blocks"])
    assert [(b.in_channels, b.out_channels) for b in cfg.model.blocks] == [(3, 64), (64, 64)]
    assert (cfg.optimizer.lr, cfg.data.batch_size, cfg.trainer.max_epochs) == (0.01, 64, 30)


def test_scheduler_builds_with_total_steps(tmp_path):
    cfg = compose_train(["scheduler=onecycle"], output_dir=tmp_path)
    assert cfg.scheduler.max_lr == cfg.optimizer.lr and cfg.scheduler.total_steps is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("model.activation=swishy", "model.activation"),
        ("model.num_branches=0", "model.num_branches"),
        ("model.classifier.dropout=1.5", "model.classifier.dropout"),
        ("model.blocks.1.in_channels=64", r"model.blocks\[1\].in_channels"),
    ],
)
def test_bad_module_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        build_module(compose_train([override]))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["optimizer._target_=os.system"], "optimizer._target_='os.system' is refused"),
        (
            ["scheduler=cosine", "scheduler._target_=subprocess.Popen"],
            "scheduler._target_='subprocess.Popen' is refused",
        ),
        # a trusted module's import of something else: allowed to import, but not an optimizer class
        (
            ["optimizer._target_=cifar_lit.training.checkpoint.os.system"],
            "optimizer._target_=.* names <built-in function system>, not a subclass of Optimizer",
        ),
        # Hydra instantiates a nested _target_ too, whatever the outer class
        (
            ["optimizer=adamw", "+optimizer.betas={_target_:os.getcwd}"],
            "optimizer.betas._target_='os.getcwd' is refused",
        ),
    ],
)
def test_optimizer_and_scheduler_name_only_torch_optim_or_project_classes(overrides, key):
    with pytest.raises(ConfigError, match=key) as refused:
        build_module(compose_train(overrides))
    assert "choose one of conf/" in str(refused.value)  # how to fix it


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.batch_size=0", "data.batch_size"), ("data.loader=magic", "data.loader"), ("data.subset=-5", "data.subset")],
)
def test_bad_data_values_are_refused(override, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        instantiate(compose_train([override], output_dir=tmp_path).data)


def test_config_tree_shows_every_group_resolved(tmp_path, capsys):
    print_config_tree(compose_train(["optimizer.lr=0.0123", "tags=[a,b]"], output_dir=tmp_path))
    out = capsys.readouterr().out
    for group in ("data", "model", "optimizer", "trainer", "callbacks", "logger"):
        assert f"── {group}" in out, group
    assert "lr: 0.0123" in out and "- a" in out
    assert "${" not in out  # resolved: no ${paths.output_dir} left
    assert "hydra" not in out.replace("hydra-core", "")


def test_provenance_callback_writes_into_the_run_dir(tmp_path):
    cfg = compose_train(["test=false", "monitor=val/loss"], output_dir=tmp_path)
    provenance = [cb for cb in instantiate_list(cfg.callbacks) if isinstance(cb, RunProvenance)]
    assert len(provenance) == 1
    assert provenance[0].path == tmp_path / "run.json"
    assert provenance[0].monitor_best == "val/loss_best" and provenance[0].hparams_after_test is False


def test_profiler_debug_config_writes_its_report_into_the_run_dir(tmp_path):
    cfg = compose_train(["debug=profiler"], output_dir=tmp_path)
    trainer = instantiate(cfg.trainer, logger=False)
    assert isinstance(trainer.profiler, SimpleProfiler)
    assert Path(trainer.profiler.dirpath) == tmp_path / "profiler" and trainer.profiler.filename == "profile"
    assert trainer.limit_train_batches == 5 and trainer.max_epochs == 2  # a few batches, as debug=limit


def test_overfit_debug_config_drops_what_watches_validation(tmp_path):
    cfg = compose_train(["debug=overfit", "callbacks=early_stopping"], output_dir=tmp_path)
    callbacks = instantiate_list(cfg.callbacks)
    assert not any(isinstance(cb, EarlyStopping) for cb in callbacks)
    (checkpoint,) = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    assert checkpoint.monitor is None and checkpoint.filename == "last"  # the final weights, no best-val/acc pick
    assert cfg.test is False
