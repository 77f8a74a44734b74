"""python scripts/compare_sweeps.py FULL_GRID_DIR PRUNED_GRID_DIR: what pruning saved on one grid (docs/sweeps.md).

Summarises each sweep's jobs as its summary.md does (cifar_lit.reporting.sweeps) and prints a Markdown table: cells,
cells pruned, epochs trained, the sum of the jobs' wall times, the best val accuracy each found and the configuration
each would choose (the best among the cells that ran to the end, as Optuna's best trial), with that cell's best
checkpoint for `python -m cifar_lit.eval ckpt_path=...`. Last, how many cells of the pruned grid logged, epoch for
epoch, the same val accuracy as the full grid's cell over the epochs they ran (all of them when training is
deterministic: a pruned cell is then the full cell's beginning).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cifar_lit.reporting.job import JobSummary
from cifar_lit.reporting.sweeps import (
    is_multirun_dir,
    job_dirs,
    sort_jobs,
    summarize_job,
    varying_overrides,
)


def cells(sweep_dir: Path) -> dict[str, JobSummary]:
    """The sweep's jobs by their cell (the overrides that differ between its jobs), best val accuracy first."""
    if not sweep_dir.is_dir() or not is_multirun_dir(sweep_dir):
        sys.exit(f"error: {sweep_dir} is not a sweep folder (numbered job folders with .hydra/)")
    jobs = sort_jobs(summarize_job(job) for job in job_dirs(sweep_dir))
    varying, _ = varying_overrides(jobs)
    return {" ".join(overrides): job for job, overrides in zip(jobs, varying, strict=True)}


def best_checkpoint(job_dir: Path) -> Path | None:
    """The job's kept best checkpoint (``epoch_NNN.ckpt``; ``last.ckpt`` is the resume point)."""
    kept = sorted(job_dir.glob("checkpoints/epoch_*.ckpt"))
    return kept[-1] if kept else None


def column(sweep_dir: Path, by_cell: dict[str, JobSummary]) -> dict[str, str]:
    (best_cell, best), *_ = by_cell.items()
    chosen_cell, chosen = next((cell, job) for cell, job in by_cell.items() if job.status == "ok")
    jobs = by_cell.values()
    return {
        "cells": str(len(jobs)),
        "cells pruned": str(sum(job.status == "pruned" for job in jobs)),
        "cells failed": str(sum(job.status not in ("ok", "pruned") for job in jobs)),
        "epochs trained": str(sum(job.epochs or 0 for job in jobs)),
        "sum of job wall times (s)": f"{sum(job.wall_time_s or 0.0 for job in jobs):.0f}",
        "best val acc of any cell": f"{best.best_val_acc or 0.0:.4f} ({best_cell})",
        "chosen (best finished cell)": f"{chosen_cell}, job {chosen.job}",
        "its best val acc": f"{chosen.best_val_acc or 0.0:.4f}",
        "its best checkpoint": str(best_checkpoint(sweep_dir / chosen.job)),
    }


def same_beginnings(full: dict[str, JobSummary], pruned: dict[str, JobSummary]) -> int:
    """How many of the pruned grid's cells have the full grid's val/acc over the epochs they ran."""
    return sum(
        job.val_acc_curve == full[cell].val_acc_curve[: len(job.val_acc)]
        for cell, job in pruned.items()
        if cell in full
    )


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__.splitlines()[0])
    grid_dir, pruned_dir = (Path(arg) for arg in argv)
    full, pruned = cells(grid_dir), cells(pruned_dir)
    grid, pruned_column = column(grid_dir, full), column(pruned_dir, pruned)
    print(f"| | full grid (`{argv[0]}`) | pruned grid (`{argv[1]}`) |\n|:---|:---|:---|")
    for key in grid:
        print(f"| {key} | {grid[key]} | {pruned_column[key]} |")
    ratio = int(pruned_column["epochs trained"]) / int(grid["epochs trained"])
    print(f"\nepochs: pruned / full = {ratio:.3f}")
    print(
        "pruned-grid cells whose val/acc equals the full grid's, epoch for epoch: "
        f"{same_beginnings(full, pruned)} of {len(pruned)}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
