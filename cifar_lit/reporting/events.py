"""A run's scalars from its TensorBoard event files, and the per-epoch table built from them.

Everything comes from the per-epoch scalars of the run's TensorBoard logger: logged at the epoch
(``cifar_lit.training.epoch_logger``), or, in runs logged before it, at the optimizer step with an ``epoch`` scalar
beside them. A run that validated more than once an epoch logged at hundredths of an epoch, the epochs trained (its
``STEPS_PER_EPOCH_TAG`` says how many steps an epoch): its table holds each validation at its fractional epoch, on
the same 0-based scale as the others (an epoch ends at its number: half-way through the first is -0.5, shown as
0.5). With ``data.test_every_epoch``
the test set is logged every epoch during validation and once more by the final ``trainer.test`` of the best
checkpoint; the per-epoch values fill the table, the last one is reported apart.

A run resumed from a checkpoint (``ckpt_path``) logs the epochs after it again, into the same folder, after a
restart marker (``purge_step``, ``cifar_lit.training.resume``); the events are read as TensorBoard shows them, with
what the abandoned attempt logged from that step on purged, so the report shows the epochs the resumed run re-ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator, ScalarEvent

EVENT_GLOB = "events.out.tfevents.*"
STEPS_PER_EPOCH_TAG = "x_axis/steps_per_epoch"  # written by a logger whose steps are fractions of an epoch


# table columns: (tag, header), in the seed report's order, val last
COLUMNS = (
    ("train/loss", "train loss"),
    ("train/acc", "train acc"),
    ("test/loss", "test loss"),
    ("test/acc", "test acc"),
    ("val/loss", "val loss"),
    ("val/acc", "val acc"),
)


class ReportError(Exception):
    """A run dir the report cannot read; the CLI prints the message and exits with status 1."""


@dataclass
class RunEvents:
    """Every scalar event of one run, per tag in the order they were written, and the first event's time."""

    scalars: dict[str, list[ScalarEvent]]
    first_wall_time: float


@dataclass
class EpochTable:
    """Per-epoch values (0-based epoch -> value) of each logged metric, and the final test apart. The epoch of a
    validation logged within an epoch is fractional (``STEPS_PER_EPOCH_TAG``)."""

    epochs: list[float]
    values: dict[str, dict[float, float]]
    final_test: dict[str, float] = field(default_factory=dict)  # test/{loss,acc} of the final trainer.test

    def columns(self) -> list[tuple[str, str]]:
        """The (tag, header) columns that have at least one per-epoch value."""
        return [(tag, header) for tag, header in COLUMNS if self.values.get(tag)]


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
    """All scalar events of the run (every event file under ``run_dir``), each tag sorted by wall time; without
    those a resumed run's restart marker hides (TensorBoard's ``purge_orphaned_data``)."""
    scalars: dict[str, list[ScalarEvent]] = {}
    first_times = []
    for event_dir in find_event_dirs(run_dir):
        accumulator = EventAccumulator(str(event_dir), size_guidance={SCALARS: 0})
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


def step_epochs(scalars: dict[str, list[ScalarEvent]]) -> dict[int, float]:
    """step -> 0-based epoch: the step itself (logged at the epoch), the epochs trained less one where steps are
    fractions of an epoch (``STEPS_PER_EPOCH_TAG``: step 150 of 100 an epoch is 0.5, half-way through the second),
    or, where an ``epoch`` scalar was logged with every epoch-level metric (Lightning's own TensorBoardLogger,
    older runs), that scalar's value."""
    if STEPS_PER_EPOCH_TAG in scalars:
        per_epoch = scalars[STEPS_PER_EPOCH_TAG][0].value
        return {e.step: e.step / per_epoch - 1 for events in scalars.values() for e in events}
    if "epoch" not in scalars:
        return {event.step: event.step for events in scalars.values() for event in events}
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
    values: dict[str, dict[float, float]] = {}
    final_test: dict[str, float] = {}
    for tag, _ in COLUMNS:
        events = scalars.get(tag, [])
        if tag.startswith("test/") and not per_epoch_test:
            first, rest = {}, list(events)
        else:
            first, rest = first_per_step(events)
        series: dict[float, float] = {}
        for step, event in sorted(first.items()):
            epoch = epoch_of.get(step)
            if epoch in epochs:
                series[epoch] = event.value  # several steps in one epoch (an ``epoch`` scalar's run): the last
            else:
                rest.append(event)
        values[tag] = series
        if tag.startswith("test/") and rest:
            final_test[tag] = max(rest, key=lambda event: event.wall_time).value
    return EpochTable(epochs, values, final_test)
