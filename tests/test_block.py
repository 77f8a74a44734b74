"""The block computes exactly the math of DEVELOPERS.md, in every form."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_lit.network.block import BLOCK_FORMS, Block, BlockForm
from cifar_lit.network.model import BlockNetwork


def literal_block_output(block: Block, x: torch.Tensor) -> torch.Tensor:
    """The block's math written out with plain nn.Conv2d modules, one per branch (the slow, obvious form)."""
    k, c_out, c_in = block.num_branches, block.out_channels, block.in_channels
    a = block.gate_activation(block.branch_gate(F.adaptive_avg_pool2d(x, 1).flatten(1)))  # (B, K)
    out = torch.zeros(x.shape[0], c_out, *x.shape[2:])
    for i in range(k):
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1)
        conv.weight.data = block.branch_weight[i * c_out : (i + 1) * c_out].detach()
        conv.bias.data = block.branch_bias[i * c_out : (i + 1) * c_out].detach()
        out += a[:, i, None, None, None] * conv(x)
    skip = x if c_in == c_out else block.skip(x)
    return F.relu(block.norm(out + skip))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "softmax"])
@pytest.mark.parametrize("form", BLOCK_FORMS)
@pytest.mark.parametrize("channels", [(3, 8), (8, 8)])
def test_block_equals_explicit_weighted_sum(form, activation, channels):
    torch.manual_seed(0)
    block = Block(*channels, num_branches=3, activation=activation, form=form).eval()
    with torch.no_grad():
        block.branch_bias.normal_()  # non-zero biases, so the bias term is checked too
        block.norm.running_mean.normal_()
    x = torch.randn(4, channels[0], 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), literal_block_output(block, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", [f for f in BLOCK_FORMS if f != "literal"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_forms_match_literal_outputs_and_gradients(form, channels_last):
    torch.manual_seed(1)
    literal = Block(16, 24, num_branches=3, form="literal")
    fast = Block(16, 24, num_branches=3, form=form)
    fast.load_state_dict(literal.state_dict())  # same parameter names: checkpoints move between forms
    x = torch.randn(6, 16, 8, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        fast.to(memory_format=torch.channels_last)
    y_lit, y_fast = literal(x), fast(x)
    torch.testing.assert_close(y_fast, y_lit, rtol=1e-4, atol=1e-5)
    target = torch.randn_like(y_lit)
    (y_lit * target).sum().backward()
    (y_fast * target).sum().backward()
    for (name, p_lit), p_fast in zip(literal.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_lit.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(2)
    block = Block(16, 16, form="concat").eval()
    x = torch.randn(8, 16, 8, 8)
    with torch.no_grad():
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = block(x).float()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()


def test_skip_path_only_when_channels_change():
    assert isinstance(Block(8, 8).skip, nn.Identity)
    projection = Block(3, 8).skip
    assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
    assert isinstance(projection[1], nn.BatchNorm2d)


def test_kaiming_init_statistics():
    torch.manual_seed(3)
    block = Block(128, 128, num_branches=3)
    expected_std = (2.0 / (128 * 9)) ** 0.5  # Kaiming normal, fan-in, ReLU gain
    assert abs(block.branch_weight.std().item() - expected_std) / expected_std < 0.02
    assert abs(block.branch_weight.mean().item()) < 0.01 * expected_std * 10


def test_gate_shape_and_activation():
    block = Block(8, 8, num_branches=5, activation="softmax")
    a = block.branch_weights(torch.randn(3, 8, 4, 4))
    assert a.shape == (3, 5)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(3))


def test_the_form_type_names_every_form_a_block_runs():
    assert set(get_args(BlockForm)) == set(BLOCK_FORMS)
    x = torch.randn(1, 4, 4, 4)
    for form in get_args(BlockForm):
        assert Block(4, 4, form=form)(x).shape == x.shape


def test_a_block_and_a_network_built_without_a_form_use_the_same_one():
    network = BlockNetwork(blocks=[{"in_channels": 3, "out_channels": 8}])
    assert network.blocks()[0].form == Block(3, 8).form
