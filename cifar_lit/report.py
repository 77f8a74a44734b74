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
import csv
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator, ScalarEvent

EVENT_GLOB = "events.out.tfevents.*"
# table columns: (tag, header), in the seed report's order, val last
COLUMNS = (
    ("train/loss", "train loss"),
    ("train/acc", "train acc"),
    ("test/loss", "test loss"),
    ("test/acc", "test acc"),
    ("val/loss", "val loss"),
    ("val/acc", "val acc"),
)
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
FAILURE_FILE = "FAILED.txt"  # in a job dir: the error that ended the job
SEED_KEY = "seed"  # jobs whose overrides differ only in this key are repeats of one configuration


class ReportError(Exception):
    """A run dir the report cannot read; the CLI prints the message and exits with status 1."""


@dataclass
class RunEvents:
    """Every scalar event of one run, per tag in the order they were written, and the first event's time."""

    scalars: dict[str, list[ScalarEvent]]
    first_wall_time: float


@dataclass
class EpochTable:
    """Per-epoch values (0-based epoch -> value) of each logged metric, and the final test apart."""

    epochs: list[int]
    values: dict[str, dict[int, float]]
    final_test: dict[str, float] = field(default_factory=dict)  # test/{loss,acc} of the final trainer.test

    def columns(self) -> list[tuple[str, str]]:
        """The (tag, header) columns that have at least one per-epoch value."""
        return [(tag, header) for tag, header in COLUMNS if self.values.get(tag)]


@dataclass
class ExtremeRow:
    """One table row: the epoch (0-based) where ``tag`` is extreme, and every metric at that epoch."""

    label: str
    epoch: int
    values: dict[str, float]


# --------------------------------------------------------------------------------------------- reading
def find_event_dirs(run_dir: Path) -> list[Path]:
    """Folders holding the run's event files: under ``run_dir/tensorboard/``, else directly in ``run_dir``.

    Raises ReportError naming the dir when there are none.
    """
    files = list((run_dir / "tensorboard").rglob(EVENT_GLOB)) or list(run_dir.glob(EVENT_GLOB))
    dirs = sorted({path.parent for path in files if path.is_file()})
    if not dirs:
        raise ReportError(
            f"{run_dir}: no TensorBoard event files ({EVENT_GLOB}) in it or in its tensorboard/ folder; "
            "is it a run dir of cifar_lit.train with the TensorBoard logger (logger=tensorboard), "
            "or a multirun dir?"
        )
    return dirs


def read_scalars(run_dir: Path) -> RunEvents:
    """All scalar events of the run (every event file under ``run_dir``), each tag sorted by wall time."""
    scalars: dict[str, list[ScalarEvent]] = {}
    first_times = []
    for event_dir in find_event_dirs(run_dir):
        accumulator = EventAccumulator(str(event_dir), size_guidance={SCALARS: 0}, purge_orphaned_data=False)
        accumulator.Reload()
        try:
            first_times.append(accumulator.FirstEventTimestamp())
        except ValueError:  # an empty event file
            continue
        for tag in accumulator.Tags()[SCALARS]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
    if not scalars:
        raise ReportError(f"{run_dir}: its TensorBoard event files hold no scalars yet")
    for events in scalars.values():
        events.sort(key=lambda event: event.wall_time)  # stable: events of equal time keep their file order
    return RunEvents(scalars, min(first_times))


def first_per_step(events: Sequence[ScalarEvent]) -> tuple[dict[int, ScalarEvent], list[ScalarEvent]]:
    """The first event of each step, and the others (e.g. a final test logged at the last epoch's step)."""
    first: dict[int, ScalarEvent] = {}
    rest = []
    for event in events:
        if event.step in first:
            rest.append(event)
        else:
            first[event.step] = event
    return first, rest


def step_epochs(scalars: dict[str, list[ScalarEvent]]) -> dict[int, int]:
    """step -> 0-based epoch, from the ``epoch`` scalar Lightning logs with every epoch-level metric."""
    if "epoch" not in scalars:
        raise ReportError("no epoch-level metrics were logged yet (did the run finish an epoch?)")
    first, _ = first_per_step(scalars["epoch"])
    return {step: int(round(event.value)) for step, event in first.items()}


