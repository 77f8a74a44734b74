"""What a run dir's ``.hydra/`` says about the run: a title of key hyper-parameters, its overrides, its tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path) -> Any:
    """A YAML file's content (None when missing or unreadable: the report does not need it)."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def run_title(run_dir: Path) -> str:
    """The run dir name and key hyper-parameters from ``.hydra/config.yaml`` (those it has)."""
    cfg = read_yaml(run_dir / ".hydra" / "config.yaml")
    if not isinstance(cfg, dict):
        return run_dir.name
    model, optimizer = cfg.get("model") or {}, cfg.get("optimizer") or {}
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    parts = []
    if isinstance(model.get("blocks"), list):
        parts.append(f"{len(model['blocks'])} blocks")
    if optimizer.get("_target_"):
        lr = optimizer.get("lr")
        parts.append(str(optimizer["_target_"]).rsplit(".", 1)[-1] + (f" lr={lr:g}" if _is_number(lr) else ""))
    if data.get("batch_size") is not None:
        parts.append(f"batch {data['batch_size']}")
    if trainer.get("max_epochs") is not None:
        parts.append(f"{trainer['max_epochs']} epochs")
    return run_dir.name + (f": {', '.join(parts)}" if parts else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run (``.hydra/overrides.yaml``), empty when unknown."""
    overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml")
    return [str(item) for item in overrides] if isinstance(overrides, list) else []


def read_tags(run_dir: Path) -> list[str]:
    """The run's ``tags`` (``.hydra/config.yaml``), empty when unknown."""
    cfg = read_yaml(run_dir / ".hydra" / "config.yaml")
    tags = cfg.get("tags") if isinstance(cfg, dict) else None
    return [str(tag) for tag in tags] if isinstance(tags, list) else []
