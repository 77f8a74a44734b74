"""The classifier head of the block network: pool, flatten, dropout, then a linear layer (softmax regression) or
an MLP, and optionally a fixed scale of the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cifar_lit.errors import ConfigError

POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


def build_classifier(
    in_features: int,
    num_classes: int,
    dropout: float = 0.0,
    hidden: Sequence[int] | None = None,
    pool: str = "avg",
    logit_scale: float = 1.0,
) -> nn.Sequential:
    """Spatial average (or max) pool -> flatten -> dropout -> linear (softmax regression), or an MLP when
    ``hidden``; then the logits times ``logit_scale`` (airbench94's 1/9: a small scale damps the head's
    effective learning rate by its square and the backbone's by the scale, so the backbone can take a large lr)."""
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.classifier.dropout must be in [0, 1), got {dropout}")
    if pool not in POOLS:
        raise ConfigError(f"model.classifier.pool must be one of {sorted(POOLS)}, got {pool!r}")
    layers: list[nn.Module] = [POOLS[pool](1), nn.Flatten(), nn.Dropout(dropout)]
    width = in_features
    for size in hidden or ():
        layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    if logit_scale <= 0:
        raise ConfigError(f"model.classifier.logit_scale must be > 0, got {logit_scale}")
    if logit_scale != 1.0:
        layers.append(Scale(logit_scale))
    return nn.Sequential(*layers)


class Scale(nn.Module):
    """Multiplies its input by a fixed factor (no parameters, so checkpoints do not change)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"
