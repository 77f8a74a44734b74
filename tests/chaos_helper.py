"""Test-only callbacks the sweep's process loads through Hydra (``+callbacks.chaos._target_=...``, a Lightning
callback in the job; ``+hydra.callbacks.chaos._target_=...``, a Hydra one in the process that runs the job): they
SIGKILL their own process at a point named in a fuse file, so a chaos test lands a crash at the same place every
time however fast the machine is, while the sweep's command stays the same from run to run.

The fuse (JSON) names the job (``hydra.job.num``) and the point: ``{"job": 2, "step": 50}`` after optimizer step
50; ``{"job": 3, "epoch": 1, "file": "last.ckpt"}`` in the middle of writing that checkpoint in that epoch: the
product's own CheckpointIO writes it, its ``torch.save`` writing half the bytes before the kill, as a crash
mid-write would; ``{"job": 2, "at": "test"}`` as the final test starts (the fit done and saved, run.json not yet
finished); ``{"job": 0, "at": "job end"}`` (KillAtJobEnd) once the job has returned, its run.json written, before
the sweeper hears of it (an Optuna search has not told the trial). ``{"job": 1, "step": 40, "hold": true}`` does
not kill: the job stops after that step, its process id in ``<fuse>.held``, until something kills it (the test,
once the jobs running beside it have got where it wants them). The fuse is removed before the kill: the
rerun of the same command runs through. Without a fuse the callbacks do nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from lightning.pytorch.callbacks import Callback


def armed(fuse: Path, **point: Any) -> bool:
    """Whether the fuse names this job and ``point``; if so it is used up (removed), so the kill happens once."""
    try:
        wanted = json.loads(fuse.read_text())
    except FileNotFoundError:
        return False
    here = {"job": HydraConfig.get().job.num, **point}
    if any(wanted.get(key) != value for key, value in here.items()) or wanted.keys() != here.keys():
        return False
    fuse.unlink()
    return True


class KillAtJobEnd(HydraCallback):
    """SIGKILL after the job the fuse names has returned (``{"job": 0, "at": "job end"}``), once."""

    def __init__(self, fuse: str) -> None:
        self.fuse = Path(fuse)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if armed(self.fuse, at="job end"):
            os.kill(os.getpid(), signal.SIGKILL)


class KillFromFuse(Callback):
    """SIGKILL at the point the fuse file ``fuse`` names (the module says how), once."""

    def __init__(self, fuse: str) -> None:
        self.fuse = Path(fuse)

    def armed(self, **point: Any) -> bool:
        return armed(self.fuse, **point)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.armed(step=trainer.global_step):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.armed(step=trainer.global_step, hold=True):
            self.fuse.with_name(f"{self.fuse.name}.held").write_text(str(os.getpid()))
            while True:
                time.sleep(1)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.armed(at="test"):
            os.kill(os.getpid(), signal.SIGKILL)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Wraps the strategy's CheckpointIO (the product's, e.g. AtomicCheckpointIO): the armed save runs it with a
        ``torch.save`` that dies half-way through writing."""
        checkpoint_io = trainer.strategy.checkpoint_io
        save = checkpoint_io.save_checkpoint

        def save_checkpoint(checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
            if self.armed(epoch=checkpoint.get("epoch"), file=Path(path).name):
                torch.save = half_written_then_killed(torch.save)
            save(checkpoint, path, storage_options)

        checkpoint_io.save_checkpoint = save_checkpoint


def half_written_then_killed(save: Any) -> Any:
    """``torch.save`` that writes the first half of what ``save`` would write to ``f`` (a path or an open file),
    makes it durable, and SIGKILLs the process."""

    def torch_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        if isinstance(f, str | os.PathLike):
            Path(f).write_bytes(half)
        else:
            f.write(half)
            f.flush()
            with contextlib.suppress(AttributeError, io.UnsupportedOperation):  # an in-memory buffer: no file
                os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    return torch_save