def per_epoch_table(run: RunEvents) -> EpochTable:
    """Per-epoch values of ``{train,val,test}/{loss,acc}`` and the final test, from the run's events.

    Each event's step is mapped to its epoch; the first event of a step is the per-epoch one. Epochs are those
    where train or val metrics were logged. Test counts as evaluated every epoch when ``test/acc_best`` was
    logged (the module logs it only for the splits validation evaluates); then its events that are not the
    first of a training epoch's step are the final test, else every test event is.
    """
    scalars = run.scalars
    epoch_of = step_epochs(scalars)
    epochs = sorted(
        {epoch_of[e.step] for tag in ("train/loss", "val/loss") for e in scalars.get(tag, []) if e.step in epoch_of}
    )
    if not epochs:
        raise ReportError("no epoch-level train or val metrics were logged (did the run finish an epoch?)")
    per_epoch_test = "test/acc_best" in scalars
    values: dict[str, dict[int, float]] = {}
    final_test: dict[str, float] = {}
    for tag, _ in COLUMNS:
        events = scalars.get(tag, [])
        if tag.startswith("test/") and not per_epoch_test:
            first, rest = {}, list(events)
        else:
            first, rest = first_per_step(events)
        series: dict[int, float] = {}
        for step, event in sorted(first.items()):
            epoch = epoch_of.get(step)
            if epoch in epochs:
                series[epoch] = event.value  # several steps in one epoch (val_check_interval < 1): the last
            else:
                rest.append(event)
        values[tag] = series
        if tag.startswith("test/") and rest:
            final_test[tag] = max(rest, key=lambda event: event.wall_time).value
    return EpochTable(epochs, values, final_test)


