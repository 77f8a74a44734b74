"""Confusion matrix and per-class accuracy of a test run, as files: CSV for tools, PNG for people."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

CONFUSION_CSV = "confusion_matrix.csv"


CONFUSION_PNG = "confusion_matrix.png"


PER_CLASS_CSV = "per_class_accuracy.csv"


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Recall of each class: correct / images of that class (rows are true classes; 0 for an absent class)."""
    return (confusion.diag() / confusion.sum(dim=1).clamp(min=1)).tolist()


def write_confusion(confusion: torch.Tensor, classes: Sequence[str], out_dir: Path) -> list[Path]:
    """``confusion_matrix.csv`` (rows = true class, columns = predicted), ``per_class_accuracy.csv`` and
    ``confusion_matrix.png`` in ``out_dir``; returns their paths."""
    counts = confusion.long().cpu()
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix of shape {tuple(counts.shape)} for {len(classes)} classes")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / CONFUSION_CSV, out_dir / PER_CLASS_CSV, out_dir / CONFUSION_PNG]
    with paths[0].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *classes])
        writer.writerows([name, *row] for name, row in zip(classes, counts.tolist(), strict=True))
    with paths[1].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class", "correct", "images", "accuracy"])
        rows = zip(classes, counts.diag().tolist(), counts.sum(dim=1).tolist(), per_class_accuracy(counts), strict=True)
        writer.writerows([name, correct, total, f"{acc:.6f}"] for name, correct, total, acc in rows)
    confusion_figure(counts, classes, "confusion matrix, test").savefig(paths[2], dpi=100)
    return paths


def confusion_figure(matrix: torch.Tensor, classes: Sequence[str], label: str) -> Figure:
    """Counts in each cell (true class = row), coloured by the share of the true class (so classes of any size
    compare); titled ``<label>: N images, accuracy A``. Used for eval's PNG and TensorBoard's IMAGES tab."""
    counts = matrix.long().cpu()
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)
    accuracy = counts.diag().sum().item() / max(counts.sum().item(), 1)
    fig = Figure(figsize=(8, 7))
    ax = fig.subplots()
    image = ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{label}: {counts.sum().item()} images, accuracy {accuracy:.4f}", fontsize=10)
    for row, col in torch.nonzero(counts).tolist():
        colour = "white" if shares[row, col] > 0.5 else "black"
        ax.text(col, row, str(counts[row, col].item()), ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return fig
