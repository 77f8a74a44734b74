"""Every config of every group composes; bad values are refused before training, naming the key."""

from __future__ import annotations

import pytest
from lightning.pytorch.callbacks import EarlyStopping

from cifar_lit.errors import ConfigError
from cifar_lit.hydra_ext.instantiate import build_module, instantiate, instantiate_list
from cifar_lit.reporting.console import print_config_tree
from tests.conftest import CONF_DIR, block_param_count, compose_train

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "paths"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in options(g)])
def test_every_option_composes(override, tmp_path):
    cfg = compose_train([override], output_dir=tmp_path)
    build_module(cfg)  # the model, optimizer and scheduler configs are valid
    instantiate(cfg.data)


def test_defaults_build_the_documented_four_block_network():
    """docs/configs.md: the defaults are the seed's four-block reference recipe: four blocks of 128 channels (K = 3
    branches each) and a linear head on the 128 pooled channels, counted parameter by parameter."""
    net = build_module(compose_train([])).net
    channels = [(3, 128)] + [(128, 128)] * 3
    assert [(b.in_channels, b.out_channels) for b in net.blocks()] == channels
    expected = sum(block_param_count(c_in, c_out, 3) for c_in, c_out in channels) + 128 * 10 + 10
    assert sum(p.numel() for p in net.parameters()) == expected


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


def test_overfit_debug_config_drops_what_watches_validation(tmp_path):
    cfg = compose_train(["debug=overfit", "callbacks=early_stopping"], output_dir=tmp_path)
    callbacks = instantiate_list(cfg.callbacks)
    assert not any(isinstance(cb, EarlyStopping) for cb in callbacks)
