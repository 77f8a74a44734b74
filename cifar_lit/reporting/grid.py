"""A two-key sweep (``optimizer.lr=a,b,c data.batch_size=x,y``, plain or ``hparams_search=pruned_grid``) as a grid:
one row per value of the first key, one column per value of the second, each cell the job's best val accuracy and,
for a cell the pruner stopped, the epochs it ran. Every cell of the grid is shown, run or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cifar_lit.reporting.job import JobSummary
from cifar_lit.reporting.seeds import override_key
from cifar_lit.reporting.tables import markdown_table


def sort_values(values: set[str]) -> list[str]:
    """Numbers in numeric order, then anything else in text order."""

    def key(value: str) -> tuple[bool, float, str]:
        try:
            return False, float(value), value
        except ValueError:
            return True, 0.0, value

    return sorted(values, key=key)


@dataclass
class Grid:
    """The jobs of a two-key sweep by (value of the first key, value of the second)."""

    keys: tuple[str, str]
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], JobSummary]

    def accuracy(self, row: str, column: str) -> float | None:
        """The cell's best val accuracy; None for a cell not run, failed, or without a validation."""
        job = self.cells.get((row, column))
        return job.best_val_acc if job is not None and job.status in ("ok", "pruned") else None

    def best(self) -> tuple[str, str] | None:
        """The (row, column) of the highest best val accuracy (the first in row order on a tie)."""
        scored = [(acc, -i, -j) for i, r in enumerate(self.rows) for j, c in enumerate(self.columns)
                  if (acc := self.accuracy(r, c)) is not None]  # fmt: skip
        if not scored:
            return None
        _, i, j = max(scored)
        return self.rows[-i], self.columns[-j]


def two_key_grid(jobs: Sequence[JobSummary], varying: Sequence[Sequence[str]]) -> Grid | None:
    """The grid of a sweep whose jobs differ in exactly two keys, one value each, at least two of each; None for any
    other sweep."""
    cells: dict[tuple[str, str], JobSummary] = {}
    keys: list[str] | None = None
    for job, overrides in zip(jobs, varying, strict=True):
        pairs = [(override_key(o), o.split("=", 1)[1]) for o in overrides if "=" in o]
        job_keys = [key for key, _ in pairs]
        if len(pairs) != 2 or keys is not None and sorted(job_keys) != sorted(keys):
            return None
        keys = keys or job_keys
        values = dict(pairs)
        cells[values[keys[0]], values[keys[1]]] = job
    if keys is None:
        return None
    rows = sort_values({row for row, _ in cells})
    columns = sort_values({column for _, column in cells})
    if len(rows) < 2 or len(columns) < 2:
        return None
    return Grid((keys[0], keys[1]), rows, columns, cells)


def cell(job: JobSummary | None, best: bool) -> str:
    if job is None:
        return "not run"
    if job.status not in ("ok", "pruned"):
        return job.status
    text = "-" if job.best_val_acc is None else f"{job.best_val_acc:.4f}"
    if best:
        text = f"**{text}**"
    return f"{text} (pruned, {job.epochs} ep)" if job.pruned else text


def grid_table(grid: Grid) -> str:
    """The grid as Markdown, the best cell bold."""
    best = grid.best()
    records = [[r, *(cell(grid.cells.get((r, c)), (r, c) == best) for c in grid.columns)] for r in grid.rows]
    header = [f"{grid.keys[0]} \\ {grid.keys[1]}", *grid.columns]
    return "Best val acc of each cell (bold: the best; the heat map: grid.png):\n\n" + markdown_table(header, records)
