"""A sweep's job folders named by what each job varies: ``3_lr=0.005,batch_size=32`` instead of ``3``.

TensorBoard names a run by its folder, so the run list and the HPARAMS "Trial ID" column then say which run is
which. The name is Hydra's ``override_dirname`` idea with the job number in front (unique, and the order jobs ran
in): the job's own overrides less ``hydra.job.config.override_dirname.exclude_keys``. ``SweptKeysOnly``, a Hydra
callback, adds the command's fixed overrides (``experiment=smoke``, ``data.root=...``) to those excluded keys when a
multirun starts, so only the swept keys (``optimizer.lr=0.01,0.001``, an Optuna search's parameters) are left.
Keys are shortened to their last part (``lr``) unless two swept keys share it, values to what a reader needs
(``0.001234`` for Optuna's ``0.0012341234567``), and the name keeps to characters every file system accepts.

The same command gives every job the same name, so a rerun with the same ``hydra.sweep.dir`` finds its jobs
(cifar_lit.hydra_ext.job_resume); a job of a sweep begun before names existed keeps its numbered folder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from cifar_lit.hydra_ext.hydra_compat import register_resolver

EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"
# the callback through which the Optuna sweeper's jobs reach their trial: the same for every job, not a parameter
TRIAL_CALLBACK = "callbacks.optuna_pruning"
UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")  # what some file system refuses or a shell would need quoted
MAX_VALUE = 24  # characters of one value before it is shortened (its start and a hash of the whole)
MAX_NAME = 160  # characters of a whole name (most file systems allow 255 bytes)


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def short_value(text: str) -> str:
    """A value as a folder name shows it: long floats to 4 significant digits, unsafe characters as ``_``, a long
    value as its start and a hash of the whole (distinct values stay distinct)."""
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None and len(text) > 8 and not number.is_integer():
        text = f"{number:.4g}"
    safe = UNSAFE.sub("_", text)
    if len(safe) > MAX_VALUE:
        safe = f"{safe[: MAX_VALUE - 8]}-{short_hash(text)}"
    return safe.rstrip(".") or "_"  # Windows refuses a name ending in a dot


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's last part (``optimizer.lr`` -> ``lr``), the whole key where two keys share their last part."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: UNSAFE.sub("_", part if last.count(part) == 1 else key) for key, part in zip(keys, last, strict=True)}


def job_name(num: int, overrides: list[str], exclude: set[str]) -> str:
    """``<num>_<key>=<value>,...`` for the overrides whose key is not excluded, in the command's order."""
    parsed = [
        o
        for o in OverridesParser.create().parse_overrides(overrides)
        if o.key_or_group not in exclude and not o.key_or_group.startswith(f"{TRIAL_CALLBACK}.")
    ]
    keys = short_keys([o.key_or_group for o in parsed])
    parts = [f"{keys[o.key_or_group]}={short_value(o.get_value_element_as_str())}" for o in parsed]
    name = f"{num}_{','.join(parts)}" if parts else str(num)
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 7]}-{short_hash(name)}"
    return name


def numbered_sweep(sweep_dir: Path) -> bool:
    """Whether the sweep was begun before jobs had names: a job folder named by its number alone."""
    children = sweep_dir.iterdir() if sweep_dir.is_dir() else ()
    return any(child.name.isdigit() and (child / ".hydra").is_dir() for child in children)


def job_dirname(num: Any, *, _root_: DictConfig) -> str:
    """The ``${job_dirname:${hydra.job.num}}`` resolver of ``hydra.sweep.subdir``: the job's name, or its number
    alone in a sweep begun with numbered folders (its rerun must find its jobs where they are)."""
    hydra = _root_.hydra
    if numbered_sweep(Path(str(hydra.sweep.dir))):
        return str(num)
    exclude = set(OmegaConf.select(_root_, EXCLUDE_KEYS) or [])
    return job_name(int(num), list(hydra.overrides.task), exclude)


def register() -> None:
    register_resolver("job_dirname", job_dirname)


class SweptKeysOnly(Callback):
    """When a multirun starts, exclude the command's fixed overrides from its jobs' names (and from Hydra's
    ``override_dirname``), keeping the keys the user excluded already."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        command = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        excluded = list(OmegaConf.select(config, EXCLUDE_KEYS) or [])
        swept = {o.key_or_group for o in command if o.is_sweep_override()}  # also fixed earlier: the sweep wins
        excluded += [o.key_or_group for o in command if o.key_or_group not in swept | set(excluded)]
        if excluded:
            listed = ",".join(f"'{key}'" for key in excluded)
            with read_write(config.hydra.overrides):  # read-only from Hydra 1.4 on
                config.hydra.overrides.hydra.append(f"{EXCLUDE_KEYS}=[{listed}]")
