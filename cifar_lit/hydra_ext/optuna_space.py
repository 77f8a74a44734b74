"""The search space of the Optuna sweeper (``cifar_lit.hydra_ext.optuna_sweeper``): Hydra's sweep syntax
(``hydra.sweeper.params`` and the command line's sweeps) as Optuna distributions, and what is left of a grid. Apart
from the search so that a tool can rebuild a search's space without running it (``scripts/replay_pruner.py``).
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from cifar_lit.hydra_ext.optuna_resume import retried


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of a sweep override. ``choice(...)`` and ``shuffle(range(...))``: categorical over
    their values. ``range(start, stop, step)``: an ordered int (float when any of them is) distribution over
    Hydra's values, ``stop`` excluded as in any Hydra sweep (upstream hydra-optuna-sweeper includes it for its
    samplers but not for its grid: docs/sweeps.md). ``interval(a, b)``: uniform, ``tag(log, interval(a, b))``
    log-uniform (int when both ends are)."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    if override.is_range_sweep() and not value.shuffle:
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: an empty range")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if override.is_choice_sweep() or override.is_range_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    raise ValueError(f"{override.input_line}: the Optuna sweeper takes choice, range and interval sweeps")


def quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override syntax."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def override_value(value: Any) -> str:
    """``value`` (a scalar, or a flat dict such as a pruner's config) in Hydra's override syntax."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{override_value(item)}" for key, item in value.items()) + "}"
    if value is None:
        return "null"
    return quoted(value) if isinstance(value, str) else str(value)


def config_key(override: Override) -> str:
    """The config key an override sets, whatever its prefix: ``++optimizer.lr=0.5`` sets ``optimizer.lr``."""
    key = override.key_or_group
    return key if override.package is None else f"{key}@{override.package}"


def search_space(params: dict[str, str], arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions of ``hydra.sweeper.params`` and of the command line's sweeps, and the command line's other
    overrides, passed to every job as they are. The later of two overrides of a key wins, as in a plain sweep,
    whatever their prefixes (``+``, ``++``): a fixed value takes its key out of the search space (else Optuna would
    record values the jobs never ran: theirs come after the trial's), a sweep replaces an earlier fixed value."""
    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    keys: dict[str, str] = {}  # a search dimension's name (as the trial's override writes it) -> its config key
    params_lines = [f"{name}={value}" for name, value in params.items()]
    fixed: dict[str, Override] = {}
    for override in parser.parse_overrides(params_lines) + parser.parse_overrides(arguments):
        key = config_key(override)
        for name in [name for name, of in keys.items() if of == key]:
            del space[name], keys[name]
        if override.is_sweep_override():
            name = override.get_key_element()
            space[name], keys[name] = distribution(override), key
            fixed = {element: o for element, o in fixed.items() if config_key(o) != key}
        else:
            fixed.pop(override.get_key_element(), None)  # re-inserted: the command line's order stays
            fixed[override.get_key_element()] = override
    return space, [override.input_line for override in fixed.values()]


def grid_values(dist: BaseDistribution) -> list[Any]:
    """A distribution's values on the grid: a choice's, a range's (``step`` apart, both ends included)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if getattr(dist, "step", None) is None:
        raise ValueError("the grid sampler takes choice and range sweeps only, not interval")
    count = round((dist.high - dist.low) / dist.step) + 1
    return [dist.low + i * dist.step for i in range(count)]


def grid_of(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid sampler's search space: each key's values (choice and range sweeps only)."""
    return {name: grid_values(dist) for name, dist in space.items()}


def remaining_cells(study: optuna.Study, space: dict[str, BaseDistribution]) -> int:
    """The cells of the grid ``space`` that no trial of ``study`` has run or is running (another worker's:
    cifar_lit.hydra_ext.optuna_workers); a failed trial that is being retried does not count (its retry, WAITING
    until asked, will run the cell: cifar_lit.hydra_ext.optuna_resume)."""
    grid = grid_of(space)
    grid_size = math.prod(len(values) for values in grid.values())
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    done = {
        tuple(trial.params[name] for name in space)
        for trial in trials
        if (trial.state.is_finished() or trial.state == TrialState.RUNNING)
        and trial.number not in again
        and set(trial.params) == set(space)
        and all(trial.params[name] in grid[name] for name in space)
    }
    return grid_size - len(done)


def pruner_config(pruner: Any) -> dict[str, Any]:
    """``hydra.sweeper.pruner`` as a plain dict to instantiate; no pruner: Optuna's NopPruner."""
    return plain_config(pruner) if pruner else {"_target_": "optuna.pruners.NopPruner"}


def plain_config(node: Any) -> dict[str, Any]:
    """A sampler's or pruner's node as a plain dict, its interpolations (``seed: ${seed}``) resolved in the sweep's
    config: Hydra 1.4 hands the plugin its config nodes unresolved, 1.3 plain values."""
    return OmegaConf.to_container(node if OmegaConf.is_config(node) else OmegaConf.create(node), resolve=True)
