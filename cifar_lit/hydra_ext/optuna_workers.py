"""Several search processes (workers: SLURM jobs, shells on other machines) running one study in an RDB storage,
PostgreSQL above all (cifar_lit.hydra_ext.optuna_sweeper; docs/sweeping.md, "Many workers, one study").

Each worker runs in its own ``hydra.sweep.dir`` (its job folders, summary and results) and shares the study:

* ``hydra.sweeper.n_trials_of=study``: ``n_trials`` is the study's total, not each worker's. Before each ask a worker
  counts the study's trials that take a place (COMPLETE, PRUNED, RUNNING, and FAIL but for a failed trial being
  retried: its retry takes its place) and asks only what is left; a WAITING trial (a retry) is asked before any
  new one. This is Optuna's ``MaxTrialsCallback`` with running trials counted, so workers do not overshoot.
  ``folder`` (the default) counts the sweep folder's trials (cifar_lit.hydra_ext.optuna_resume). The grid sampler
  takes the cells no trial of the study has run or is running, so each cell runs once across workers.
* On PostgreSQL the count and the ask are one step: a worker holds an advisory lock (``pg_advisory_lock``, released
  when its connection closes, so also when the worker dies) while it creates the tables and the study and while it
  counts and asks, so two workers never both take the last place or cell. Other storages have no such lock: two
  workers asking at the same moment may both take the last one.
* Heartbeat (RDB storages): the storage is opened with ``hydra.sweeper.heartbeat_interval`` and ``grace_period``; a
  worker's thread records a heartbeat of each trial whose job it runs, for as long as the job runs, and before each
  ask ``optuna.storages.fail_stale_trials`` fails the trials no worker has beaten for the grace period (their worker
  died) and queues a retry of each (``RetryHeartbeatStaleTrialCallback``, its reported epochs kept), which the next
  ask of any worker takes. The retry runs in the folder of the worker that takes it, as a new job there started
  afresh: the dead worker's folder may be on another machine. Only a rerun of the dead worker in its own folder
  retries a trial of that folder from its job's last.ckpt (optuna_resume, which needs no heartbeat).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from cifar_lit.hydra_ext.optuna_resume import RetryCallback, folder_key, retried
from cifar_lit.hydra_ext.optuna_space import remaining_cells

N_TRIALS_OF = ("folder", "study")


def open_storage(storage: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> Any:
    """An RDB URL (``sqlite:///...``, ``postgresql+psycopg://...``): an RDBStorage, with a heartbeat when
    ``heartbeat_interval`` is set (optuna_workers); a file path: a JournalStorage in that file (no database server
    or SQLAlchemy needed; safe for jobs in several processes writing at once)."""
    if storage.startswith("sqlite:///"):  # SQLite creates the file, not the folder it goes in
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if "://" in storage:
        return open_rdb(storage, heartbeat_interval, grace_period)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(storage))


def previous_trials(study_name: str, storage: Any) -> int:
    """How many trials the study already has in the storage (0: a new study)."""
    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False))
    except KeyError:
        return 0


def open_rdb(url: str, heartbeat_interval: int | None, grace_period: int | None) -> RDBStorage:
    """The RDB storage at ``url``, with a heartbeat when ``heartbeat_interval`` is set (seconds; a trial goes stale
    after ``grace_period``, Optuna's 2 x interval when null) whose stale trials are retried. A driver missing for the
    URL (``postgresql+psycopg``: psycopg) is a ValueError that names the extra to install."""
    kwargs: dict[str, Any] = {}
    with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9: noise in every search's log
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        if heartbeat_interval is not None:
            # Optuna >= 4.9's name for the callback; failed_trial_callback (deprecated there) before
            name = "heartbeat_stale_trial_callback"
            if name not in inspect.signature(RDBStorage).parameters:
                name = "failed_trial_callback"
            kwargs = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                name: RetryCallback(inherit_intermediate_values=True),
            }
        try:
            return RDBStorage(url, **kwargs)
        except ModuleNotFoundError as err:
            raise missing_driver(url, err) from err


def missing_driver(url: str, err: ModuleNotFoundError) -> ValueError:
    """The one-line error for an RDB URL whose database driver is not installed."""
    return ValueError(f"storage {url.split('://')[0]}:// needs {err.name}: pip install 'cifar_lit[postgres]'")


@contextlib.contextmanager
def study_lock(storage: Any, study_name: str) -> Iterator[None]:
    """Held by one worker of the study at a time: on PostgreSQL (``storage``: its URL, or a study's storage) an
    advisory lock keyed by the study name, on a connection of its own; on other storages nothing."""
    url = storage if isinstance(storage, str) else getattr(getattr(storage, "_backend", storage), "url", "")
    if not url.startswith(("postgresql", "postgres://")):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = zlib.crc32(f"cifar_lit optuna study {study_name}".encode())
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    except ModuleNotFoundError as err:
        raise missing_driver(url, err) from err
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
    finally:
        engine.dispose()


def worker_seed(seed: int, sweep_dir: str | Path) -> int:
    """A worker's sampler seed: workers started together on a new study would otherwise draw the same parameters
    (TPE's and the random sampler's draws come from the seed). Not for the grid, whose seed is the order of its
    cells, which every worker must share."""
    return seed + zlib.crc32(folder_key(sweep_dir).encode()) % 100_000


def places_taken(trials: Sequence[FrozenTrial]) -> int:
    """The trials that count towards the study's total: all but WAITING ones (asked before any new trial) and failed
    ones being retried (their retries count)."""
    again = retried(trials)
    return sum(t.state != TrialState.WAITING and t.number not in again for t in trials)


def trials_left(
    study: optuna.Study,
    n_trials: int | None,
    n_trials_of: str,
    folder_left: int | None,
    grid: dict[str, BaseDistribution] | None,
) -> int:
    """How many trials a search may ask now: ``n_trials`` (None: no limit) less the study's places taken
    (``n_trials_of=study``), or ``folder_left`` (``folder``: what the folder's finished trials leave, less what this
    search launched); at most the cells of the ``grid`` that no trial has run or is running."""
    if n_trials is None:
        left: float = math.inf
    elif n_trials_of == "folder":
        left = folder_left
    else:
        left = n_trials - places_taken(study.get_trials(deepcopy=False))
    if grid is not None:
        left = min(left, remaining_cells(study, grid))
    return max(0, int(left))


class Heartbeats:
    """A thread that records a heartbeat of each given trial every ``heartbeat_interval`` s while their jobs run
    (one for a batch of trials: ``n_jobs`` of them may run at once); nothing when the storage has no heartbeat."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage  # a study's: RDBStorage, or Optuna's cache in front of it, which passes beats on
        self.interval = getattr(storage, "get_heartbeat_interval", lambda: None)()

    @contextlib.contextmanager
    def beating(self, trials: Sequence[optuna.Trial]) -> Iterator[None]:
        if self.interval is None:
            yield
            return
        ids = [trial._trial_id for trial in trials]
        stop = threading.Event()

        def beat() -> None:
            while True:
                for trial_id in ids:
                    self.storage.record_heartbeat(trial_id)
                if stop.wait(self.interval):
                    return

        for trial_id in ids:  # the first beat before the jobs start: a trial with none never goes stale
            self.storage.record_heartbeat(trial_id)
        thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's ``fail_stale_trials`` (a no-op without a heartbeat), without its "experimental" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
