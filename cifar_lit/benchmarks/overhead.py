"""``python -m cifar_lit.bench --overhead false,reduce-overhead``: where the end-to-end step loses time.

The same network and batch timed twice per compile setting: alone (forward, loss, backward, optimizer step on one
synthetic batch: ``run_model``) and through the project's training path (Lightning's loop, resident data with its
augmentation, metrics and logging: ``run_project``). Their ratio is the share of the model's speed that the rest of
the step keeps; on a launch-bound GPU it is the loop's cost, and what compiling the network changes shows beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any


def compare_overhead(modes: list[str], rounds: int, measure: Callable[[str, str], dict[str, Any]]) -> None:
    """For each compile setting (``compile=<mode>``), ``rounds`` runs of each path, alternated; ``measure(path,
    mode)`` times ``path`` ("model" or "project") in its own process (a compiled graph starts cold in each). A line
    per setting as soon as it is measured, so a time limit that cuts the run short keeps the settings done."""
    print(f"{'compile':28s} {'model alone':>12s} {'end to end':>12s}  ratio  (images/s, medians)", flush=True)
    for mode in modes:
        rates: dict[str, list[float]] = {"model": [], "project": []}
        for _ in range(rounds):
            for path in rates:
                rates[path].append(measure(path, mode)["images_per_s"])
        model, project = (statistics.median(rates[path]) for path in ("model", "project"))
        print(f"{mode:28s} {model:12.1f} {project:12.1f}  {project / model:5.2f}", flush=True)
