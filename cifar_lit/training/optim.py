"""The optimizer and lr scheduler of a BlockClassifier, built from the plain-dict configs its checkpoint carries:
targets checked before anything is imported, per-group learning rates (``norm_bias_lr_scale``, ``head_lr_scale``)
and OneCycleLR's per-group peak.
"""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Callable
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from cifar_lit.errors import ConfigError

LR_SCALES = ("norm_bias_lr_scale", "head_lr_scale")  # optimizer keys: a parameter group's lr relative to lr


LOCAL_KEYS = {"interval", *LR_SCALES}  # keys this module reads itself, not passed to the target


def check_target(group: str, node: dict[str, Any] | None) -> None:
    """Fail at construction, not in ``configure_optimizers`` once the data is loaded, when ``_target_`` names
    nothing importable (a typo such as ``optimizer._target_=torch.optim.Adamw``) or a key is not one of its
    arguments (``optimizer.nesterov`` left over when switching to ``optimizer=rmsprop``)."""
    target = (node or {}).get("_target_")
    if target is None:
        return
    located = pydoc.locate(target)
    if located is None:
        raise ConfigError(f"{group}._target_={target!r} names nothing importable; check the spelling")
    try:
        parameters = inspect.signature(located).parameters
    except (TypeError, ValueError):  # no introspectable signature: let instantiation judge
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(k for k in node if not k.startswith("_") and k not in parameters and k not in LOCAL_KEYS)
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]} is not an argument of {target} (its arguments: {', '.join(parameters)}); "
            f"remove it with ~{group}.{unknown[0]}"
        )


def check_lr_scales(optimizer: dict[str, Any]) -> None:
    for key in LR_SCALES:
        scale = optimizer.get(key, 1.0)
        if not isinstance(scale, int | float) or scale <= 0:
            raise ConfigError(f"optimizer.{key} must be a number > 0, got {scale!r}")


def build_optimizer(net: nn.Module, optimizer: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer config (a partial ``_target_``, plus this module's own ``*_lr_scale`` keys) over ``net``."""
    config = dict(optimizer)
    scales = {key: config.pop(key, 1.0) for key in LR_SCALES}
    return instantiate(config)(params=parameter_groups(net, config, scales))


def build_scheduler(
    scheduler: dict[str, Any], optimizer: torch.optim.Optimizer, estimated_steps: Callable[[], float]
) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` entry for the scheduler config over ``optimizer``. ``total_steps: null`` asks
    for ``estimated_steps()`` (the trainer's optimizer steps), which is only computed then."""
    config = dict(scheduler)
    interval = config.pop("interval", "epoch")
    if "total_steps" in config and config["total_steps"] is None:
        config["total_steps"] = int(estimated_steps())
    if isinstance(config.get("pct_start"), int):  # `scheduler.pct_start=0` parses as an int, which
        config["pct_start"] = float(config["pct_start"])  # OneCycleLR rejects ("Expected float ...")
    return {"scheduler": instantiate(config)(optimizer, **per_group_max_lr(config, optimizer)), "interval": interval}


def per_group_max_lr(scheduler: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """OneCycleLR's ``max_lr`` for each parameter group, in the groups' lr ratio (one number would give the
    BatchNorm biases of ``norm_bias_lr_scale`` the same peak as everything else)."""
    max_lr = scheduler.get("max_lr")
    if not isinstance(max_lr, int | float) or len(optimizer.param_groups) == 1:
        return {}
    return {"max_lr": [max_lr * group["lr"] / optimizer.defaults["lr"] for group in optimizer.param_groups]}


def parameter_groups(net: nn.Module, optimizer: dict[str, Any], scales: dict[str, float]) -> list[dict[str, Any]]:
    """All parameters in one group, plus a group of their own for the BatchNorm biases (``norm_bias_lr_scale``)
    and for the classifier's parameters (``head_lr_scale``) when their scale is not 1. A group with scale s gets
    ``lr * s`` and ``weight_decay / s``, so its decay per step stays ``lr * weight_decay`` (airbench94 trains the
    BatchNorm biases at 64x and its head at 13x the lr of its other SGD parameters). The scales are checked when
    the module is built (``check_lr_scales``)."""
    members = {
        "norm_bias_lr_scale": {
            id(m.bias) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
        },
        "head_lr_scale": {id(p) for p in net.classifier.parameters()},
    }
    lr, weight_decay = optimizer["lr"], optimizer.get("weight_decay", 0.0)
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups, claimed = [], set()
    for key, scale in scales.items():
        if scale != 1:
            params = [p for p in trainable if id(p) in members[key] and id(p) not in claimed]
            claimed |= {id(p) for p in params}
            groups.append({"params": params, "lr": lr * scale, "weight_decay": weight_decay / scale})
    return [{"params": [p for p in trainable if id(p) not in claimed]}, *groups]
