"""Curves as PNG files: a run's loss and accuracy against the epoch, and a sweep's val accuracy per job."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifar_lit.reporting.events import EpochTable
from cifar_lit.reporting.grid import Grid
from cifar_lit.reporting.job import JobSummary
from cifar_lit.reporting.tables import FINAL_TEST_LABEL


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _style(ax, ylabel: str, title: str) -> None:
    """Axis labels (integer epochs), title, grid and legend of one plot."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_curves(table: EpochTable, out_dir: Path, title: str) -> list[Path]:
    """``loss.png`` and ``accuracy.png``: train, val and test (where logged) against the 1-based epoch."""
    plt = _pyplot()
    paths = []
    for quantity, ylabel, filename in (
        ("loss", "cross-entropy loss", "loss.png"),
        ("acc", "accuracy", "accuracy.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for split in ("train", "val", "test"):
            series = table.values.get(f"{split}/{quantity}")
            if series:
                epochs = sorted(series)
                ax.plot([e + 1 for e in epochs], [series[e] for e in epochs], marker=".", label=split)
        final = table.final_test.get(f"test/{quantity}")
        if final is not None and not table.values.get(f"test/{quantity}"):
            ax.axhline(final, color="tab:green", linestyle="--", label=FINAL_TEST_LABEL)
        _style(ax, ylabel, title)
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


BEST_CURVES = 5  # a sweep's val_acc.png draws its best few jobs: a dozen lines read as none


def plot_jobs(jobs: Sequence[JobSummary], labels: Sequence[Sequence[str]], path: Path, title: str) -> list[str]:
    """The ``val/acc`` curves of the ``BEST_CURVES`` first jobs (a sweep's best first) against the 1-based epoch;
    returns the jobs drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(jobs) > BEST_CURVES:
        title = f"{title}: the best {BEST_CURVES} of {len(jobs)} jobs"
    jobs, labels = jobs[:BEST_CURVES], labels[:BEST_CURVES]
    for job, overrides in zip(jobs, labels, strict=True):
        if job.val_acc:
            epochs = sorted(job.val_acc)
            label = f"{job.job}: {' '.join(overrides)}" if overrides else job.job
            ax.plot([e + 1 for e in epochs], [job.val_acc[e] for e in epochs], marker=".", label=label)
    _style(ax, "val accuracy", title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [job.job for job in jobs if job.val_acc]


def plot_grid(grid: Grid, path: Path, title: str) -> None:
    """``grid.png``: a heat map of each cell's best val accuracy (rows: the first key's values, columns: the
    second's), its value written in the cell (or why there is none), the best cell framed."""
    import numpy as np
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    values = np.array([[grid.accuracy(r, c) or np.nan for c in grid.columns] for r in grid.rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(grid.columns) + 2.5, 0.7 * len(grid.rows) + 1.8))
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label="best val accuracy")
    for i, row in enumerate(grid.rows):
        for j, column in enumerate(grid.columns):
            job = grid.cells.get((row, column))
            empty = np.isnan(values[i, j])
            text = ("not run" if job is None else job.status) if empty else f"{values[i, j]:.3f}"
            dark = not empty and image.norm(values[i, j]) < 0.6  # viridis: dark below, light above
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if (best := grid.best()) is not None:
        i, j = grid.rows.index(best[0]), grid.columns.index(best[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(grid.columns)), grid.columns)
    ax.set_yticks(range(len(grid.rows)), grid.rows)
    ax.set_xlabel(grid.keys[1])
    ax.set_ylabel(grid.keys[0])
    ax.set_title(f"{title}: best val accuracy (framed: the best)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
