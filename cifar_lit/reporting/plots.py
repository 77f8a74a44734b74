"""Curves as PNG files: a run's loss and accuracy against the epoch, and a sweep's val accuracy per job."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cifar_lit.reporting.events import EpochTable
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


def plot_jobs(jobs: Sequence[JobSummary], labels: Sequence[Sequence[str]], path: Path, title: str) -> None:
    """The jobs' ``val/acc`` curves against the 1-based epoch, in one figure."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for job, overrides in zip(jobs, labels, strict=True):
        if job.val_acc:
            epochs = sorted(job.val_acc)
            label = f"{job.job}: {' '.join(overrides)}" if overrides else job.job
            ax.plot([e + 1 for e in epochs], [job.val_acc[e] for e in epochs], marker=".", label=label)
    _style(ax, "val accuracy", title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
