"""Repeats of one configuration with several seeds (``-m seed=0,1,2``): ``summary_by_seed.md`` and ``.csv``, one row
per group of jobs that differ only in ``seed``, with mean and standard deviation over the seeds.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cifar_lit.reporting.job import JobSummary
from cifar_lit.reporting.tables import markdown_table, write_csv

SEED_KEY = "seed"  # jobs whose overrides differ only in this key are repeats of one configuration


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
