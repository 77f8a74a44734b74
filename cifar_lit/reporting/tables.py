"""The seed report's reference table (the epochs of min training loss, max training accuracy, min test loss, max test
accuracy, and of min val loss / max val accuracy, with every metric at that epoch) as Markdown and CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_lit.reporting.events import COLUMNS, EpochTable

# table rows: (label, tag, extreme)
ROWS: tuple[tuple[str, str, Callable[[Iterable[float]], float]], ...] = (
    ("min training loss", "train/loss", min),
    ("max training accuracy", "train/acc", max),
    ("min test loss", "test/loss", min),
    ("max test accuracy", "test/acc", max),
    ("min val loss", "val/loss", min),
    ("max val accuracy", "val/acc", max),
)


FINAL_TEST_LABEL = "final test (best checkpoint)"


@dataclass
class ExtremeRow:
    """One table row: the epoch (0-based; fractional for a validation within an epoch) where ``tag`` is extreme, and
    every metric at that epoch."""

    label: str
    epoch: float
    values: dict[str, float]


def extreme_rows(table: EpochTable) -> list[ExtremeRow]:
    """The reference table's rows: each quantity's extreme epoch (earliest on ties) and all its metrics."""
    rows = []
    for label, tag, extreme in ROWS:
        series = table.values.get(tag)
        if not series:
            continue
        best = extreme(series.values())
        epoch = min(epoch for epoch, value in series.items() if value == best)
        at_epoch = {col: table.values[col][epoch] for col, _ in table.columns() if epoch in table.values[col]}
        rows.append(ExtremeRow(label, epoch, at_epoch))
    return rows


def table_records(table: EpochTable) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (raw floats, 1-based epochs as text: ``3``, ``2.5`` for a validation half-way through the
    third, None where missing) of the table and its final test.

    When test was not evaluated every epoch, its columns are added for the final test row alone.
    """
    columns = table.columns()
    columns += [(tag, name) for tag, name in COLUMNS if tag in table.final_test and (tag, name) not in columns]
    header = ["", "epoch", *(name for _, name in columns)]
    records: list[list[Any]] = [
        [row.label, f"{row.epoch + 1:g}", *(row.values.get(tag) for tag, _ in columns)] for row in extreme_rows(table)
    ]
    if table.final_test:
        records.append([FINAL_TEST_LABEL, None, *(table.final_test.get(tag) for tag, _ in columns)])
    return header, records


def format_cell(value: Any, digits: int = 4) -> str:
    """A Markdown cell: floats with ``digits`` decimals, None as empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], records: Iterable[Sequence[Any]], left: int = 1) -> str:
    """A GitHub-flavoured Markdown table: the first ``left`` columns left-aligned, the rest right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(format_cell(cell) for cell in record) + " |" for record in records]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: Sequence[str], records: Iterable[Sequence[Any]]) -> None:
    """CSV with floats at full precision (``repr``) and None as empty cells."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(
            ["" if cell is None else repr(cell) if isinstance(cell, float) else cell for cell in rec] for rec in records
        )


def write_table(table: EpochTable, out_dir: Path, title: str) -> list[Path]:
    """``table.md`` and ``table.csv`` in ``out_dir``; returns their paths.

    The final test is the table's last row when test has per-epoch columns; else ``table.md`` gives it on a
    line below the table (``table.csv`` always as a row, with the test columns filled in that row only).
    """
    header, records = table_records(table)
    md = f"# {title}\n\n"
    if table.final_test and not table.values.get("test/acc"):
        width = 2 + len(table.columns())
        md += markdown_table(header[:width], [record[:width] for record in records[:-1]])
        final = ", ".join(
            f"{name} {format_cell(table.final_test[tag])}" for tag, name in COLUMNS if tag in table.final_test
        )
        md += f"\n**{FINAL_TEST_LABEL}**: {final} (the test set was evaluated once, after training)\n"
    else:
        md += markdown_table(header, records)
    paths = [out_dir / "table.md", out_dir / "table.csv"]
    paths[0].write_text(md)
    write_csv(paths[1], header, records)
    return paths
