"""The project's user-facing errors: each message names the bad value or file and says how to fix it.

Entry points end a run that raises one of ``USER_ERRORS`` with its message and exit status 1, never a traceback
(``cifar_lit.hydra_ext.runner``); a multirun job writes it to its ``FAILURE_FILE`` instead, and the sweep goes on.
"""

RUN_FILE = "run.json"  # in a run dir: what ran and how it went (cifar_lit.callbacks.provenance)
FAILURE_FILE = "FAILED.txt"  # in a multirun job dir: the error that ended the job
PRUNED_FILE = "PRUNED.txt"  # in an Optuna search's job dir: the epoch its trial was pruned at (not a failure)


class ConfigError(ValueError):
    """A config value is invalid; the message names the key (e.g. ``optimizer.lr``)."""


class DataError(RuntimeError):
    """The data set is missing or malformed; the message names the file and how to fix it."""


class CheckpointError(RuntimeError):
    """The checkpoint is missing, unreadable, unsafe or for another model; the message says which."""


class NoResultError(RuntimeError):
    """A run ended without its result: its monitor (``<monitor>_best``, what it returns) was never logged."""


class RankError(RuntimeError):
    """Another DDP rank of the run failed (its exit status not 0) although this one, rank 0, finished."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, FloatingPointError, NoResultError, RankError)
