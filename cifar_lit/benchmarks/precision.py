"""``python -m cifar_lit.bench --precision``: is ``trainer.precision=auto``'s choice the fastest on this machine?

The choice is a rule about hardware features (``cifar_lit.training.precision``); this checks it against the clock on
the machine of the day: the project training path timed under ``auto`` (the run resolves it as training does, and
reports what it chose) and under each other precision worth trying on this device, alternated over the rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from cifar_lit.training.precision import AUTO, choose_precision, device_kind, gpu_has_bf16


def candidates(accelerator: str) -> list[str]:
    """The precisions worth timing on the device ``accelerator`` gives: on a GPU bf16-mixed (where native),
    16-mixed and 32-true; on a CPU 32-true and bf16-mixed; elsewhere 32-true only."""
    kind = device_kind(accelerator)
    if kind == "gpu":
        return [*(["bf16-mixed"] if gpu_has_bf16() else []), "16-mixed", "32-true"]
    if kind == "cpu":
        return ["32-true", "bf16-mixed"]
    return ["32-true"]


def compare_precisions(accelerator: str, rounds: int, measure: Callable[[str], dict[str, Any]]) -> dict[str, float]:
    """Times each candidate ``rounds`` times, alternated; ``measure(value)`` runs the project path with
    ``trainer.precision=value`` and returns its record (``images_per_s``, ``peak_memory_mb`` and the ``precision``
    that ran). Auto's choice is timed as ``auto`` itself. Prints each run, the medians and the verdict; returns
    the median images/s of each precision."""
    chosen, reason = choose_precision(accelerator)
    print(f"precision=auto here: {chosen} ({reason})", flush=True)
    names = candidates(accelerator)
    if chosen not in names:
        names.insert(0, chosen)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names:
            requested = AUTO if name == chosen else name
            record = measure(requested)
            if record["precision"] != name:
                raise RuntimeError(f"trainer.precision={requested} ran as {record['precision']}, not {name}")
            runs[name].append(record["images_per_s"])
            label = f"{name} (auto)" if name == chosen else name
            print(
                f"round {round_index + 1} {label:17s}: {record['images_per_s']:8.1f} images/s, "
                f"peak memory {record['peak_memory_mb']:7.0f} MiB",
                flush=True,
            )
    speed = {name: statistics.median(rates) for name, rates in runs.items()}
    for name, rate in speed.items():
        note = "  (auto's choice)" if name == chosen else ""
        print(f"{name:10s} median {rate:8.1f} images/s{note}")
    fastest = max(speed, key=speed.__getitem__)
    print(f"auto: {chosen}, {speed[chosen] / speed[fastest]:.2f} x the fastest ({fastest})")
    return speed
