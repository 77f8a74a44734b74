"""TensorBoard views beyond the metrics: a dashboard of them, how the blocks use their branches, what the classifier
gets wrong.

* CUSTOM SCALARS: train vs val vs test accuracy and loss side by side, and one chart per block with its branch
  weights, written once when fit starts.
* ``weights/block{i}/branch{k}`` (scalars) and ``weights/block{i}`` (HISTOGRAMS), every validation epoch: the mean over
  the validation images of block i's branch weight a_k = g(Linear(pool X))_k, and the distribution of all its
  branch weights, read by forward hooks on the blocks' gate activations (no extra forward pass; a compiled network:
  from an eager pass of the first validation batch). Whether the K
  branches stay distinct or collapse to one shows here first. "weights" sorts after train/val/test: TensorBoard
  lists the card groups alphabetically, and the metrics come first.
* ``{val,test}/confusion_matrix`` and ``{val,test}/misclassified`` (IMAGES tab): the confusion matrix of a whole split
  and a grid of misclassified images titled ``true->pred``. ``val/...`` is written when fitting ends (the final
  weights, last validation epoch), ``test/...`` after each test (the weights tested: the best checkpoint in train).
  Both show the plain prediction, the network's first output of each batch: with test-time augmentation
  (``tta``) the test step then runs the network on mirrored and shifted views, which are not the image shown.

Everything is written only by global rank 0 and only into a ``TensorBoardLogger``; under DDP the confusion matrix
covers the whole split (torchmetrics syncs it), the gates and images come from rank 0's shard.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import MulticlassConfusionMatrix

from cifar_lit.data.source import CLASSES
from cifar_lit.network.block import Block
from cifar_lit.reporting.confusion import confusion_figure
from cifar_lit.training.epoch_logger import axis_step


def custom_scalars_layout(blocks: int) -> dict[str, dict[str, list]]:
    """The CUSTOM SCALARS dashboard: each chart draws every tag its regular expression matches, one line each."""
    return {
        "metrics": {
            "accuracy": ["Multiline", [r"^(train|val|test)/acc$"]],
            "loss": ["Multiline", [r"^(train|val|test)/loss$"]],
            "best accuracy": ["Multiline", [r"^(val|test)/acc_best$"]],
            "learning rate": ["Multiline", [r"^train/lr-"]],
        },
        "branch weights (mean over the validation images)": {
            f"block {i}": ["Multiline", [rf"^weights/block{i}/branch\d+$"]] for i in range(blocks)
        },
    }


def blocks_of(net: torch.nn.Module) -> list[Block]:
    return [m for m in net.modules() if isinstance(m, Block)]


def is_compiled(net: torch.nn.Module) -> bool:
    """Whether ``net.compile()`` compiled the module (its calls, hooks included, run through torch.compile)."""
    return getattr(net, "_compiled_call_impl", None) is not None


class TensorBoardExtras(L.Callback):
    """The custom-scalars layout; branch weights per validation epoch; confusion matrix and misclassified images per
    evaluated split. Everything at the epoch, or hundredths of one, the x axis of the run's scalars
    (``cifar_lit.training.epoch_logger.axis_step``)."""

    def __init__(self, max_images: int = 32, gate_histograms: bool = True) -> None:
        self.max_images, self.gate_histograms = max_images, gate_histograms
        self._gates: dict[int, list[torch.Tensor]] = {}
        self._hooks: list[RemovableHandle] = []
        self._attached = False  # between an evaluation epoch's start and its end
        self._confusion: MulticlassConfusionMatrix | None = None
        self._wrong: list[tuple[torch.Tensor, int, int]] = []
        self._collecting = False
        self._val_figures: tuple[str, int, torch.Tensor, list[tuple[torch.Tensor, int, int]]] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is not None and trainer.is_global_zero:
            writer.add_custom_scalars(custom_scalars_layout(len(blocks_of(getattr(pl_module, "net", pl_module)))))

    # ----------------------------------------------------------------------------------------------- hooks
    def _attach(self, trainer: L.Trainer, pl_module: L.LightningModule, gates: bool) -> None:
        """A fresh confusion matrix and, when asked, hooks on every block's gate activation. A compiled network
        gets no hooks: its graphs would be recompiled for each set (one per epoch); its gates are read from an
        eager pass of each epoch's first validation batch instead (``_eager_gates``)."""
        self._detach()
        self._wrong = []
        self._confusion = MulticlassConfusionMatrix(len(CLASSES), validate_args=False).to(pl_module.device)
        net = getattr(pl_module, "net", pl_module)
        if gates and self.gate_histograms and trainer.is_global_zero:
            self._gates = {i: [] for i in range(len(blocks_of(net)))}
            if not is_compiled(net):
                self._hook_gates(net)
        self._attached = True

    def _hook_gates(self, net: torch.nn.Module) -> None:
        for i, block in enumerate(blocks_of(net)):
            self._hooks.append(block.gate_activation.register_forward_hook(self._gate_hook(i)))

    def _eager_gates(self, net: torch.nn.Module, images: torch.Tensor) -> None:
        """The gates of one batch through the network's uncompiled forward (its blocks are not compiled alone)."""
        self._hook_gates(net)
        try:
            with torch.no_grad():
                net.forward(images)
        finally:
            self._detach()

    def _detach(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _gate_hook(self, index: int):
        def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
            if self._collecting:
                self._gates[index].append(output.detach().float().cpu())

        return hook

    def _collect(self, trainer: L.Trainer, logits: Any, batch: Any, first_loader: bool) -> None:
        """Confusion counts of the batch (all ranks) and, on rank 0, its misclassified images. ``logits`` is what
        the step returned: the plain prediction (with TTA the further views are not what the image shows)."""
        if not first_loader or not isinstance(logits, torch.Tensor) or self._confusion is None:
            return
        x, y = batch
        pred = logits.argmax(dim=1)
        self._confusion.update(pred, y)
        if trainer.is_global_zero and len(self._wrong) < self.max_images:
            for i in torch.nonzero(pred != y).flatten()[: self.max_images - len(self._wrong)].tolist():
                self._wrong.append((x[i].detach().float().cpu(), int(y[i]), int(pred[i])))

    # ----------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collecting = False
        if not trainer.sanity_checking and _tensorboard(trainer) is not None:
            self._attach(trainer, pl_module, gates=True)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx: int = 0) -> None:
        self._collecting = dataloader_idx == 0  # the val split; with data.test_every_epoch the test split is idx 1

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if not self._attached:
            return
        net = getattr(pl_module, "net", pl_module)
        if self._gates and is_compiled(net) and batch_idx == 0 and dataloader_idx == 0:
            self._eager_gates(net, batch[0])
        self._collect(trainer, outputs, batch, dataloader_idx == 0)

    def _finish(self) -> torch.Tensor | None:
        """Unhook the network and return the split's confusion matrix (None when nothing was collected). A
        collective under DDP: every rank gets here."""
        if not self._attached:
            return None
        self._detach()
        self._attached = False
        return self._confusion.compute().cpu()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = self._finish()
        writer = _tensorboard(trainer)
        if matrix is None or writer is None or not trainer.is_global_zero:
            return
        split = getattr(pl_module, "eval_splits", ["val"])[0]  # "test" when data.val_size=0
        step = axis_step(trainer, trainer.current_epoch)
        self._val_figures = (split, step, matrix, self._wrong)
        for i, chunks in self._gates.items():
            if chunks:
                gates = torch.cat(chunks)
                for k, mean in enumerate(gates.mean(dim=0).tolist()):
                    writer.add_scalar(f"weights/block{i}/branch{k}", mean, step)
                writer.add_histogram(f"weights/block{i}", gates, step)
        self._gates = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is not None and trainer.is_global_zero and self._val_figures is not None:
            self._write_figures(writer, trainer, *self._val_figures)

    # ----------------------------------------------------------------------------------------------- test
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _tensorboard(trainer) is not None:
            self._attach(trainer, pl_module, gates=False)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0) -> None:
        if self._attached:
            self._collect(trainer, outputs, batch, dataloader_idx == 0)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = self._finish()
        writer = _tensorboard(trainer)
        if matrix is not None and writer is not None and trainer.is_global_zero:
            self._write_figures(writer, trainer, "test", axis_step(trainer, trainer.current_epoch), matrix, self._wrong)

    # -------------------------------------------------------------------------------------------- figures
    def _write_figures(self, writer, trainer: L.Trainer, split: str, step: int, matrix: torch.Tensor, wrong: list):
        writer.add_figure(f"{split}/confusion_matrix", confusion_figure(matrix, CLASSES, split), step)
        if wrong:
            mean, std = _stats(trainer)
            writer.add_figure(f"{split}/misclassified", misclassified_figure(wrong, mean, std, split), step)
        writer.flush()


