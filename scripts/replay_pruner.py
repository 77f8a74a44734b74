"""python scripts/replay_pruner.py FULL_GRID_DIR [--orders N] [OVERRIDE ...]: what a pruner would have saved on a
grid that ran every cell to its end, and whether it would still have chosen the grid's best cell, without training.

Training is deterministic on a given machine (docs/sweeps.md: each cell of a pruned grid logs, epoch for epoch, the
val/acc of the same cell in the full grid), so a pruned grid is the full grid's curves cut short. This replays them:
the grid's cells in the order Optuna's grid sampler gives them for a sampler seed (the grid's ``seed``, as
``hparams_search=pruned_grid`` uses it, then seed+1, ... with ``--orders``), each reporting its recorded val/acc
epoch by epoch to the pruner that ``hparams_search=pruned_grid`` and the OVERRIDEs configure (for example
``hydra.sweeper.pruner.reduction_factor=4`` or ``hydra/sweeper/pruner=median``) and stopping where it says.
It prints, per order, the epochs trained, the cell chosen (the best of those run to the end, as the study's best
trial) and how far below the grid's best it is; then the fewest epochs any successive halving that ranks the cells
by val/acc could have spent on this grid, knowing the outcome (``hindsight_epochs``); last, against
docs/sweeps.md's targets (at most a third of the grid's epochs; within 0.5 points), how many orders met each.
A replay, not a measurement: it holds where the recorded curves repeat, and a pruned grid's wall time is not
replayed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from itertools import chain, combinations
from pathlib import Path
from typing import Any

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution

from cifar_lit.hydra_ext.entry import CONFIG_DIR, expose_project_plugins
from cifar_lit.hydra_ext.optuna_space import grid_of, pruner_config, search_space
from cifar_lit.reporting.sweeps import job_dirs, summarize_job

Cell = tuple  # the values of the grid's keys, in the grid's key order


def recorded_grid(grid_dir: Path) -> tuple[dict[str, list], dict[Cell, list[float]], int]:
    """The grid (key -> values, as the pruned grid's sampler sees the same command line), each cell's val/acc
    curve, and the sweep's seed."""
    multirun = grid_dir / "multirun.yaml"
    if not multirun.is_file():
        sys.exit(f"error: {grid_dir} has no multirun.yaml: not the folder of a finished `-m` sweep")
    config = OmegaConf.load(multirun)
    grid = grid_of(search_space({}, list(config.hydra.overrides.task))[0])
    parser = OverridesParser.create()
    curves = {}
    for job_dir in job_dirs(grid_dir):
        job = summarize_job(job_dir)
        values = {o.key_or_group: o.value() for o in parser.parse_overrides(job.overrides) if o.key_or_group in grid}
        curves[tuple(values[key] for key in grid)] = job.val_acc_curve
    return grid, curves, int(config.seed)


def configured_sweeper(overrides: list[str]) -> DictConfig:
    """``hydra.sweeper`` of ``hparams_search=pruned_grid`` with ``overrides``."""
    expose_project_plugins()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=pruned_grid", *overrides], return_hydra_config=True)
    return cfg.hydra.sweeper


def configured_pruner(overrides: list[str]) -> dict[str, Any]:
    """The pruner config of ``hparams_search=pruned_grid`` with ``overrides``, as the sweeper reads it."""
    return pruner_config(configured_sweeper(overrides).pruner)


def replay(
    grid: dict[str, list],
    curves: dict[Cell, list[float]],
    pruner: dict[str, Any],
    seed: int,
    study_name: str | None = None,
) -> list[tuple[Cell, int, bool]]:
    """Each cell in the sampler's order: its values, the epochs it ran, whether it ran to its end. ``pruner`` is
    built anew for each replay (Hyperband keeps state of the study it prunes); ``study_name`` is the search's, as
    Hyperband puts a trial in a bracket by a hash of it (None: a random name, which no other pruner reads)."""
    sampler = optuna.samplers.GridSampler(grid, seed=seed)
    study = optuna.create_study(
        study_name=study_name, direction="maximize", sampler=sampler, pruner=instantiate(pruner)
    )
    ran = []
    for _ in curves:
        trial = study.ask({key: CategoricalDistribution(values) for key, values in grid.items()})  # as the sweeper
        cell = tuple(trial.params[key] for key in grid)
        curve, epochs, pruned = curves[cell], 0, False
        while epochs < len(curve) and not pruned:
            epochs += 1
            trial.report(curve[epochs - 1], epochs)
            pruned = trial.should_prune()
        with contextlib.suppress(RuntimeError):  # the grid sampler stops the study after its last cell
            study.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(trial, max(curve))
        ran.append((cell, epochs, not pruned))
    return ran


def hindsight_epochs(curves: dict[Cell, list[float]], tolerance: float) -> tuple[int, tuple[int, ...]]:
    """The fewest epochs a successive halving with one or two rungs could have spent, knowing the grid's outcome:
    every cell runs to the first rung, and at each rung only the cells ranked (by val/acc at that epoch) down to
    the first one within ``tolerance`` of the grid's best go on. No rule that ranks cells by their val/acc at those
    epochs does better on this grid; returns the epochs and the rungs."""
    epochs = len(next(iter(curves.values())))
    best = max(max(curve) for curve in curves.values())
    good = {cell for cell, curve in curves.items() if max(curve) >= best - tolerance}
    options = [(epochs * len(curves), ())]
    for rungs in chain(combinations(range(1, epochs), 1), combinations(range(1, epochs), 2)):
        alive, spent, start = list(curves), 0, 0
        for rung in rungs:
            spent += len(alive) * (rung - start)
            ranked = sorted(alive, key=lambda cell, rung=rung: -curves[cell][rung - 1])
            alive, start = ranked[: 1 + min(ranked.index(cell) for cell in good & set(ranked))], rung
        options.append((spent + len(alive) * (epochs - start), rungs))
    return min(options)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid_dir", type=Path)
    parser.add_argument("--orders", type=int, default=1, help="sampler seeds to replay: the grid's seed and on")
    parser.add_argument("overrides", nargs="*", help="overrides of hparams_search=pruned_grid's pruner")
    args = parser.parse_intermixed_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid, curves, seed = recorded_grid(args.grid_dir)
    full_epochs = sum(len(curve) for curve in curves.values())
    grid_best = max(max(curve) for curve in curves.values())
    print(f"{len(curves)} cells, {full_epochs} epochs; grid's best val acc {grid_best:.4f}; keys {list(grid)}")
    ratios, gaps = [], []
    sweeper = configured_sweeper(args.overrides)
    pruner = pruner_config(sweeper.pruner)
    for order_seed in range(seed, seed + args.orders):
        ran = replay(grid, curves, pruner, order_seed, sweeper.study_name)
        ratios.append(sum(epochs for _, epochs, _ in ran) / full_epochs)
        chosen = max((cell for cell, _, finished in ran if finished), key=lambda cell: max(curves[cell]))
        gaps.append(100 * (grid_best - max(curves[chosen])))
        order = " ".join(f"{'/'.join(map(str, cell))}:{epochs}{'' if end else 'p'}" for cell, epochs, end in ran)
        print(f"seed {order_seed}: epochs {ratios[-1]:.3f}, chosen {chosen} {gaps[-1]:.2f} points below; ran {order}")
    both = sum(ratio <= 1 / 3 and gap <= 0.5 for ratio, gap in zip(ratios, gaps, strict=True))
    spent, rungs = hindsight_epochs(curves, tolerance=0.005)
    print(
        f"hindsight: at least {spent} epochs ({spent / full_epochs:.3f}) for a successive halving that ranks the cells "
        f"by val/acc at 1 or 2 rungs to keep one within 0.5 points of the best (rungs at epochs {rungs})"
    )
    print(
        f"{len(ratios)} orders: epochs mean {statistics.mean(ratios):.3f} (max {max(ratios):.3f}), "
        f"<= 1/3 in {sum(r <= 1 / 3 for r in ratios)}; points below the best mean {statistics.mean(gaps):.2f}, "
        f"<= 0.5 in {sum(g <= 0.5 for g in gaps)}; both in {both}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
