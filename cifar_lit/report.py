"""python -m cifar_lit.report RUN_DIR [RUN_DIR ...] [--out DIR]: tables and curves from TensorBoard events.

For a run dir (one ``python -m cifar_lit.train`` run) it writes the seed report's reference table
(``table.md``, ``table.csv``: the epochs of min training loss, max training accuracy, min test loss, max test
accuracy, and of min val loss / max val accuracy when val was logged, with every metric at that epoch) and the
curves ``loss.png`` and ``accuracy.png``. For a multirun dir (numbered job dirs ``0/``, ``1/``, ... each a run
dir) it writes ``summary.md``, ``summary.csv`` (one row per job, best val accuracy first) and ``val_acc.png``; when
jobs differ only in ``seed`` (``-m seed=0,1,2``), also ``summary_by_seed.md`` and ``summary_by_seed.csv`` (one row
per group of such jobs: mean and standard deviation of best val accuracy and test accuracy over the seeds).

Nothing is re-trained: everything comes from the ``epoch``-stamped scalars of Lightning's TensorBoardLogger.
With ``data.test_every_epoch`` the test set is logged every epoch during validation and once more by the final
``trainer.test`` of the best checkpoint; the per-epoch values fill the table, the last one is reported apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from cifar_lit.reporting.events import ReportError, per_epoch_table, read_scalars
from cifar_lit.reporting.plots import plot_curves
from cifar_lit.reporting.run_config import run_title
from cifar_lit.reporting.sweeps import is_multirun_dir, write_summary
from cifar_lit.reporting.tables import write_table


def report_run(run_dir: Path, out_dir: Path) -> list[Path]:
    """Table and curves of one run dir into ``out_dir``; returns the files written."""
    try:
        table = per_epoch_table(read_scalars(run_dir))
    except ReportError as err:
        message = str(err)
        raise ReportError(message if message.startswith(str(run_dir)) else f"{run_dir}: {message}") from err
    title = run_title(run_dir)
    return write_table(table, out_dir, title) + plot_curves(table, out_dir, title)


def report(path: Path, out_dir: Path) -> list[Path]:
    """Report a run dir or a multirun dir into ``out_dir`` (created); returns the files written."""
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_summary(path, out_dir) if is_multirun_dir(path) else report_run(path, out_dir)


def output_dirs(paths: Sequence[Path], out: Path | None) -> list[Path]:
    """Where each report goes: the dir itself, ``--out`` for one dir, ``--out/<dir name>`` for several."""
    if out is None:
        return list(paths)
    if len(paths) == 1:
        return [out]
    names: dict[str, int] = {}
    dirs = []
    for path in paths:
        name = path.resolve().name
        names[name] = names.get(name, 0) + 1
        dirs.append(out / (name if names[name] == 1 else f"{name}-{names[name]}"))
    return dirs


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_lit.report",
        description="Reference table and curves of training runs, from their TensorBoard events.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a run dir or a multirun dir")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output dir (default: each run dir; with several, one subdir each)",
    )
    args = parser.parse_args(argv)
    try:
        for path, out_dir in zip(args.run_dirs, output_dirs(args.run_dirs, args.out), strict=True):
            for written in report(path, out_dir):
                print(written)
    except ReportError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
