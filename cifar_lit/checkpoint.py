"""Loading checkpoints without trusting them: weights-only unpickling, and errors that say what is wrong."""

from __future__ import annotations

import pickle
from pathlib import Path

from cifar_lit.module import BlockClassifier


class CheckpointError(RuntimeError):
    """The checkpoint is missing, unreadable, unsafe or for another model; the message says which."""


def load_module(path: str | Path, map_location: str = "cpu") -> BlockClassifier:
    """A BlockClassifier rebuilt from its checkpoint's hyper-parameters, loaded with ``weights_only=True``:
    a checkpoint that would need to run code while unpickling is refused, never executed."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a checkpoint file")
    try:
        return BlockClassifier.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing {str(path)!r}: it holds objects that only a full (code-executing) unpickle could load "
            f"({str(err).splitlines()[0]})"
        ) from err
    except RuntimeError as err:
        if "size mismatch" in str(err) or "Missing key" in str(err) or "Unexpected key" in str(err):
            raise CheckpointError(f"{str(path)!r} does not fit the model it describes: {err}") from err
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    except (EOFError, OSError, KeyError) as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err})") from err