# ---------------------------------------------------------------------------------------------- tables
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
    """Header and rows (raw floats, 1-based epochs, None where missing) of the table and its final test.

    When test was not evaluated every epoch, its columns are added for the final test row alone.
    """
    columns = table.columns()
    columns += [(tag, name) for tag, name in COLUMNS if tag in table.final_test and (tag, name) not in columns]
    header = ["", "epoch", *(name for _, name in columns)]
    records: list[list[Any]] = [
        [row.label, row.epoch + 1, *(row.values.get(tag) for tag, _ in columns)] for row in extreme_rows(table)
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


# ------------------------------------------------------------------------------------------ run config
def read_yaml(path: Path) -> Any:
    """A YAML file's content (None when missing or unreadable: the report does not need it)."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def run_title(run_dir: Path) -> str:
    """The run dir name and key hyper-parameters from ``.hydra/config.yaml`` (those it has)."""
    cfg = read_yaml(run_dir / ".hydra" / "config.yaml")
    if not isinstance(cfg, dict):
        return run_dir.name
    model, optimizer = cfg.get("model") or {}, cfg.get("optimizer") or {}
    data, trainer = cfg.get("data") or {}, cfg.get("trainer") or {}
    parts = []
    if isinstance(model.get("blocks"), list):
        parts.append(f"{len(model['blocks'])} blocks")
    if optimizer.get("_target_"):
        lr = optimizer.get("lr")
        parts.append(str(optimizer["_target_"]).rsplit(".", 1)[-1] + (f" lr={lr:g}" if _is_number(lr) else ""))
    if data.get("batch_size") is not None:
        parts.append(f"batch {data['batch_size']}")
    if trainer.get("max_epochs") is not None:
        parts.append(f"{trainer['max_epochs']} epochs")
    return run_dir.name + (f": {', '.join(parts)}" if parts else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run (``.hydra/overrides.yaml``), empty when unknown."""
    overrides = read_yaml(run_dir / ".hydra" / "overrides.yaml")
    return [str(item) for item in overrides] if isinstance(overrides, list) else []


def read_tags(run_dir: Path) -> list[str]:
    """The run's ``tags`` (``.hydra/config.yaml``), empty when unknown."""
    cfg = read_yaml(run_dir / ".hydra" / "config.yaml")
    tags = cfg.get("tags") if isinstance(cfg, dict) else None
    return [str(tag) for tag in tags] if isinstance(tags, list) else []


# ----------------------------------------------------------------------------------------------- plots
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


# -------------------------------------------------------------------------------------------- multirun
@dataclass
class JobSummary:
    """One multirun job: its overrides and headline numbers (None when not logged)."""

    job: str
    overrides: list[str]
    tags: list[str] = field(default_factory=list)
    best_val_acc: float | None = None
    test_acc: float | None = None
    test_acc_tta: float | None = None  # with test-time augmentation (``tta``), else None
    epochs: int | None = None
    wall_time_s: float | None = None
    val_acc: dict[int, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def status(self) -> str:
        return "failed" if self.error and self.error.startswith("failed") else "no events" if self.error else "ok"


def is_multirun_dir(path: Path) -> bool:
    """A Hydra sweep dir: no ``.hydra/`` of its own, numbered job subdirs that have one."""
    return not (path / ".hydra").is_dir() and bool(job_dirs(path))


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The numbered job dirs (``0/``, ``1/``, ...) holding a ``.hydra/`` folder, in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: int(p.name))


def summarize_job(job_dir: Path) -> JobSummary:
    """Best val accuracy, final test accuracy, epochs and wall time of a job (``error`` when unreadable)."""
    summary = JobSummary(job_dir.name, read_overrides(job_dir), read_tags(job_dir))
    failure = job_dir / FAILURE_FILE
    if failure.is_file():  # written by cifar_lit.cli when the job raised: the job failed, whatever it logged
        summary.error = "failed: " + failure.read_text().strip()
    try:
        run = read_scalars(job_dir)
        table = per_epoch_table(run)
    except ReportError as err:
        summary.error = summary.error or str(err)
        return summary
    scalars = run.scalars
    val_values = [e.value for tag in ("val/acc_best", "val/acc") for e in scalars.get(tag, [])]
    summary.best_val_acc = max(val_values) if val_values else None
    test_events, tta_events = scalars.get("test/acc", []), scalars.get("test/acc_tta", [])
    summary.test_acc = test_events[-1].value if test_events else None
    summary.test_acc_tta = tta_events[-1].value if tta_events else None
    summary.epochs = len(table.epochs)
    last = max(e.wall_time for events in scalars.values() for e in events)
    summary.wall_time_s = last - run.first_wall_time
    summary.val_acc = table.values.get("val/acc", {})
    return summary


def varying_overrides(jobs: Sequence[JobSummary]) -> tuple[list[list[str]], list[str]]:
    """Per job, the overrides not shared by every job (all of them when none vary), and the shared ones."""
    shared = set.intersection(*(set(job.overrides) for job in jobs)) if jobs else set()
    varying = [[o for o in job.overrides if o not in shared] for job in jobs]
    if not any(varying):
        return [job.overrides for job in jobs], []
    return varying, [o for o in jobs[0].overrides if o in shared]


def sort_jobs(jobs: Iterable[JobSummary]) -> list[JobSummary]:
    """Best val accuracy first (then test accuracy); jobs without it last, in job order."""

    def key(job: JobSummary) -> tuple[bool, float, float, int]:
        val = -job.best_val_acc if job.best_val_acc is not None else math.inf
        test = -job.test_acc if job.test_acc is not None else math.inf
        return job.best_val_acc is None, val, test, int(job.job)

    return sorted(jobs, key=key)


def write_summary(sweep_dir: Path, out_dir: Path) -> list[Path]:
    """``summary.md``, ``summary.csv`` and ``val_acc.png`` for a multirun dir, and ``summary_by_seed.md`` and
    ``.csv`` when some jobs differ only in ``seed``; returns their paths."""
    jobs = sort_jobs(summarize_job(job) for job in job_dirs(sweep_dir))
    varying, shared = varying_overrides(jobs)
    header = ["job", "overrides", "tags", "best val acc", "test acc", "epochs", "wall time (s)", "status"]
    records = [
        [
            job.job,
            " ".join(overrides),
            ",".join(job.tags),
            job.best_val_acc,
            job.test_acc,
            job.epochs,
            job.wall_time_s,
            job.status,
        ]
        for job, overrides in zip(jobs, varying, strict=True)
    ]
    md = f"# {sweep_dir.name}\n\n"
    if shared:
        md += "Overrides of every job: `" + " ".join(shared) + "`\n\n"
    md_records = [[*rec[:-2], None if rec[-2] is None else f"{rec[-2]:.1f}", rec[-1]] for rec in records]
    md += markdown_table(header, md_records, left=3)
    failed = [job for job in jobs if job.error]
    if failed:
        md += "\n" + "".join(f"- job {job.job}: {job.error}\n" for job in failed)
    md += "\ntest acc: the final test of each job's best checkpoint.\n"
    paths = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "val_acc.png"]
    paths[0].write_text(md)
    csv_header = [*header, "all overrides"]
    write_csv(
        paths[1],
        csv_header,
        [[*rec, " ".join(job.overrides)] for rec, job in zip(records, jobs, strict=True)],
    )
    plot_jobs(jobs, varying, paths[2], sweep_dir.name)
    groups = group_by_seed(jobs)
    if any(len(group.jobs) > 1 for group in groups):
        paths += write_seed_summary(groups, out_dir, sweep_dir.name)
    return paths


