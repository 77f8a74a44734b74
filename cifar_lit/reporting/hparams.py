"""The TensorBoard HPARAMS columns of a run, made to compare the runs of a sweep: a short curated set of the
hyper-parameters a person compares (model, blocks, K, g, optimizer and its lr / weight decay / momentum, scheduler,
batch size, epochs, augmentation, precision, seed) and the job's command-line overrides, flattened with readable
names; no ``_target_``, paths or callback internals (the whole config stays in ``run.json`` and ``.hydra/``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import Container, DictConfig, OmegaConf

from cifar_lit.reporting.secrets import mask_value

# name in HPARAMS -> config key, for what a person compares between runs (model, optimizer, scheduler: see hparams)
CURATED = {
    "K": "model.num_branches",
    "g": "model.activation",
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "momentum": "optimizer.momentum",
    "batch_size": "data.batch_size",
    "epochs": "trainer.max_epochs",
    "precision": "trainer.precision",
    "seed": "seed",
}


def short_name(target: Any) -> str:
    """``torch.optim.RMSprop`` -> ``RMSprop``; anything else as text."""
    return str(target).rsplit(".", 1)[-1]


def hparam_value(value: Any) -> bool | int | float | str:
    """What TensorBoard's HPARAMS takes: numbers, text and booleans; None and anything else as text."""
    return value if isinstance(value, bool | int | float | str) else str(value)


def augmentation(augment: Any) -> str:
    """The training augmentation in a few characters, e.g. ``crop4+flip+cutout8``, or ``none``."""
    if not isinstance(augment, DictConfig):
        return str(augment)
    parts = []
    if augment.get("crop_padding"):
        parts.append(f"crop{augment.crop_padding}" + ("reflect" if augment.get("pad_mode") == "reflect" else ""))
    if augment.get("flip"):
        parts.append("flip" if augment.flip is True else f"flip:{augment.flip}")
    if augment.get("cutout"):
        parts.append(f"cutout{augment.cutout}")
    return "+".join(parts) or "none"


def run_overrides(cfg: DictConfig) -> dict[str, Any]:
    """The job's command-line overrides (Hydra's task overrides: in a sweep, what varies between its jobs) as
    ``key -> value`` in the composed config, except Hydra's own, callbacks and loggers, deletions, paths, and lists or
    dicts (config groups, ``model.blocks``: the curated columns summarise them)."""
    if not HydraConfig.initialized():
        return {}
    overrides = {}
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+")
        if key.startswith(("hydra.", "callbacks.", "logger.", "paths.", "~")) or key in ("ckpt_path", "tags"):
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, Container) or isinstance(value, str) and ("/" in value or os.sep in value):
            continue
        overrides[key] = value
    return overrides


def comparable_hparams(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The HPARAMS columns of a run: the model (its config name, number of blocks, K, g), the optimizer (class name,
    lr, weight decay, momentum), the scheduler, batch size, epochs, augmentation, precision and seed, then the
    command-line overrides not among them under the key typed (``model.classifier.dropout``). Passwords in URLs
    masked (``cifar_lit.reporting.secrets``)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    scheduler = OmegaConf.select(cfg, "scheduler._target_", default=None)
    params: dict[str, Any] = {
        "model": choices.get("model"),
        "blocks": len(OmegaConf.select(cfg, "model.blocks", default=None) or []),
        "optimizer": short_name(OmegaConf.select(cfg, "optimizer._target_", default=None)),
        "scheduler": short_name(scheduler) if scheduler else "none",
        "augment": augmentation(OmegaConf.select(cfg, "data.augment", default=None)),
    }
    params |= {name: OmegaConf.select(cfg, key, default=None) for name, key in CURATED.items()}
    shown = set(CURATED.values()) | {"model", "optimizer", "scheduler"}
    params |= {key: value for key, value in run_overrides(cfg).items() if key not in shown}
    return {name: mask_value(hparam_value(value)) for name, value in params.items()}


def swept_columns() -> set[str]:
    """The HPARAMS columns a multirun varies: its command-line sweeps (``optimizer.lr=0.01,0.1``, ranges, choices)
    and an Optuna search space, read from the sweep's ``multirun.yaml`` (each job sees only its own values). Empty
    outside a multirun."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return set()
    try:
        sweep = OmegaConf.load(Path(HydraConfig.get().sweep.dir) / "multirun.yaml").hydra
    except OSError:
        return set()
    overrides = OverridesParser.create().parse_overrides([str(o) for o in sweep.overrides.task])
    keys = {o.key_or_group for o in overrides if o.is_sweep_override()} | set(sweep.sweeper.get("params") or {})
    column = {key: name for name, key in CURATED.items()}
    return {column.get(key, key) for key in keys}


def hparams_summary(params: dict[str, Any], metrics: list[str], varied: set[str] = frozenset()) -> tuple:
    """The three summaries of TensorBoard's hparams plugin (experiment, session start, session end); the columns in
    ``varied`` are marked as differing between runs, which TensorBoard shows first (it would sort them by name
    and show the first few)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    experiment, start, end = hparams(params, dict.fromkeys(metrics, 0.0))
    metadata = experiment.value[0].metadata.plugin_data
    content = HParamsPluginData.FromString(metadata.content)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in varied
    metadata.content = content.SerializeToString()
    return experiment, start, end
