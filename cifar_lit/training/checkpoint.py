"""Checkpoints: loaded without trusting them (weights-only unpickling, errors that say what is wrong) and
written atomically.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cifar_lit.errors import CheckpointError
from cifar_lit.training.module import BlockClassifier
from cifar_lit.training.optim import untrusted_target, with_current_target

# keys through which Lightning builds a module by calling code a checkpoint names (LightningCLI writes them)
LIGHTNING_CODE_KEYS = ("_instantiator", "_class_path")
PARTIAL_PREFIX = ".partial-"  # must not start with "last": Lightning's ckpt_path="last" picks any last*.ckpt


def load_module(path: str | Path, map_location: str = "cpu", **hparams: Any) -> BlockClassifier:
    """A BlockClassifier rebuilt from its checkpoint's hyper-parameters, loaded with ``weights_only=True``:
    a checkpoint that would need to run code while unpickling is refused, never executed. ``hparams`` override
    saved ones that do not change the weights (e.g. ``compile=False``: a traced export cannot trace a compiled net).
    A checkpoint whose optimizer or scheduler names code outside ``torch.optim`` and ``cifar_lit`` is refused before
    rebuilding imports it."""
    path = existing_file(path)
    saved = read_checkpoint(path).get("hyper_parameters") or {}
    named = [key for key in LIGHTNING_CODE_KEYS if key in saved]
    if named:  # Lightning would refuse most with a traceback; a BlockClassifier checkpoint never holds these
        raise CheckpointError(
            f"refusing {str(path)!r}: its hyper-parameters name code to run ({named[0]}); nothing was imported"
        )
    for group in ("optimizer", "scheduler"):
        if reason := untrusted_target(group, with_current_target(saved.get(group))):
            raise CheckpointError(f"refusing {str(path)!r}: its {reason}; nothing was imported")
    try:
        return BlockClassifier.load_from_checkpoint(path, map_location=map_location, weights_only=True, **hparams)
    except pickle.UnpicklingError as err:
        raise refusal(path, err) from err
    except RuntimeError as err:
        if "size mismatch" in str(err) or "Missing key" in str(err) or "Unexpected key" in str(err):
            raise CheckpointError(f"{str(path)!r} does not fit the model it describes: {err}") from err
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {err}") from err
    except (EOFError, OSError, KeyError) as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err})") from err


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The whole checkpoint dict (weights, hyper-parameters, the datamodule's state), weights-only unpickled onto
    the CPU: what ``load_module`` does not return, e.g. the training set's normalisation statistics."""
    path = existing_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise refusal(path, err) from err
    except (EOFError, OSError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a checkpoint file")
    return path


def refusal(path: Path, err: pickle.UnpicklingError) -> CheckpointError:
    return CheckpointError(
        f"refusing {str(path)!r}: it holds objects that only a full (code-executing) unpickle could load "
        f"({str(err).splitlines()[0]})"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target's folder, fsyncs it, then ``os.replace``s it onto
    the target: a kill or power loss during a save leaves the previous checkpoint whole, never a truncated one.

    Lightning's own ``TorchCheckpointIO`` (2.6) writes through an fsspec transaction whose temporary file lives in
    ``$TMPDIR``: when that is another file system, the final move is a copy into the target path (a kill then
    leaves half a ``last.ckpt``), and nothing is fsynced. Remote paths (``s3://``...) keep Lightning's behaviour.
    The temporary file of a process killed mid-save stays behind; the first save into that folder (the resumed or
    rerun job's) removes it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.swept: set[Path] = set()  # folders already cleared of dead processes' temporary files

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.parent not in self.swept:  # this process's own are always removed: any there now is a dead one's
            for stale in target.parent.glob(f"{PARTIAL_PREFIX}*.tmp"):
                stale.unlink(missing_ok=True)
            self.swept.add(target.parent)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=PARTIAL_PREFIX, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(partial, 0o644)  # mkstemp creates 0600; a checkpoint is as readable as any other output
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        fsync_directory(target.parent)
        return None


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: the directory entry is only on disk once the folder is synced)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory descriptors
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
