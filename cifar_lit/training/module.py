"""BlockClassifier: the LightningModule that trains a BlockNetwork with cross-entropy.

Everything it needs to rebuild itself (model, optimizer and scheduler configs) arrives as plain dicts and is
saved with ``save_hyperparameters()``, so ``BlockClassifier.load_from_checkpoint(path)`` needs no Hydra config.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MinMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cifar_lit.data.augment import normalize
from cifar_lit.errors import ConfigError
from cifar_lit.network.model import BlockNetwork
from cifar_lit.training.compiled import compile_mode, uses_cuda_graphs
from cifar_lit.training.epoch_logger import EPOCHS_DONE, epochs_done
from cifar_lit.training.monitor import metric_mode
from cifar_lit.training.optim import (
    build_optimizer,
    build_scheduler,
    check_lr_scales,
    check_target,
    with_current_target,
)
from cifar_lit.training.tta import check_tta, tta_logits

EVAL_SPLITS = ("val", "test")


FINITE_CHECK_EVERY = 10


STEM_FIT_IMAGES = 5000  # training images the whitening stem's covariance is estimated from


class BlockClassifier(L.LightningModule):
    """Cross-entropy training of the block network; logs ``{train,val,test}/{loss,acc}`` and ``val/acc_best``.

    Validation may evaluate several splits each epoch (the DataModule's ``eval_splits``: ``val`` and, when
    asked, ``test``); each is logged under its own name, with its best accuracy so far as ``<split>/acc_best``.
    ``label_smoothing`` is cross-entropy's. With ``tta`` (``cifar_lit.tta``) the test also logs the accuracy of
    the test-time-augmented prediction as ``test/acc_tta``, beside the plain ``test/acc``.

    ``monitor`` (the run's checkpoint metric) gets its running best logged as ``<monitor>_best`` every epoch, a
    minimum or a maximum as ``monitor_mode`` says (``cifar_lit.training.monitor``): ``val/loss_best`` for
    ``monitor=val/loss``, what the train entry returns and a search optimises. (``<split>/acc`` has it already.)
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = True,
        compile: bool | str = False,
        label_smoothing: float = 0.0,
        tta: str = "none",
        monitor: str | None = None,
        monitor_mode: str | None = None,
    ) -> None:
        super().__init__()
        best_mode = metric_mode(monitor, monitor_mode)  # first: a monitor of unknown direction is refused
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        optimizer, scheduler = with_current_target(optimizer), with_current_target(scheduler)  # saved renamed
        lr = optimizer.get("lr")
        if not isinstance(lr, int | float) or lr <= 0:
            raise ConfigError(f"optimizer.lr must be a number > 0, got {lr!r}")
        for group, node in (("optimizer", optimizer), ("scheduler", scheduler)):
            check_target(group, node)
        check_lr_scales(optimizer)
        self.save_hyperparameters()
        self.net = BlockNetwork(**model)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        mode = compile_mode(compile)
        self.cuda_graphs = uses_cuda_graphs(mode)
        if mode:  # static shapes: one specialised graph per batch shape, none made dynamic
            self.net.compile(mode=mode, dynamic=False)
        else:  # the model summary's FLOPs come from a forward of this batch (a compiled net would compile for it)
            self.example_input_array = torch.zeros(1, 32, 32, model.get("in_channels", 3)).permute(0, 3, 1, 2)  # NHWC
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.tta = check_tta(tta)
        num_classes = model.get("num_classes", 10)
        # ModuleDict keys cannot be "train" (a Module method), hence the "_acc" suffix. validate_args=False: the
        # check counts the labels' unique values every step, which waits for the GPU (the labels are the data
        # set's own, checked when it is read)
        self.accuracy = nn.ModuleDict(
            {
                f"{s}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
                for s in ("train", *EVAL_SPLITS, "tta")
            }
        )
        self.best_accuracy = nn.ModuleDict({f"{s}_acc": MaxMetric() for s in EVAL_SPLITS})
        # the monitor's running best, unless best_accuracy has it: a MinMetric for a loss
        self.monitor = monitor
        tracked = monitor is not None and monitor not in {f"{s}/acc" for s in EVAL_SPLITS}
        self.best_monitor = (MinMetric() if best_mode == "min" else MaxMetric()) if tracked else None
        self.confusion = MulticlassConfusionMatrix(
            num_classes, validate_args=False
        )  # filled by test_step, read by cifar_lit.eval

    @staticmethod
    def epoch_metrics(eval_splits: list[str]) -> list[str]:
        """What this module logs every epoch, given the DataModule's ``eval_splits``: all a checkpoint or early
        stopping can monitor (``test/acc_tta`` only comes with the final test)."""
        return ["train/loss", "train/acc", *(f"{s}/{m}" for s in eval_splits for m in ("loss", "acc", "acc_best"))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        # a CUDA graph's outputs live in memory its next replay overwrites: TTA keeps the plain logits over its
        # further passes, and a caller may keep them longer still
        return logits.clone() if self.cuda_graphs else logits

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.cuda_graphs:  # a new step: the graphs may reuse the memory of the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()

    def on_validation_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_train_batch_start(batch, batch_idx)

    def on_test_batch_start(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.on_train_batch_start(batch, batch_idx)

    def _step(self, batch, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and accuracy of one batch, logged as epoch means under ``split``; returns (loss, logits)."""
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits.float(), y)
        accuracy = self.accuracy[f"{split}_acc"]
        accuracy(logits, y)
        kwargs = dict(on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True, add_dataloader_idx=False)
        self.log(f"{split}/loss", loss, prog_bar=split != "test", **kwargs)
        self.log(f"{split}/acc", accuracy, prog_bar=True, **kwargs)
        return loss, logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")[0]
        # reading the loss syncs a GPU with the host: check every few steps (a diverged run stays diverged)
        if batch_idx % FINITE_CHECK_EVERY == 0 and not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: "
                "the run diverged (try a smaller optimizer.lr); the checkpoints already saved are kept"
            )
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Returns the logits, for callbacks (``on_validation_batch_end``'s outputs)."""
        return self._step(batch, self.eval_splits[dataloader_idx])[1]

    def test_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Returns the plain logits (not the TTA prediction), for callbacks."""
        _, logits = self._step(batch, "test")
        if self.tta != "none":
            x, y = batch
            self.accuracy["tta_acc"](tta_logits(self, x, self.tta, plain=logits), y)
            kwargs = dict(on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
            self.log("test/acc_tta", self.accuracy["tta_acc"], **kwargs)
        self.confusion.update(logits, batch[1])
        return logits

    def setup(self, stage: str) -> None:
        """Fit a whitening stem to the training images before the first step (a resumed run then loads the
        checkpoint's filters over these)."""
        stem = self.net.stem
        if stage != "fit" or stem is None or bool(stem.fitted):
            return
        datamodule = self.trainer.datamodule
        train_images = datamodule.splits["train"][0]  # sorted by class: take every n-th, not the first n
        images = torch.from_numpy(train_images[:: max(1, len(train_images) // STEM_FIT_IMAGES)])
        stem.fit(normalize(images, datamodule.mean, datamodule.std, channels_last=False))

    @property
    def eval_splits(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        return list(getattr(datamodule, "eval_splits", ["val"]))

    def on_train_start(self) -> None:
        resumed = getattr(self, "_resumed_best_accuracy", {})
        for name, best in self.best_accuracy.items():  # forget what the sanity check saw; keep a resumed best
            best.reset()
            if name in resumed:
                best.update(resumed[name])
        if self.best_monitor is not None:
            self.best_monitor.reset()
            resumed_monitor = getattr(self, "_resumed_best_monitor", {})
            if resumed_monitor.get("monitor") == self.monitor:  # not the best of another metric (monitor changed)
                self.best_monitor.update(resumed_monitor["value"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save diverged weights (the last good checkpoint stays the newest); store the best accuracies
        (metric states are not in the state dict) so a resumed run's ``*/acc_best`` continues from them, and the
        fractional epochs trained, where a resumed run's TensorBoard steps start (``cifar_lit.training.resume``)."""
        for name, tensor in checkpoint["state_dict"].items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise FloatingPointError(
                    f"{name} is not finite at epoch {self.current_epoch}, step {self.global_step}: the run diverged "
                    "(try a smaller optimizer.lr); not saving it, the checkpoints already saved are kept"
                )
        checkpoint["best_accuracy"] = {name: float(best.max_value) for name, best in self.best_accuracy.items()}
        if self._trainer is not None:  # the trainer saving it (not a test's bare call)
            checkpoint[EPOCHS_DONE] = epochs_done(self._trainer)
        if self.best_monitor is not None:
            best = self.best_monitor
            value = best.min_value if isinstance(best, MinMetric) else best.max_value
            checkpoint["best_monitor"] = {"monitor": self.monitor, "value": float(value)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_best_accuracy = checkpoint.get("best_accuracy", {})
        self._resumed_best_monitor = checkpoint.get("best_monitor", {})

    def resumed_results(self) -> dict[str, float]:
        """The best values the checkpoint this fit resumed from holds (``<split>/acc_best``, ``<monitor>_best``):
        the results of a fit resumed at its end (its epochs all done, or a retried Optuna trial stopped where its
        pruner had stopped it), which validates nothing and so logs none. Empty when it did not resume."""
        resumed = getattr(self, "_resumed_best_accuracy", {})
        results = {f"{name.replace('_', '/', 1)}_best": v for name, v in resumed.items() if math.isfinite(v)}
        monitor = getattr(self, "_resumed_best_monitor", {})
        if self.monitor is not None and monitor.get("monitor") == self.monitor:
            results[f"{self.monitor}_best"] = monitor["value"]
        return results

    def on_validation_epoch_start(self) -> None:
        """Under DDP without SyncBatchNorm (CPU, or ``sync_batchnorm=false``) each rank's BatchNorm running
        statistics drift apart, every rank updating them with its own batches. Evaluate every rank with rank 0's,
        the ones its checkpoint stores, so the synced metrics are those of the saved model."""
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            for buffer in self.net.buffers():
                torch.distributed.broadcast(buffer, src=0)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for split in self.eval_splits:
            best = self.best_accuracy[f"{split}_acc"]
            best(self.accuracy[f"{split}_acc"].compute())
            self.log(f"{split}/acc_best", best.compute(), sync_dist=True, prog_bar=split == "val")
        if self.monitor is not None and not self.monitor.startswith("train/"):
            self.log_monitor_best()

    def on_train_epoch_end(self) -> None:
        """A ``train/*`` monitor's epoch value is reduced only now, after the epoch's validation."""
        if self.monitor is not None and self.monitor.startswith("train/"):
            self.log_monitor_best()

    def log_monitor_best(self) -> None:
        """``<monitor>_best``: the epoch's monitored value (as logged, synced across ranks) folded into the best."""
        value = self.trainer.callback_metrics.get(self.monitor)
        if self.best_monitor is None or value is None:
            return
        self.best_monitor(value)
        self.log(f"{self.monitor}_best", self.best_monitor.compute(), sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.net, self.hparams.optimizer)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler = build_scheduler(self.hparams.scheduler, optimizer, lambda: self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
