"""What differs between the Hydra lines the project runs on, 1.3 (stable) and 1.4, in one place.

- Resolvers: OmegaConf 2.4 (Hydra 1.4's) deprecates ``register_new_resolver`` for ``register_resolver``.
- ``hydra.main``: 1.4 deprecates ``version_base`` (1.3 warns without it) and takes an ``execution_whitelist``: the
  ``_target_``s a config may name. Without one, 1.4 warns at every ``instantiate`` and 1.5 will refuse. The list is
  the project's own allow-list idea (as for a checkpoint's optimizer, ``cifar_lit.training.optim``): the packages
  its configs name, plus what ``$CIFAR_LIT_EXECUTION_WHITELIST`` adds (comma-separated, ``mypkg.*`` for a package):
  the environment is the user's, not the config's, so a config cannot widen it.
- A search: ``hparams_search=...`` on the command line implies ``--multirun``. 1.4 refuses a config group that sets
  ``hydra.mode`` ("hydra.mode changed during config composition"), so the configs no longer do.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any

import hydra
from omegaconf import OmegaConf

WHITELIST_ENV = "CIFAR_LIT_EXECUTION_WHITELIST"
EXECUTION_WHITELIST = (
    "cifar_lit.*",
    "torch.optim.*",
    "lightning.pytorch.Trainer",
    "lightning.pytorch.callbacks.*",
    "lightning.pytorch.loggers.*",
    "lightning.pytorch.profilers.*",
    "optuna.samplers.*",
    "optuna.pruners.*",
)
# Hydra's flags that pick what the command does (one at most): with any of them, nothing is implied
MODE_FLAGS = {"-m", "--multirun", "-r", "--run", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion"}
HELP_FLAGS = {"-h", "--help", "--hydra-help"}


def register_resolver(name: str, resolver: Callable[..., Any]) -> None:
    """OmegaConf 2.4's ``register_resolver``, else ``register_new_resolver`` (2.3's ``register_resolver`` is an
    older, other function); a repeat replaces."""
    if "replace" in inspect.signature(OmegaConf.register_resolver).parameters:
        OmegaConf.register_resolver(name, resolver, replace=True, annotation_validation="off")
    else:
        OmegaConf.register_new_resolver(name, resolver, replace=True)


def execution_whitelist() -> list[str]:
    """The targets configs may name: the project's packages and those ``$CIFAR_LIT_EXECUTION_WHITELIST`` adds."""
    added = [name.strip() for name in os.environ.get(WHITELIST_ENV, "").split(",") if name.strip()]
    return [*EXECUTION_WHITELIST, *added]


def main_options() -> dict[str, Any]:
    """``hydra.main``'s keyword arguments for the installed Hydra: ``version_base`` up to 1.3, the execution
    whitelist from 1.4 on."""
    if "execution_whitelist" in inspect.signature(hydra.main).parameters:
        return {"execution_whitelist": execution_whitelist()}
    return {"version_base": "1.3"}


def whitelist_kwargs() -> dict[str, Any]:
    """``instantiate``'s own whitelist argument from 1.4 on (nothing on 1.3, which would pass it to the target): for
    the plugins, which also run in apps whose ``hydra.main`` set none."""
    from hydra.utils import instantiate

    if "_execution_whitelist_" in inspect.signature(instantiate).parameters:
        return {"_execution_whitelist_": execution_whitelist()}
    return {}


def with_implied_multirun(args: Sequence[str]) -> list[str]:
    """The command line with ``--multirun`` added when it picks an ``hparams_search`` and says nothing of the mode
    (``-m``, ``--cfg``, ``--help``, ..., or ``hydra.mode=RUN``: one job of a search rerun alone, a DDP rank's own
    command)."""
    search = any(arg.lstrip("+~").startswith("hparams_search=") for arg in args)
    flags = {arg.split("=", 1)[0] for arg in args if arg.startswith("-")}
    mode_set = any(arg.lstrip("+~").startswith("hydra.mode=") for arg in args)
    implied = search and not mode_set and not flags & (MODE_FLAGS | HELP_FLAGS)
    return ["--multirun", *args] if implied else list(args)
