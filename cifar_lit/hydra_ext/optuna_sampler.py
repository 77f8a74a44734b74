"""Whether the Optuna search's sampler (``hydra.sweeper.sampler``) can sample, checked before its first trial.

Some of Optuna's samplers import their package only when they first sample from the trials so far: CmaEsSampler
imports ``cmaes`` at the second trial (the first is drawn at random), so without it a search ran and trained one
trial and then ended in a traceback. ``check_sampler`` imports what the sampler will need up front; a missing
package stops the search in one line that says what installs it.
"""

from __future__ import annotations

import importlib
from typing import Any

import optuna

# sampler class -> the modules Optuna imports for it only once it samples (its lazy imports; optuna/samplers/)
SAMPLER_NEEDS: dict[type, tuple[str, ...]] = {
    optuna.samplers.CmaEsSampler: ("cmaes",),
    optuna.samplers.QMCSampler: ("scipy",),
    optuna.samplers.GPSampler: ("scipy", "torch"),
}
# module -> what installs it, where that is one of cifar_lit's extras (pyproject.toml); otherwise pip install <module>
INSTALLED_BY = {"cmaes": "pip install 'cifar_lit[sweeps]'"}


def importable(module: str) -> bool:
    """Whether ``module`` imports (not merely whether a file of that name exists: a broken install fails too)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def check_sampler(config: dict[str, Any]) -> None:
    """Raises ValueError, in one line, when the sampler ``config`` describes (a ``_target_`` dict; empty: Optuna's
    default) cannot be imported or a package it will need when it samples is missing."""
    target = config.get("_target_")
    if not target:
        return
    module, _, name = target.rpartition(".")
    try:
        sampler = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:  # ValueError: no module part ("Sampler")
        raise ValueError(f"hydra.sweeper.sampler {target} cannot be imported: {err}") from None
    if not isinstance(sampler, type):  # a factory function: what it builds is known only once it is called
        return
    for cls, modules in SAMPLER_NEEDS.items():
        if issubclass(sampler, cls):
            for module in modules:
                if not importable(module):
                    install = INSTALLED_BY.get(module, f"pip install {module}")
                    raise ValueError(f"hydra.sweeper.sampler {target} needs the {module} package: {install}")