def override_key(override: str) -> str:
    """The config key an override sets: ``seed=1``, ``+seed=1`` and ``++seed=1`` all set ``seed``."""
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class SeedGroup:
    """Jobs whose overrides are the same but for ``seed``: one configuration run with several seeds."""

    overrides: list[str]  # every override but the seed
    jobs: list[JobSummary]

    @property
    def seeds(self) -> list[str]:
        """The jobs' seeds, in job order."""
        jobs = sorted(self.jobs, key=lambda job: int(job.job))
        return [o.split("=", 1)[1] for job in jobs for o in job.overrides if override_key(o) == SEED_KEY]

    def stats(self, metric: str) -> tuple[int, float | None, float | None]:
        """How many jobs have ``metric`` (a JobSummary field), their mean and sample standard deviation (n - 1;
        None for fewer than two values)."""
        values = [value for job in self.jobs if (value := getattr(job, metric)) is not None]
        if not values:
            return 0, None, None
        return len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def group_by_seed(jobs: Iterable[JobSummary]) -> list[SeedGroup]:
    """Jobs grouped by their overrides without ``seed`` (in any order), best mean val accuracy first."""
    groups: dict[tuple[str, ...], SeedGroup] = {}
    for job in jobs:
        rest = [o for o in job.overrides if override_key(o) != SEED_KEY]
        groups.setdefault(tuple(sorted(rest)), SeedGroup(rest, [])).jobs.append(job)

    def key(group: SeedGroup) -> tuple[bool, float]:
        mean = group.stats("best_val_acc")[1]
        return mean is None, -mean if mean is not None else 0.0

    return sorted(groups.values(), key=key)


def write_seed_summary(groups: Sequence[SeedGroup], out_dir: Path, title: str) -> list[Path]:
    """``summary_by_seed.md`` and ``.csv``: per configuration, the seeds, the number of runs with a result, and
    mean and std of best val accuracy and test accuracy over them (and of the test-time-augmented test accuracy,
    when logged); returns their paths."""
    with_tta = any(job.test_acc_tta is not None for group in groups for job in group.jobs)
    shared = set.intersection(*(set(group.overrides) for group in groups))
    header = [
        "overrides",
        "tags",
        "seeds",
        "runs",
        "failed",
        "best val acc mean",
        "best val acc std",
        "test acc mean",
        "test acc std",
        *(["test acc tta mean", "test acc tta std"] if with_tta else []),
    ]
    records = []
    for group in groups:
        runs = sum(job.best_val_acc is not None or job.test_acc is not None for job in group.jobs)
        _, val_mean, val_std = group.stats("best_val_acc")
        _, test_mean, test_std = group.stats("test_acc")
        tta = list(group.stats("test_acc_tta")[1:]) if with_tta else []
        tags = sorted({tag for job in group.jobs for tag in job.tags})
        records.append(
            [
                " ".join(o for o in group.overrides if o not in shared),
                ",".join(tags),
                " ".join(group.seeds),
                runs,
                len(group.jobs) - runs,
                val_mean,
                val_std,
                test_mean,
                test_std,
                *tta,
            ]
        )
    md = f"# {title}: by seed\n\n"
    if shared:
        md += "Overrides of every job: `" + " ".join(o for o in groups[0].overrides if o in shared) + "`\n\n"
    md += markdown_table(header, records, left=3)
    md += (
        "\nruns: jobs with a best val acc or a test acc (failed: without either); std: sample standard deviation "
        "(n - 1), "
        "empty for a single run.\n"
    )
    paths = [out_dir / "summary_by_seed.md", out_dir / "summary_by_seed.csv"]
    paths[0].write_text(md)
    write_csv(paths[1], header, records)
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


# ------------------------------------------------------------------------------------------------- CLI
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
