"""Shapes, parameter counts and FLOPs of the networks; config errors that name the key."""

from __future__ import annotations

import itertools

import pytest
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary, get_human_readable_count
from omegaconf import OmegaConf

from cifar_lit.errors import ConfigError
from cifar_lit.network.block import BLOCK_FORMS, Block
from cifar_lit.network.model import BlockNetwork
from cifar_lit.training.module import BlockClassifier
from tests.conftest import block_param_count, compose_train, run_cli, synthetic_overrides

SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}


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


def layer_shapes(model: dict, image_size: int = 32) -> list[tuple[str, int, int, int]]:
    """(layer, in channels, out channels, output size) of the stem and of each block, for one image."""
    size, channels, shapes = image_size, model.get("in_channels", 3), []
    if model.get("stem"):
        size -= model["stem"]["patch"] - 1  # no padding
        shapes.append(("stem", channels, 2 * channels * model["stem"]["patch"] ** 2, size))
    for spec in model["blocks"]:
        shapes.append(("block", spec["in_channels"], spec["out_channels"], size))
        size = size // 2 if spec.get("pool") else size
    return shapes


def flops_one_by_one(model: dict) -> int:
    """What torch's FlopCounterMode counts for one image, one multiply-add (2 FLOPs) at a time: convolutions and
    matrix products; biases, BatchNorm, activations, pools and the branch weights' scalings count nothing."""
    k, flops = model["num_branches"], 0
    for layer, c_in, c_out, size in layer_shapes(model):
        if layer == "stem":
            taps = model["stem"]["patch"] ** 2
            flops += sum(2 for _ in itertools.product(range(size), range(size), range(c_out), range(c_in * taps)))
            continue
        flops += sum(2 for _ in itertools.product(range(c_in), range(k)))  # the gate's Linear, pooled input
        for _branch in range(k):  # one 3x3 convolution per branch, as the literal form
            flops += sum(2 for _ in itertools.product(range(size), range(size), range(c_out), range(c_in), range(9)))
        if model["form"] != "literal":  # the other forms mix the K biases: a (1, K) @ (K, C_out) product
            flops += sum(2 for _ in itertools.product(range(k), range(c_out)))
        if c_in != c_out:  # the 1x1 skip convolution
            flops += sum(2 for _ in itertools.product(range(size), range(size), range(c_out), range(c_in)))
    return flops + sum(2 for _ in range(model["blocks"][-1]["out_channels"] * 10))  # the classifier's Linear


def flops_by_formula(model: dict) -> int:
    """The same count in closed form."""
    k, flops = model["num_branches"], 0
    for layer, c_in, c_out, size in layer_shapes(model):
        if layer == "stem":
            flops += 2 * size * size * c_out * c_in * model["stem"]["patch"] ** 2
            continue
        flops += 2 * c_in * k + 2 * k * size * size * c_out * c_in * 9
        flops += 2 * k * c_out * (model["form"] != "literal") + 2 * size * size * c_out * c_in * (c_in != c_out)
    return flops + 2 * model["blocks"][-1]["out_channels"] * 10


TINY_MODEL = {"blocks": [{"in_channels": 3, "out_channels": 8, "pool": True}, {"in_channels": 8, "out_channels": 8}],
              "num_branches": 2}  # fmt: skip


@pytest.mark.parametrize("form", ["literal", "concat"])
@pytest.mark.parametrize("stem", [None, {"patch": 2}])
@pytest.mark.parametrize("channels_last", [True, False])
def test_model_summary_counts_the_networks_flops(form, stem, channels_last):
    model = TINY_MODEL | {"form": form}
    if stem:
        model = model | {"stem": stem, "blocks": [{**model["blocks"][0], "in_channels": 24}, *model["blocks"][1:]]}
    module = BlockClassifier(model=model, optimizer=SGD, channels_last=channels_last)
    assert ModelSummary(module).total_flops == flops_by_formula(model) == flops_one_by_one(model)


@pytest.mark.slow
def test_the_training_cli_prints_the_networks_flops(synthetic_root, tmp_path):
    blocks = "[{in_channels:3,out_channels:8,pool:true},{in_channels:8,out_channels:8,pool:false}]"
    overrides = [f"model.blocks={blocks}", "model.num_branches=2", "trainer.max_epochs=1", "test=false"]
    overrides += [f"hydra.run.dir={tmp_path / 'run'}", *synthetic_overrides(synthetic_root, tmp_path / "cache")]
    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = get_human_readable_count(flops_by_formula(TINY_MODEL | {"form": "concat"}))  # the configured form
    assert f"Total FLOPs: {expected}" in result.stdout, result.stdout[-3000:]
