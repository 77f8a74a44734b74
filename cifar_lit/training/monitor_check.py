"""Whether a run will log its ``monitor``, decided before it trains.

A run returns ``<monitor>_best``: the value a sweep ranks and an Optuna search optimises, which ModelCheckpoint and
early stopping select on. A monitor the module never logs (``monitor=test/acc`` without a per-epoch test), or a
validation that never runs (``trainer.max_steps`` short of the first validation, ``trainer.limit_val_batches=0``,
``trainer.check_val_every_n_epoch`` past ``trainer.max_epochs``), used to surface only at the end, as a run without
a result that a sweep marked ``ok``. What the config and the training set's batch count decide is refused here, in one
line; what they cannot (a time-based ``val_check_interval``, an unknown number of ranks) is caught after the fit by
the train entry, which fails a run that ends without its monitor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.errors import ConfigError
from cifar_lit.training.module import BlockClassifier


def check_monitor(monitor: str | None, trainer: Mapping[str, Any], datamodule: CIFAR10DataModule) -> None:
    """Refuse, before training, a ``monitor`` this run would never log: one the module does not log each epoch, or
    a validation metric of a run that never validates. ``trainer`` is the composed ``cfg.trainer``; ``datamodule``
    is set up (its epoch's batch count: when the first validation comes). Lightning's own rules: validation runs
    after batch ``val_check_interval`` (a fraction of the epoch, or a batch count) of every
    ``check_val_every_n_epoch``-th epoch, and training ends before the batch that would exceed ``max_steps``
    optimizer steps (one per ``accumulate_grad_batches`` batches, and one at each epoch's end)."""
    eval_splits = datamodule.eval_splits
    logged = BlockClassifier.epoch_metrics(eval_splits)
    if monitor is not None and monitor not in logged:
        split, _, metric = monitor.partition("/")
        if split == "test" and f"{eval_splits[0]}/{metric}" in logged:
            ways_out = f"monitor={eval_splits[0]}/{metric} or data.test_every_epoch=true"
        elif split == "val" and f"{eval_splits[0]}/{metric}" in logged:
            ways_out = f"monitor={eval_splits[0]}/{metric} or a validation split (data.val_size > 0)"
        else:
            ways_out = f"monitor to one of {', '.join(logged)}"
        raise ConfigError(
            f"monitor={monitor} is never logged while training (each epoch evaluates: {', '.join(eval_splits)}); "
            f"set {ways_out}"
        )
    if monitor is None or monitor.startswith("train/") or trainer.get("fast_dev_run"):
        return  # train/* is logged at every epoch's end; fast_dev_run validates its one batch
    never = f"monitor={monitor} is never logged: "
    overfit = trainer.get("overfit_batches") or 0  # Lightning's limit of the training and validation batches then
    limit_val = overfit or trainer.get("limit_val_batches")
    if limit_val is not None and limit_val == 0:
        raise ConfigError(
            never + f"trainer.limit_val_batches={limit_val} turns validation off; "
            "set trainer.limit_val_batches=null (every batch) or a number > 0"
        )
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    every = trainer.get("check_val_every_n_epoch")
    if every is not None and max_epochs is not None and 0 <= max_epochs < every:
        raise ConfigError(
            never + f"trainer.check_val_every_n_epoch={every} is past trainer.max_epochs={max_epochs}, so no epoch "
            f"validates; set trainer.check_val_every_n_epoch={max_epochs} or less, or trainer.max_epochs={every}"
        )
    interval, devices, nodes = trainer.get("val_check_interval"), trainer.get("devices"), trainer.get("num_nodes", 1)
    if max_steps is None or max_steps < 0 or isinstance(interval, str | Mapping):
        return  # no step limit, or validation on a clock
    if not (isinstance(devices, int) and devices > 0 and isinstance(nodes, int) and nodes > 0):
        return  # devices=auto or -1: the ranks, so each one's share of an epoch, are known only when it runs
    batches = datamodule.train_batches(devices * nodes)
    limit = overfit or trainer.get("limit_train_batches")
    if limit is not None:
        batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    if batches <= 0:
        return  # no training at all: the run's end says so
    per_check = interval if isinstance(interval, int) else max(1, int(batches * (interval or 1.0)))
    first = per_check if every is None else (every - 1) * batches + min(per_check, batches)  # batch of 1st validation
    accumulate = trainer.get("accumulate_grad_batches") or 1
    before = (first - 1) // batches * -(-batches // accumulate) + (first - 1) % batches // accumulate  # its steps
    if before >= max_steps:
        raise ConfigError(
            never + f"trainer.max_steps={max_steps} ends training before the first validation, after batch {first} "
            f"({batches} batches an epoch); set trainer.max_steps={before + 1} or more (-1: no limit), or validate "
            "sooner (trainer.val_check_interval)"
        )