def _tensorboard(trainer: L.Trainer):
    """The SummaryWriter of the run's TensorBoardLogger, or None when the run logs elsewhere (or not at all)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _stats(trainer: L.Trainer) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    datamodule = getattr(trainer, "datamodule", None)
    return getattr(datamodule, "mean", None), getattr(datamodule, "std", None)


def denormalize(x: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    """A normalised (C, H, W) image back to (H, W, C) in [0, 1]; min-max scaled when the statistics are unknown."""
    if mean is not None and std is not None:
        x = x * std.view(-1, 1, 1).cpu() + mean.view(-1, 1, 1).cpu()
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    return x.clamp(0, 1).permute(1, 2, 0)


def misclassified_figure(wrong: list, mean: torch.Tensor | None, std: torch.Tensor | None, split: str) -> Figure:
    """The misclassified images as one picture, 8 a row, each labelled ``true->pred`` beneath it. One image and a
    text each, not a subplot each: matplotlib lays out a subplot's title slowly (seconds for a few dozen)."""
    columns, pad, label = 8, 8, 12  # pixels between images, and under each image for its label
    height, width = wrong[0][0].shape[-2:]
    rows = -(-len(wrong) // columns)
    cell_h, cell_w = height + pad + label, width + pad
    canvas = torch.ones(rows * cell_h, columns * cell_w, 3)
    fig = Figure(figsize=(columns * 1.3, rows * 1.45))
    ax = fig.add_axes((0, 0, 1, 0.93))
    ax.axis("off")
    for i, (image, true, pred) in enumerate(wrong):
        top, left = (i // columns) * cell_h, (i % columns) * cell_w
        canvas[top : top + height, left : left + width] = denormalize(image, mean, std)
        ax.text(
            left + width / 2, top + height + 1, f"{CLASSES[true]}->{CLASSES[pred]}", ha="center", va="top", fontsize=7
        )
    ax.imshow(canvas.numpy(), interpolation="nearest")
    fig.suptitle(f"{split}: misclassified (true->pred)", fontsize=9)
    return fig
