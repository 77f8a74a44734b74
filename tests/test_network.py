"""Shapes and parameter counts of the two reference networks; config errors that name the key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cifar_lit.errors import ConfigError
from cifar_lit.network.block import BLOCK_FORMS, Block
from cifar_lit.network.model import BlockNetwork
from tests.conftest import compose_train


def model_config(name: str) -> dict:
    return OmegaConf.to_container(compose_train([f"model={name}"]).model, resolve=True)


def block_params(c_in: int, c_out: int, k: int) -> int:
    gate = c_in * k + k
    convs = k * (c_out * c_in * 9 + c_out)
    skip = 0 if c_in == c_out else c_in * c_out + 2 * c_out
    return gate + convs + skip + 2 * c_out  # + the block's BatchNorm


@pytest.mark.parametrize(
    ("name", "channels", "pools", "head"),
    [
        ("two_blocks", [(3, 64), (64, 64)], 1, 64 * 10 + 10),
        ("four_blocks", [(3, 128)] + [(128, 128)] * 3, 4, 128 * 10 + 10),
    ],
)
def test_reference_networks(name, channels, pools, head):
    net = BlockNetwork(**model_config(name))
    assert [(b.in_channels, b.out_channels) for b in net.blocks()] == channels
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in net.backbone) == pools
    expected = sum(block_params(ci, co, 3) for ci, co in channels) + head
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_four_blocks_has_dropout_two_blocks_has_none():
    assert model_config("four_blocks")["classifier"]["dropout"] > 0
    assert model_config("two_blocks")["classifier"]["dropout"] == 0


def test_mlp_classifier():
    cfg = model_config("two_blocks")
    cfg["classifier"] = {"dropout": 0.2, "hidden": [32]}
    net = BlockNetwork(**cfg)
    linears = [m for m in net.classifier if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 10)]


def test_form_switch_keeps_outputs():
    torch.manual_seed(0)
    net = BlockNetwork(**model_config("two_blocks")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = net(x)
        net.set_form("literal")
        torch.testing.assert_close(net(x), fast, rtol=1e-4, atol=1e-4)
    assert all(isinstance(b, Block) and b.form == "literal" for b in net.blocks())


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"blocks": [{"in_channels": 3, "out_channels": 8}, {"in_channels": 16, "out_channels": 8}]}, "blocks[1]"),
        ({"blocks": [{"in_channels": 1, "out_channels": 8}]}, "blocks[0].in_channels"),
        ({"blocks": []}, "model.blocks"),
        ({"classifier": {"dropout": 1.5}}, "model.classifier.dropout"),
    ],
)
def test_bad_model_values_name_the_key(change, key):
    cfg = model_config("two_blocks") | change
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        BlockNetwork(**cfg)


@pytest.mark.parametrize(
    ("setting", "key"),
    [({"num_branches": 0}, "model.num_branches"), ({"activation": "tanhh"}, "model.activation"),
     ({"form": "fastest"}, "model.form")],
)  # fmt: skip
def test_a_block_setting_is_refused_once_with_one_message_whoever_builds_the_block(setting, key):
    """The network and a lone Block give the same ConfigError, naming the config key (and the choices)."""
    with pytest.raises(ConfigError, match=key) as from_network:
        BlockNetwork(**model_config("two_blocks") | setting)
    with pytest.raises(ConfigError) as from_block:
        Block(3, 8, **setting)
    assert str(from_block.value) == str(from_network.value)


def test_switching_to_an_unknown_form_is_refused_at_once_naming_the_forms():
    net = BlockNetwork(**model_config("two_blocks"))
    with pytest.raises(ConfigError, match=r"model\.form must be one of .*'literal'.*got 'fastest'"):
        net.set_form("fastest")
    assert all(block.form in BLOCK_FORMS for block in net.blocks())
