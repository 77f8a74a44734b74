"""Config groups into objects: Hydra's instantiation with the project's user errors unwrapped, lists of callbacks
and loggers, the Trainer (its ``precision=auto`` resolved first) and the LightningModule from a composed config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from cifar_lit.errors import USER_ERRORS
from cifar_lit.training.module import BlockClassifier
from cifar_lit.training.precision import resolve_trainer_precision


def plain(cfg: DictConfig | None) -> Any:
    """A resolved config node as plain Python containers (what a checkpoint can store safely)."""
    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


def build_module(cfg: DictConfig) -> BlockClassifier:
    return BlockClassifier(
        model=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")) or None,
        channels_last=cfg.get("channels_last", True),
        compile=cfg.get("compile", False),
        label_smoothing=cfg.get("label_smoothing", 0.0),
        tta=cfg.get("tta", "none"),
        monitor=cfg.get("monitor"),
        monitor_mode=cfg.get("monitor_mode"),
    )


def instantiate(node: DictConfig, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a user error raised by the target comes out as itself, not wrapped."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def instantiate_trainer(trainer: DictConfig, **kwargs: Any) -> Any:
    """The ``lightning.Trainer`` a ``trainer`` config node describes, with ``precision=auto`` resolved in the node
    first (``cifar_lit.training.precision``): every entry point that builds a Trainer gets the same choice, and
    the node then holds the precision that ran."""
    resolve_trainer_precision(trainer)
    return instantiate(trainer, **kwargs)


def instantiate_list(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a group like ``callbacks`` or ``logger`` that has a ``_target_``."""
    if not group:
        return []
    return [
        hydra.utils.instantiate(node) for node in group.values() if isinstance(node, Mapping) and "_target_" in node
    ]
