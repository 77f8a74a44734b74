"""BlockClassifier: the LightningModule that trains a BlockNetwork with cross-entropy.

Everything it needs to rebuild itself (model, optimizer and scheduler configs) arrives as plain dicts and is
saved with ``save_hyperparameters()``, so ``BlockClassifier.load_from_checkpoint(path)`` needs no Hydra config.
"""

from __future__ import annotations

import inspect
import pydoc
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from cifar_lit.errors import ConfigError
from cifar_lit.loader import normalize
from cifar_lit.network import BlockNetwork
from cifar_lit.tta import check_tta, tta_logits

EVAL_SPLITS = ("val", "test")
FINITE_CHECK_EVERY = 10
LR_SCALES = ("norm_bias_lr_scale", "head_lr_scale")  # optimizer keys: a parameter group's lr relative to lr
LOCAL_KEYS = {"interval", *LR_SCALES}  # keys this module reads itself, not passed to the target
STEM_FIT_IMAGES = 5000  # training images the whitening stem's covariance is estimated from


def check_target(group: str, node: dict[str, Any] | None) -> None:
    """Fail at construction, not in ``configure_optimizers`` once the data is loaded, when ``_target_`` names
    nothing importable (a typo such as ``optimizer._target_=torch.optim.Adamw``) or a key is not one of its
    arguments (``optimizer.nesterov`` left over when switching to ``optimizer=rmsprop``)."""
    target = (node or {}).get("_target_")
    if target is None:
        return
    located = pydoc.locate(target)
    if located is None:
        raise ConfigError(f"{group}._target_={target!r} names nothing importable; check the spelling")
    try:
        parameters = inspect.signature(located).parameters
    except (TypeError, ValueError):  # no introspectable signature: let instantiation judge
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(k for k in node if not k.startswith("_") and k not in parameters and k not in LOCAL_KEYS)
    if unknown:
        raise ConfigError(
            f"{group}.{unknown[0]} is not an argument of {target} (its arguments: {', '.join(parameters)}); "
            f"remove it with ~{group}.{unknown[0]}"
        )


class BlockClassifier(L.LightningModule):
    """Cross-entropy training of the block network; logs ``{train,val,test}/{loss,acc}`` and ``val/acc_best``.

    Validation may evaluate several splits each epoch (the DataModule's ``eval_splits``: ``val`` and, when
    asked, ``test``); each is logged under its own name, with its best accuracy so far as ``<split>/acc_best``.
    ``label_smoothing`` is cross-entropy's. With ``tta`` (``cifar_lit.tta``) the test also logs the accuracy of
    the test-time-augmented prediction as ``test/acc_tta``, beside the plain ``test/acc``.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = True,
        compile: bool = False,
        label_smoothing: float = 0.0,
        tta: str = "none",
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
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
        if compile:
            self.net.compile()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.tta = check_tta(tta)
        num_classes = model.get("num_classes", 10)
        # ModuleDict keys cannot be "train" (a Module method), hence the "_acc" suffix
        self.accuracy = nn.ModuleDict(
            {f"{s}_acc": MulticlassAccuracy(num_classes, average="micro") for s in ("train", *EVAL_SPLITS, "tta")}
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
        if self.tta != "none":
            x, y = batch
            self.accuracy["tta_acc"](tta_logits(self, x, self.tta, plain=logits), y)
            kwargs = dict(on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
            self.log("test/acc_tta", self.accuracy["tta_acc"], **kwargs)
        self.confusion(logits, batch[1])

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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to save diverged weights (the last good checkpoint stays the newest); store the best accuracies
        (metric states are not in the state dict) so a resumed run's ``*/acc_best`` continues from them."""
        for name, tensor in checkpoint["state_dict"].items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise FloatingPointError(
                    f"{name} is not finite at epoch {self.current_epoch}, step {self.global_step}: the run diverged "
                    "(try a smaller optimizer.lr); not saving it, the checkpoints already saved are kept"
                )
        checkpoint["best_accuracy"] = {name: float(best.max_value) for name, best in self.best_accuracy.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_best_accuracy = checkpoint.get("best_accuracy", {})

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

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.net, self.hparams.optimizer)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        config = dict(self.hparams.scheduler)
        interval = config.pop("interval", "epoch")
        if "total_steps" in config and config["total_steps"] is None:
            config["total_steps"] = int(self.trainer.estimated_stepping_batches)
        if isinstance(config.get("pct_start"), int):  # `scheduler.pct_start=0` parses as an int, which
            config["pct_start"] = float(config["pct_start"])  # OneCycleLR rejects ("Expected float ...")
        scheduler = instantiate(config)(optimizer, **per_group_max_lr(config, optimizer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def check_lr_scales(optimizer: dict[str, Any]) -> None:
    for key in LR_SCALES:
        scale = optimizer.get(key, 1.0)
        if not isinstance(scale, int | float) or scale <= 0:
            raise ConfigError(f"optimizer.{key} must be a number > 0, got {scale!r}")


def build_optimizer(net: nn.Module, optimizer: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer config (a partial ``_target_``, plus this module's own ``*_lr_scale`` keys) over ``net``."""
    config = dict(optimizer)
    scales = {key: config.pop(key, 1.0) for key in LR_SCALES}
    return instantiate(config)(params=parameter_groups(net, config, scales))


def per_group_max_lr(scheduler: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """OneCycleLR's ``max_lr`` for each parameter group, in the groups' lr ratio (one number would give the
    BatchNorm biases of ``norm_bias_lr_scale`` the same peak as everything else)."""
    max_lr = scheduler.get("max_lr")
    if not isinstance(max_lr, int | float) or len(optimizer.param_groups) == 1:
        return {}
    return {"max_lr": [max_lr * group["lr"] / optimizer.defaults["lr"] for group in optimizer.param_groups]}


def parameter_groups(net: nn.Module, optimizer: dict[str, Any], scales: dict[str, float]) -> list[dict[str, Any]]:
    """All parameters in one group, plus a group of their own for the BatchNorm biases (``norm_bias_lr_scale``)
    and for the classifier's parameters (``head_lr_scale``) when their scale is not 1. A group with scale s gets
    ``lr * s`` and ``weight_decay / s``, so its decay per step stays ``lr * weight_decay`` (airbench94 trains the
    BatchNorm biases at 64x and its head at 13x the lr of its other SGD parameters). The scales are checked when
    the module is built (``check_lr_scales``)."""
    members = {
        "norm_bias_lr_scale": {
            id(m.bias) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
        },
        "head_lr_scale": {id(p) for p in net.classifier.parameters()},
    }
    lr, weight_decay = optimizer["lr"], optimizer.get("weight_decay", 0.0)
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups, claimed = [], set()
    for key, scale in scales.items():
        if scale != 1:
            params = [p for p in trainable if id(p) in members[key] and id(p) not in claimed]
            claimed |= {id(p) for p in params}
            groups.append({"params": params, "lr": lr * scale, "weight_decay": weight_decay / scale})
    return [{"params": [p for p in trainable if id(p) not in claimed]}, *groups]
