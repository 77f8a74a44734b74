"""BlockClassifier: the LightningModule that trains a BlockNetwork with cross-entropy.

Everything it needs to rebuild itself (model, optimizer and scheduler configs) arrives as plain dicts and is
saved with ``save_hyperparameters()``, so ``BlockClassifier.load_from_checkpoint(path)`` needs no Hydra config.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cifar_lit.errors import ConfigError
from cifar_lit.network import BlockNetwork

EVAL_SPLITS = ("val", "test")
FINITE_CHECK_EVERY = 10


class BlockClassifier(L.LightningModule):
    """Cross-entropy training of the block network; logs ``{train,val,test}/{loss,acc}`` and ``val/acc_best``.

    Validation may evaluate several splits each epoch (the DataModule's ``eval_splits``: ``val`` and, when
    asked, ``test``); each is logged under its own name, with its best accuracy so far as ``<split>/acc_best``.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        lr = optimizer.get("lr")
        if not isinstance(lr, int | float) or lr <= 0:
            raise ConfigError(f"optimizer.lr must be a number > 0, got {lr!r}")
        self.save_hyperparameters()
        self.net = BlockNetwork(**model)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        self.criterion = nn.CrossEntropyLoss()
        num_classes = model.get("num_classes", 10)
        # ModuleDict keys cannot be "train" (a Module method), hence the "_acc" suffix
        self.accuracy = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in ("train", *EVAL_SPLITS)}
        )
        self.best_accuracy = nn.ModuleDict({f"{s}_acc": MaxMetric() for s in EVAL_SPLITS})
        self.confusion = MulticlassConfusionMatrix(num_classes)  # filled by test_step, read by cifar_lit.eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

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

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, self.eval_splits[dataloader_idx])

    def test_step(self, batch, batch_idx: int) -> None:
        _, logits = self._step(batch, "test")
        self.confusion(logits, batch[1])

    @property
    def eval_splits(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        return list(getattr(datamodule, "eval_splits", ["val"]))

    def on_train_start(self) -> None:
        for best in self.best_accuracy.values():  # forget what the sanity check saw
            best.reset()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for split in self.eval_splits:
            best = self.best_accuracy[f"{split}_acc"]
            best(self.accuracy[f"{split}_acc"].compute())
            self.log(f"{split}/acc_best", best.compute(), sync_dist=True, prog_bar=split == "val")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        config = dict(self.hparams.scheduler)
        interval = config.pop("interval", "epoch")
        if "total_steps" in config and config["total_steps"] is None:
            config["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate(config)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
