"""A two-key sweep (``optimizer.lr=a,b,c data.batch_size=x,y``, plain or ``hparams_search=pruned_grid``) as a grid:
one row per value of the first key, one column per value of the second, each cell the job's best val accuracy and,
for a cell the pruner stopped, the epochs it ran. Every cell of the grid is shown, run or not.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def cell(job: JobSummary | None, best: float | None) -> str:
    if job is None:
        return "not run"
    if job.status not in ("ok", "pruned"):
        return job.status
    text = "-" if job.best_val_acc is None else f"{job.best_val_acc:.4f}"
    if job.best_val_acc is not None and job.best_val_acc == best:
        text = f"**{text}**"
    return f"{text} (pruned, {job.epochs} ep)" if job.pruned else text


def grid_table(jobs: Sequence[JobSummary], varying: Sequence[Sequence[str]]) -> str | None:
    """The Markdown grid of a sweep whose jobs differ in exactly two keys, one value each; None for any other."""
    by_values: dict[tuple[str, str], JobSummary] = {}
    keys: list[str] | None = None
    for job, overrides in zip(jobs, varying, strict=True):
        pairs = [(override_key(o), o.split("=", 1)[1]) for o in overrides if "=" in o]
        job_keys = [key for key, _ in pairs]
        if len(pairs) != 2 or keys is not None and sorted(job_keys) != sorted(keys):
            return None
        keys = keys or job_keys
        values = dict(pairs)
        by_values[values[keys[0]], values[keys[1]]] = job
    if keys is None:
        return None
    rows = sort_values({row for row, _ in by_values})
    columns = sort_values({column for _, column in by_values})
    if len(rows) < 2 or len(columns) < 2:
        return None
    best = max((job.best_val_acc for job in jobs if job.best_val_acc is not None), default=None)
    records = [[row, *(cell(by_values.get((row, column)), best) for column in columns)] for row in rows]
    header = [f"{keys[0]} \\ {keys[1]}", *columns]
    return "Best val acc of each cell (bold: the best):\n\n" + markdown_table(header, records)
