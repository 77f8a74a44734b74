"""Which way the monitored metric improves: the one answer that every consumer of ``monitor`` uses.

ModelCheckpoint's and EarlyStopping's ``mode`` (``${metric_mode:${monitor},${monitor_mode}}`` in conf/callbacks/),
the running best the LightningModule logs as ``<monitor>_best`` (a running maximum or minimum), and the Optuna
study's direction (``cifar_lit.hydra_ext.optuna_sweeper``) all come from ``metric_mode``. Before it, ``mode: max`` was
written in the configs, so ``monitor=val/loss`` kept the epoch with the *highest* loss.

The rule, from the metric's name (the part after the last ``/``): ``acc...`` is maximised (``val/acc``,
``val/acc_best``, ``test/acc_tta``), ``loss...`` minimised (``val/loss``, ``train/loss``). Any other name needs an
explicit ``monitor_mode=min|max``: guessing wrong silently keeps the worst epoch. An explicit mode that contradicts
the name (``monitor=val/loss monitor_mode=max``) is refused for the same reason.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from cifar_lit.errors import ConfigError
from cifar_lit.hydra_ext.hydra_compat import register_resolver

MODES = ("min", "max")
NAME_RULE = (("acc", "max"), ("loss", "min"))  # (the metric name's prefix, its mode)
DIRECTIONS = {"min": "minimize", "max": "maximize"}  # an Optuna study's direction for a mode


def mode_from_name(metric: str) -> str | None:
    """``max``/``min`` by ``NAME_RULE`` from the name after the last ``/``; None when the name says nothing."""
    name = metric.rsplit("/", 1)[-1]
    return next((mode for prefix, mode in NAME_RULE if name.startswith(prefix)), None)


def metric_mode(metric: str | None, mode: str | None = None) -> str:
    """``min`` or ``max``: the way ``metric`` improves. ``mode`` (the config's ``monitor_mode``; None: inferred from
    the name) is required for a name the rule cannot read and must agree with one it can. No metric (monitor=null,
    nothing selected): ``mode`` or ``max``, which then matters to nothing."""
    if mode is not None and mode not in MODES:
        raise ConfigError(f"monitor_mode must be min, max or null (inferred from the monitor), got {mode!r}")
    if metric is None:
        return mode or "max"
    inferred = mode_from_name(str(metric))
    if inferred is None and mode is None:
        raise ConfigError(
            f"monitor={metric}: cannot tell from its name whether higher or lower is better "
            "(acc* is maximised, loss* minimised); set monitor_mode=max or monitor_mode=min"
        )
    if inferred is not None and mode is not None and mode != inferred:
        way = "maximised" if inferred == "max" else "minimised"
        raise ConfigError(f"monitor_mode={mode} contradicts monitor={metric}, which is {way} (acc* max, loss* min)")
    return mode or inferred


def monitor_mode(cfg: DictConfig | dict[str, Any]) -> str:
    """The mode of a train config's ``monitor`` (its ``monitor_mode`` when set): the check the train entry runs before
    anything resolves the callbacks' ``${metric_mode:...}``, so a bad monitor is one line, not a resolver traceback."""
    return metric_mode(cfg.get("monitor"), cfg.get("monitor_mode"))


def objective_names(cfg: DictConfig | dict[str, Any]) -> list[str]:
    """The metrics a run returns to a search (what ``python -m cifar_lit.train`` returns): ``objectives`` when set
    (several: a multi-objective search, e.g. ``[val/acc_best, model/params]``), else ``<monitor>_best``."""
    objectives = cfg.get("objectives")
    return [str(name) for name in objectives] if objectives else [f"{cfg.get('monitor')}_best"]


def objective_directions(cfg: DictConfig | dict[str, Any]) -> list[str]:
    """An Optuna direction per objective: ``<monitor>_best`` the monitor's (``monitor_mode`` included), another
    metric by its name (ConfigError when the name says nothing: hydra.sweeper.direction must then say it)."""
    best, modes = f"{cfg.get('monitor')}_best", []
    for name in objective_names(cfg):
        mode = monitor_mode(cfg) if name == best else mode_from_name(name)
        if mode is None:
            raise ConfigError(
                f"objectives: cannot tell from the name {name} whether higher or lower is better (acc* is maximised,"
                " loss* minimised); set hydra.sweeper.direction, one per objective, e.g. [maximize,minimize]"
            )
        modes.append(DIRECTIONS[mode])
    return modes


def register() -> None:
    """The configs' ``${metric_mode:<metric>,<mode or null>}`` resolver; idempotent (runs when cifar_lit is imported,
    before an entry point or a ``compose()`` resolves the callbacks)."""
    register_resolver("metric_mode", metric_mode)
