"""Every config of every group composes; bad values are refused before training, naming the key."""

from __future__ import annotations

import pytest

from cifar_lit.cli import build_module, instantiate
from cifar_lit.errors import ConfigError
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
    ("override", "key"),
    [("data.batch_size=0", "data.batch_size"), ("data.loader=magic", "data.loader"), ("data.subset=-5", "data.subset")],
)
def test_bad_data_values_are_refused(override, key, tmp_path):
    with pytest.raises(ConfigError, match=key):
        instantiate(compose_train([override], output_dir=tmp_path).data)
