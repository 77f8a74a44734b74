"""The block network: an optional whitening stem, a backbone of Blocks (with optional 2x2 max-pools between them)
and a classifier head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from cifar_lit.errors import ConfigError
from cifar_lit.network.block import DEFAULT_FORM, Block, BlockForm
from cifar_lit.network.classifier import build_classifier
from cifar_lit.network.stem import WhiteningStem


class BlockNetwork(nn.Module):
    """[Stem] + backbone (Blocks, each optionally followed by a 2x2 max-pool) + classifier.

    ``blocks`` is a list of mappings ``{in_channels, out_channels, pool}``; consecutive blocks must agree on
    channels. ``form`` picks how each block computes its weighted convolutions (see ``cifar_lit.network.block``,
    which also checks ``num_branches``, ``activation`` and ``form``); it changes speed, never the result or the
    parameter names. ``stem`` (``{patch, eps}``, or None) puts a frozen whitening convolution
    (``cifar_lit.network.stem``) before the first block, whose ``in_channels`` must then be the stem's
    ``2 * 3 * patch**2``. ``norm_momentum`` is every BatchNorm's running-statistics momentum;
    ``freeze_norm_weight`` keeps every BatchNorm scale at 1 (not trained, as airbench94: the convolution before
    it already sets the scale, and weight decay then acts on the convolutions alone).
    """

    def __init__(
        self,
        blocks: Sequence[Mapping[str, Any]],
        num_branches: int = 3,
        activation: str = "sigmoid",
        classifier: Mapping[str, Any] | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        form: BlockForm = DEFAULT_FORM,
        stem: Mapping[str, Any] | None = None,
        norm_momentum: float = 0.1,
        freeze_norm_weight: bool = False,
    ) -> None:
        super().__init__()
        self.stem = WhiteningStem(in_channels, **stem) if stem else None
        check_blocks(blocks, self.stem.out_channels if self.stem else in_channels, stem=self.stem is not None)
        if not 0.0 < norm_momentum <= 1.0:
            raise ConfigError(f"model.norm_momentum must be in (0, 1], got {norm_momentum!r}")
        layers: list[nn.Module] = []
        for spec in blocks:
            layers.append(Block(spec["in_channels"], spec["out_channels"], num_branches, activation, form))
            if spec.get("pool", False):
                layers.append(nn.MaxPool2d(2))
        self.backbone = nn.Sequential(*layers)
        self.classifier = build_classifier(blocks[-1]["out_channels"], num_classes, **(classifier or {}))
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = norm_momentum
                module.weight.requires_grad_(not freeze_norm_weight)

    def forward(self, x):
        if self.stem is not None:
            x = self.stem(x)
        return self.classifier(self.backbone(x))

    def set_form(self, form: BlockForm) -> None:
        """Switch every block to another (numerically equivalent) form; each block checks it."""
        for block in self.blocks():
            block.form = form

    def blocks(self) -> list[Block]:
        return [m for m in self.backbone if isinstance(m, Block)]


def check_blocks(blocks: Sequence[Mapping[str, Any]], in_channels: int, stem: bool = False) -> None:
    """Each block's in_channels must equal the previous block's out_channels (the first: the image's, or the
    stem's)."""
    if not blocks:
        raise ConfigError("model.blocks is empty: the backbone needs at least one block")
    expected = in_channels
    for i, spec in enumerate(blocks):
        for key in ("in_channels", "out_channels"):
            if not isinstance(spec.get(key), int) or spec[key] <= 0:
                raise ConfigError(f"model.blocks[{i}].{key} must be a positive integer, got {spec.get(key)!r}")
        if spec["in_channels"] != expected:
            raise ConfigError(
                f"model.blocks[{i}].in_channels is {spec['in_channels']} but the "
                f"{('stem outputs' if stem else 'image has') if i == 0 else 'previous block outputs'} "
                f"{expected} channels"
            )
        expected = spec["out_channels"]
