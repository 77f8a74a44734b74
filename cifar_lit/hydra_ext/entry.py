"""The Hydra wiring every entry point shares: where the configs are, and one line naming the pip extra when a command
asks for a Hydra plugin that is not installed (Hydra itself would stop with "Could not find 'hydra/launcher/joblib'"
before any cifar_lit code runs, without saying what to install)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from cifar_lit.hydra_ext.hydra_compat import main_options, with_implied_multirun

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# A wheel carries the configs inside the package (pyproject.toml maps conf/ to cifar_lit/conf); a checkout, and an
# editable install of it, keeps them beside the package in conf/, the folder users edit.
CONFIG_DIR = PACKAGE_DIR / "conf" if (PACKAGE_DIR / "conf").is_dir() else PACKAGE_DIR.parent / "conf"

_SWEEPS = (("optuna",), "sweeps")
_SLURM = (("hydra_plugins.hydra_submitit_launcher", "submitit"), "slurm")
# (config group, option) -> (the modules the option imports, the extra of pyproject.toml that installs them)
PLUGIN_EXTRAS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("hparams_search", "optuna"): _SWEEPS,
    ("hydra/sweeper", "cifar_lit_optuna"): _SWEEPS,
    ("hydra/launcher", "joblib"): (("hydra_plugins.hydra_joblib_launcher", "joblib"), "joblib"),
    ("hydra/launcher", "slurm"): _SLURM,
    ("hydra/launcher", "submitit_slurm"): _SLURM,
    ("hydra/launcher", "submitit_local"): _SLURM,
}


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing (hydra_plugins comes only with a plugin)
        return False


def missing_extra(args: Sequence[str]) -> str | None:
    """What to install, in one line, when a command-line override picks a plugin option whose packages are missing;
    None otherwise. (An option chosen inside a config file still gets Hydra's own "Could not find" message.)"""
    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-"):
            continue
        try:
            override = parser.parse_override(arg)
        except HydraException:  # a flag's value (--info searchpath) or a malformed override: Hydra reports it
            continue
        value = override.value()
        needs = PLUGIN_EXTRAS.get((override.key_or_group, value)) if isinstance(value, str) else None
        if needs and not all(map(is_installed, needs[0])):
            extra = needs[1]
            return f"{override.key_or_group}={value} needs the '{extra}' extra: pip install 'cifar_lit[{extra}]'"
    return None


PROJECT_PLUGINS = (
    "hydra_plugins.cifar_lit_optuna_sweeper",
    "hydra_plugins.cifar_lit_packed_launcher",
    "hydra_plugins.cifar_lit_slurm_launcher",
)


def expose_project_plugins() -> None:
    """Lets Hydra's plugin scan find the project's own plugins (``PROJECT_PLUGINS``: the Optuna sweeper, the packed
    and SLURM launchers) under an editable install. The scan lists the folders of the ``hydra_plugins`` namespace
    (pkgutil over its ``__path__``); ``pip install -e`` reaches the plugins through an import hook the scan cannot
    list, so ``hparams_search=optuna`` worked only from the checkout's root, which ``python -m`` puts on sys.path. A
    wheel installs a real folder."""
    for plugin in PROJECT_PLUGINS:
        try:
            spec = importlib.util.find_spec(plugin)
        except ModuleNotFoundError:  # no hydra_plugins namespace at all
            return
        if spec is None or spec.origin is None:
            continue
        import hydra_plugins

        folder = str(Path(spec.origin).parents[1])
        if folder not in list(hydra_plugins.__path__):
            hydra_plugins.__path__.append(folder)


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[..., Any]]:
    """``hydra.main`` on cifar_lit's configs (``config_name``), preceded by the check for a missing extra."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[..., Any]:
        hydra_main = hydra.main(config_path=str(CONFIG_DIR), config_name=config_name, **main_options())(task)

        @functools.wraps(task)
        def main(cfg: DictConfig | None = None) -> Any:
            if cfg is None:
                sys.argv[1:] = with_implied_multirun(sys.argv[1:])
                if message := missing_extra(sys.argv[1:]):
                    sys.exit(f"error: {message}")
            expose_project_plugins()
            return hydra_main(cfg)

        return main

    return decorate
