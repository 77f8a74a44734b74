"""The summary of a multirun dir (job dirs ``0_lr=0.01/``, ``1_lr=0.001/``, ... or an older sweep's ``0/``, ``1/``,
each a run dir): ``summary.md``, ``summary.csv`` (one row per job, best val accuracy first, failures included) and
``val_acc.png``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from cifar_lit.errors import FAILURE_FILE, PRUNED_FILE
from cifar_lit.hydra_ext.job_name import TRIAL_CALLBACK
from cifar_lit.reporting.events import ReportError, per_epoch_table, read_scalars
from cifar_lit.reporting.grid import grid_table, two_key_grid
from cifar_lit.reporting.job import JobSummary
from cifar_lit.reporting.plots import plot_grid, plot_jobs
from cifar_lit.reporting.run_config import read_overrides, read_tags
from cifar_lit.reporting.seeds import group_by_seed, write_seed_summary
from cifar_lit.reporting.tables import markdown_table, write_csv

SWEEPER_OVERRIDES = f"+{TRIAL_CALLBACK}."  # the Optuna sweeper's way to a job's trial: the same in every job


def is_multirun_dir(path: Path) -> bool:
    """A Hydra sweep dir: no ``.hydra/`` of its own, numbered job subdirs that have one."""
    return not (path / ".hydra").is_dir() and bool(job_dirs(path))


def job_number(job_dir: Path) -> int | None:
    """A job folder's number: its name (``3``) or the start of it (``3_lr=0.005``, cifar_lit.hydra_ext.job_name)."""
    number = job_dir.name.split("_", 1)[0]
    return int(number) if number.isdigit() else None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job dirs (``0_lr=0.01/``, or ``0/`` of an older sweep) holding a ``.hydra/`` folder, in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and job_number(p) is not None and (p / ".hydra").is_dir()]
    return sorted(jobs, key=job_number)


def summarize_job(job_dir: Path) -> JobSummary:
    """Best val accuracy, final test accuracy, epochs and wall time of a job (``error`` when unreadable)."""
    overrides = [o for o in read_overrides(job_dir) if not o.startswith(SWEEPER_OVERRIDES)]
    number = job_number(job_dir)  # the summary's job column: the number (the folder's name repeats the overrides)
    summary = JobSummary(job_dir.name if number is None else str(number), overrides, read_tags(job_dir))
    if (job_dir / PRUNED_FILE).is_file():  # written by cifar_lit.callbacks.optuna_pruning: stopped early, not failed
        summary.pruned = (job_dir / PRUNED_FILE).read_text().strip()
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
    summary.epochs = len({math.ceil(epoch) for epoch in table.epochs})  # a validation within epoch e: e - 1 < x < e
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


def pareto_front(sweep_dir: Path, overrides: dict[str, list[str]]) -> str:
    """The Pareto front of a multi-objective Optuna search (its ``optimization_results.yaml``, written by
    cifar_lit.hydra_ext.optuna_results) as a markdown table, one row a job; "" for any other sweep."""
    path = sweep_dir / "optimization_results.yaml"
    results = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(results, dict) or not results.get("solutions"):
        return ""
    solutions = results["solutions"]
    names = results.get("objectives") or [f"objective {i}" for i in range(len(solutions[0]["values"]))]
    rows = [
        [str(s["job"]), " ".join(overrides.get(str(s["job"]), [])), *s["values"]]
        for s in sorted(solutions, key=lambda s: s["values"])
    ]
    return "\n## Pareto front\n\nNo other job is better in every objective:\n\n" + markdown_table(
        ["job", "overrides", *names], rows, left=2
    )


def write_summary(sweep_dir: Path, out_dir: Path) -> list[Path]:
    """``summary.md``, ``summary.csv`` and ``val_acc.png`` (the best jobs' curves) for a multirun dir, ``grid.png``
    (a heat map) for a two-key sweep, and ``summary_by_seed.md`` and ``.csv`` when some jobs differ only in
    ``seed``; returns their paths."""
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
    grid = two_key_grid(jobs, varying)
    if grid:
        md += "\n" + grid_table(grid)
    noted = [job for job in jobs if job.error or job.pruned]
    if noted:
        md += "\n" + "".join(f"- job {job.job}: {job.error or job.pruned}\n" for job in noted)
    md += pareto_front(sweep_dir, dict(zip((job.job for job in jobs), varying, strict=True)))
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
    if grid:
        paths.append(out_dir / "grid.png")
        plot_grid(grid, paths[-1], sweep_dir.name)
    groups = group_by_seed(jobs)
    if any(len(group.jobs) > 1 for group in groups):
        paths += write_seed_summary(groups, out_dir, sweep_dir.name)
    return paths
