"""python scripts/compare_sweeps.py FULL_GRID_DIR PRUNED_GRID_DIR: what pruning saved on one grid (docs/sweeps.md).

Reads the two sweeps' summary.csv (written when each sweep ended) and prints a Markdown table: cells, cells pruned,
epochs trained, the sum of the jobs' wall times, the best val accuracy each found and the configuration each would
choose (the best among the cells that ran to the end, as Optuna's best trial), with that cell's best checkpoint for
`python -m cifar_lit.eval ckpt_path=...`. Last, how many cells of the pruned grid logged, epoch for epoch, the same
val accuracy as the full grid's cell over the epochs they ran (all of them when training is deterministic: a pruned
cell is then the full cell's beginning).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from cifar_lit.reporting.events import per_epoch_table, read_scalars


def read_summary(sweep_dir: Path) -> list[dict[str, str]]:
    path = sweep_dir / "summary.csv"
    if not path.is_file():
        sys.exit(f"error: {path} not found: give a sweep folder whose sweep has ended (python -m cifar_lit.report DIR)")
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def number(row: dict[str, str], column: str) -> float:
    return float(row[column]) if row[column] else 0.0


def best_checkpoint(job_dir: Path) -> Path | None:
    """The job's kept best checkpoint (``epoch_NNN.ckpt``; ``last.ckpt`` is the resume point)."""
    kept = sorted(job_dir.glob("checkpoints/epoch_*.ckpt"))
    return kept[-1] if kept else None


def column(sweep_dir: Path) -> dict[str, str]:
    rows = read_summary(sweep_dir)
    finished = [row for row in rows if row["status"] == "ok"]
    chosen = max(finished, key=lambda row: number(row, "best val acc"))
    best = max(rows, key=lambda row: number(row, "best val acc"))
    return {
        "cells": str(len(rows)),
        "cells pruned": str(sum(row["status"] == "pruned" for row in rows)),
        "cells failed": str(sum(row["status"] not in ("ok", "pruned") for row in rows)),
        "epochs trained": str(int(sum(number(row, "epochs") for row in rows))),
        "sum of job wall times (s)": f"{sum(number(row, 'wall time (s)') for row in rows):.0f}",
        "best val acc of any cell": f"{number(best, 'best val acc'):.4f} ({best['overrides']})",
        "chosen (best finished cell)": f"{chosen['overrides']}, job {chosen['job']}",
        "its best val acc": f"{number(chosen, 'best val acc'):.4f}",
        "its best checkpoint": str(best_checkpoint(sweep_dir / chosen["job"])),
    }


def val_acc_by_cell(sweep_dir: Path) -> dict[str, list[float]]:
    """Each cell's (its overrides') per-epoch val/acc."""
    curves = {}
    for row in read_summary(sweep_dir):
        values = per_epoch_table(read_scalars(sweep_dir / row["job"])).values.get("val/acc", {})
        curves[row["overrides"]] = [values[epoch] for epoch in sorted(values)]
    return curves


def same_beginnings(grid_dir: Path, pruned_dir: Path) -> tuple[int, int]:
    """How many of the pruned grid's cells have the full grid's val/acc over the epochs they ran, of how many."""
    full, pruned = val_acc_by_cell(grid_dir), val_acc_by_cell(pruned_dir)
    same = sum(curve == full.get(cell, [])[: len(curve)] for cell, curve in pruned.items())
    return same, len(pruned)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    grid, pruned = (column(Path(arg)) for arg in argv)
    print(f"| | full grid (`{argv[0]}`) | pruned grid (`{argv[1]}`) |\n|:---|:---|:---|")
    for key in grid:
        print(f"| {key} | {grid[key]} | {pruned[key]} |")
    ratio = int(pruned["epochs trained"]) / int(grid["epochs trained"])
    print(f"\nepochs: pruned / full = {ratio:.3f}")
    same, cells = same_beginnings(Path(argv[0]), Path(argv[1]))
    print(f"pruned-grid cells whose val/acc equals the full grid's, epoch for epoch: {same} of {cells}")


if __name__ == "__main__":
    main(sys.argv[1:])
