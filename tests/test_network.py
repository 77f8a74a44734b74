"""Shapes and parameter counts of the two reference networks; config errors that name the key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from cifar_lit.errors import ConfigError
from cifar_lit.network.block import Block
from cifar_lit.network.model import BlockNetwork
from tests.conftest import block_param_count, compose_train


def model_config(name: str) -> dict:
    return OmegaConf.to_container(compose_train([f"model={name}"]).model, resolve=True)


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
    expected = sum(block_param_count(ci, co, 3) for ci, co in channels) + head
    assert sum(p.numel() for p in net.parameters()) == expected
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


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
        ({"num_branches": 0}, "model.num_branches"),
        ({"activation": "tanhh"}, "model.activation"),
        ({"form": "fastest"}, "model.form"),
        ({"classifier": {"dropout": 1.5}}, "model.classifier.dropout"),
    ],
)
def test_bad_model_values_name_the_key(change, key):
    cfg = model_config("two_blocks") | change
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        BlockNetwork(**cfg)
