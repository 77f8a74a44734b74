"""The block of the block network, in its literal form and in two faster forms that compute the same thing.

A block maps X (B, C_in, H, W) to ReLU(BN(O + skip(X))), where

    a = g(Linear(SpatialAveragePool(X)))                 (B, K)
    O = a_1 Conv_1(X) + ... + a_K Conv_K(X)               K 3x3 convolutions, stride 1, padding 1
    skip(X) = X, or BN(Conv1x1(X)) when C_in != C_out

Because convolution is linear in its weights, O can be computed three ways with identical results:

* ``literal``:   K separate convolutions, then the weighted sum (the math as written; the reference).
* ``stacked``:   one convolution with K * C_out output channels, then the weighted sum over K.
* ``aggregate``: per-sample kernel aggregation (CondConv, Yang et al. 2019): W_b = sum_k a_bk W_k, then
  one grouped convolution with one group per sample. K times fewer multiply-adds than the other two.

All three read the same parameters, ``branch_weight`` (K * C_out, C_in, 3, 3) and ``branch_bias`` (K * C_out)
(branch k owns rows k * C_out ... (k + 1) * C_out - 1; 4-D so that ``model.to(memory_format=channels_last)``
works), so a checkpoint written with one form loads into any other. Which form is fastest depends on the device and on
the layer's shape: ``cifar_lit.bench`` measures it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from cifar_lit.errors import ConfigError

BlockForm = Literal["literal", "stacked", "aggregate", "concat"]


BLOCK_FORMS: tuple[BlockForm, ...] = get_args(BlockForm)


DEFAULT_FORM: BlockForm = "concat"  # the fastest on the project's CPUs (cifar_lit.bench); every form gives one result


ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "softmax": lambda: nn.Softmax(dim=1),
}


class Block(nn.Module):
    """One block: K input-dependent weighted 3x3 convolutions plus a residual path, then BN and ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_branches: int = 3,
        activation: str = "sigmoid",
        form: BlockForm = DEFAULT_FORM,
    ) -> None:
        super().__init__()
        if not isinstance(num_branches, int) or num_branches < 1:
            raise ConfigError(f"model.num_branches (K) must be an integer >= 1, got {num_branches!r}")
        check_choice("model.activation", activation, ACTIVATIONS)
        self.in_channels, self.out_channels, self.num_branches = in_channels, out_channels, num_branches
        self.form = form
        self.branch_gate = nn.Linear(in_channels, num_branches)
        self.gate_activation = ACTIVATIONS[activation]()
        self.branch_weight = nn.Parameter(torch.empty(num_branches * out_channels, in_channels, 3, 3))
        self.branch_bias = nn.Parameter(torch.zeros(num_branches * out_channels))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels)
            )
        )
        self.norm = nn.BatchNorm2d(out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions (fan-in, ReLU gain), as in the seed; zero conv biases."""
        nn.init.kaiming_normal_(self.branch_weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.branch_bias)
        for m in self.skip.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    @property
    def form(self) -> BlockForm:
        """How the K convolutions are computed (``BLOCK_FORMS``); checked whenever it is set, so a block never
        holds a form it cannot run."""
        return self._form

    @form.setter
    def form(self, form: BlockForm) -> None:
        check_choice("model.form", form, BLOCK_FORMS)
        self._form = form

    def branch_weights(self, x: torch.Tensor) -> torch.Tensor:
        """a = g(Linear(SpatialAveragePool(X))), shape (B, K)."""
        return self.gate_activation(self.branch_gate(x.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch_weights(x)
        mixed = _MIXERS[self.form](x, a, self.branch_weight, self.branch_bias)
        return F.relu(self.norm(mixed + self.skip(x)))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, K={self.num_branches}, form={self.form}"


def check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    """The one check of a block setting (the Block's, whoever builds it): a ConfigError naming the config key."""
    if value not in choices:
        raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")


def mix_literal(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """O = sum_k a_k Conv_k(X): K separate convolutions (the reference form)."""
    weights, biases = weight.chunk(a.shape[1]), bias.chunk(a.shape[1])
    out = 0
    for k, (w_k, b_k) in enumerate(zip(weights, biases, strict=True)):
        out = out + a[:, k, None, None, None] * F.conv2d(x, w_k, b_k, padding=1)
    return out


def mix_stacked(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """O = sum_k a_k Conv_k(X) with the K convolutions done as one conv of K * C_out output channels."""
    y = F.conv2d(x, weight, bias, padding=1).unflatten(1, (a.shape[1], -1))
    return torch.einsum("bkchw,bk->bchw", y, a)


def mix_aggregate(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """O = Conv(X; sum_k a_k W_k) + sum_k a_k b_k, one kernel per sample, as a grouped convolution."""
    batch, c_in, h, w = x.shape
    k = a.shape[1]
    c_out = weight.shape[0] // k
    per_sample_weight = torch.einsum("bk,koihw->boihw", a.to(weight.dtype), weight.unflatten(0, (k, c_out)))
    per_sample_bias = a.to(bias.dtype) @ bias.view(k, c_out)
    y = F.conv2d(
        x.reshape(1, batch * c_in, h, w),
        per_sample_weight.reshape(batch * c_out, c_in, 3, 3),
        per_sample_bias.reshape(-1),
        padding=1,
        groups=batch,
    )
    return y.view(batch, c_out, h, w)


def mix_concat(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """O = Conv([a_1 X, ..., a_K X]; [W_1 ... W_K]) + sum_k a_k b_k: one conv over K scaled copies of X."""
    k = a.shape[1]
    c_out = weight.shape[0] // k
    if x.is_contiguous(memory_format=torch.channels_last):  # build the K copies in NHWC order
        nhwc = x.permute(0, 2, 3, 1).unsqueeze(3) * a[:, None, None, :, None].to(x.dtype)
        scaled = nhwc.flatten(3, 4).permute(0, 3, 1, 2)
    else:
        scaled = (x.unsqueeze(1) * a[:, :, None, None, None].to(x.dtype)).flatten(1, 2)
    stacked_in = weight.unflatten(0, (k, c_out)).transpose(0, 1).flatten(1, 2)
    y = F.conv2d(scaled, stacked_in, padding=1)
    return y + (a.to(bias.dtype) @ bias.view(k, c_out))[:, :, None, None]


_MIXERS = {"literal": mix_literal, "stacked": mix_stacked, "aggregate": mix_aggregate, "concat": mix_concat}
