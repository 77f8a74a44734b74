"""Test-time augmentation: average a network's logits over mirrored and shifted copies of each image.

Mirroring and small translations are the augmentations training used, so the network is (nearly) invariant to
them and averaging its votes removes some of its noise. Reported beside the plain accuracy, never instead of it.

* ``none``:            one pass, the plain prediction;
* ``flip``:            the mean of the image and its mirror (2 passes);
* ``flip_translate``:  half that, plus half the same over the image shifted one pixel up-left and one pixel
  down-right (reflect-padded), as airbench (Jordan, 2024) evaluates: 6 passes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cifar_lit.errors import ConfigError

TTA_MODES = ("none", "flip", "flip_translate")


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"tta must be one of {list(TTA_MODES)}, got {mode!r}")
    return mode


def mirror_logits(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, plain: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean logits of (B, C, H, W) images and their left-right mirrors (``plain``: ``net(x)``, when known)."""
    return ((net(x) if plain is None else plain) + net(x.flip(-1))) / 2


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The images moved by (dy, dx) pixels (|dy|, |dx| <= 1), the uncovered border filled by reflection."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    height, width = x.shape[-2:]
    return padded[..., 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]


def tta_logits(
    net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str, plain: torch.Tensor | None = None
) -> torch.Tensor:
    """The logits of ``net`` on ``x`` averaged over the views ``mode`` names (see the module docstring).
    ``plain``: ``net(x)`` when the caller has it already (the test's plain pass), so it is not computed again."""
    if mode == "none":
        return net(x) if plain is None else plain
    mirrored = mirror_logits(net, x, plain)
    if mode == "flip":
        return mirrored
    translated = (mirror_logits(net, shift(x, 1, 1)) + mirror_logits(net, shift(x, -1, -1))) / 2
    return (mirrored + translated) / 2
