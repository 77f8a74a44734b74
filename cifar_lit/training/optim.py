"""The optimizer and lr scheduler of a BlockClassifier, built from the plain-dict configs its checkpoint carries:
targets checked before anything is imported, per-group learning rates (``norm_bias_lr_scale``, ``head_lr_scale``)
and OneCycleLR's per-group peak.
"""

from __future__ import annotations

import inspect
import pydoc
from collections.abc import Callable, Iterator
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from cifar_lit.errors import ConfigError

LR_SCALES = ("norm_bias_lr_scale", "head_lr_scale")  # optimizer keys: a parameter group's lr relative to lr


LOCAL_KEYS = {"interval", *LR_SCALES}  # keys this module reads itself, not passed to the target


# A checkpoint's hyper-parameters name the classes that rebuild it: importing a module runs its code, so only these
# packages are ever imported from a config or a checkpoint, and what they name must be an optimizer / scheduler class.
TRUSTED_PACKAGES = (("torch", "optim"), ("cifar_lit",))
BASE_CLASS = {"optimizer": torch.optim.Optimizer, "scheduler": LRScheduler}
LEGACY_TARGETS = {"cifar_lit.muon.Muon": "cifar_lit.training.muon.Muon"}  # checkpoints from before the layout change


def with_current_target(node: dict[str, Any] | None) -> dict[str, Any] | None:
    """``node`` with a ``_target_`` the package layout has since moved renamed to where it lives now."""
    if not isinstance(node, dict) or node.get("_target_") not in LEGACY_TARGETS:
        return node
    return {**node, "_target_": LEGACY_TARGETS[node["_target_"]]}


def untrusted_target(group: str, node: dict[str, Any] | None) -> str | None:
    """Why ``node`` may not be instantiated (naming the key), judged on its strings alone, before any import:
    ``_target_`` must name something under ``torch.optim`` or ``cifar_lit``, and no nested value may have a
    ``_target_`` (Hydra would instantiate it too). None when it may."""
    for key, target in targets(node or {}, group):
        if key != f"{group}._target_":
            return f"{key}={target!r} is refused: only {group}._target_ may name code"
        parts = target.split(".") if isinstance(target, str) else []
        trusted = any(tuple(parts[: len(package)]) == package for package in TRUSTED_PACKAGES)
        if not (trusted and len(parts) >= 2 and all(part.isidentifier() for part in parts)):
            return f"{key}={target!r} is refused: only classes under torch.optim and cifar_lit are imported"
    return None


def targets(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """Every ``_target_`` in a nested config: (its dotted key, its value)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if key == "_target_":
            yield f"{prefix}._target_", value
        else:
            yield from targets(value, f"{prefix}.{key}")


def check_target(group: str, node: dict[str, Any] | None) -> None:
    """Fail at construction, not in ``configure_optimizers`` once the data is loaded, when ``_target_`` is not
    a trusted name (``untrusted_target``; refused before it is imported), names nothing importable (a typo such
    as ``optimizer._target_=torch.optim.Adamw``) or no optimizer / scheduler class, or a key is not one of its
    arguments (``optimizer.nesterov`` left over when switching to ``optimizer=rmsprop``)."""
    how_to_fix = f"choose one of conf/{group}/ ({group}=NAME) or a torch.optim class"
    if reason := untrusted_target(group, node):
        raise ConfigError(f"{reason}; {how_to_fix}")
    target = (node or {}).get("_target_")
    if target is None:
        return
    located = pydoc.locate(target)
    if located is None:
        raise ConfigError(f"{group}._target_={target!r} names nothing importable; check the spelling")
    if not (inspect.isclass(located) and issubclass(located, BASE_CLASS[group])):
        base = BASE_CLASS[group].__name__
        raise ConfigError(f"{group}._target_={target!r} names {located!r}, not a subclass of {base}; {how_to_fix}")
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
