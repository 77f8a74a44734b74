"""Using a trained checkpoint outside training: the normalisation it was trained with, and images from disk.

A network only gives its trained accuracy on inputs normalised like its training data. The training set's
per-channel mean and std are the datamodule's state, which Lightning saves in every checkpoint; older checkpoints
lack them, and then they are recomputed from the training set that ``data`` names (with a warning: it must be
the data the model was trained on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps

from cifar_lit.data.augment import normalize
from cifar_lit.data.cache import load_split
from cifar_lit.data.datamodule import CIFAR10DataModule, channel_stats
from cifar_lit.data.source import IMAGE_SHAPE
from cifar_lit.errors import CheckpointError
from cifar_lit.training.checkpoint import read_checkpoint

log = logging.getLogger(__name__)


# where Lightning puts the datamodule's state_dict() in a checkpoint
DATAMODULE_KEY = CIFAR10DataModule.__qualname__


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std (0-1 scale) of the training images, and where they came from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    def __call__(self, images: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
        """(B, H, W, C) uint8 -> (B, C, H, W) float32, exactly as the training batches are made."""
        mean, std = (torch.tensor(v, device=images.device) for v in (self.mean, self.std))
        return normalize(images, mean, std, channels_last)

    def metadata(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def __str__(self) -> str:
        def fmt(values: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"

        return f"mean {fmt(self.mean)}, std {fmt(self.std)} ({self.source})"


def checkpoint_normalisation(checkpoint: dict[str, Any]) -> tuple[list[float], list[float]] | None:
    """The (mean, std) a checkpoint's datamodule state holds; None for checkpoints written before it did."""
    state = checkpoint.get(DATAMODULE_KEY) or {}
    if "mean" in state and "std" in state:
        return [float(v) for v in state["mean"]], [float(v) for v in state["std"]]
    return None


def training_normalisation(ckpt_path: str | Path, data: DictConfig | None) -> Normalisation:
    """The normalisation of the run that wrote ``ckpt_path``: stored in the checkpoint, else recomputed from the
    training set that ``data`` (the ``data`` config group) names."""
    stats = checkpoint_normalisation(read_checkpoint(ckpt_path))
    if stats is not None:
        return Normalisation(tuple(stats[0]), tuple(stats[1]), source=f"checkpoint {ckpt_path}")
    if data is None:
        raise CheckpointError(f"{ckpt_path} carries no normalisation statistics, and no data config was given")
    log.warning(
        "%s carries no normalisation statistics (written before checkpoints stored them): recomputing them from "
        "the training set under data.root=%s, which must be the data the model was trained on",
        ckpt_path,
        data.root,
    )
    images, _, _ = load_split(
        data.root,
        "train",
        data.get("cache_dir"),
        data.get("download", False),
        data.get("download_url"),
        data.get("md5"),
    )
    mean, std = channel_stats(images)
    return Normalisation(tuple(mean.tolist()), tuple(std.tolist()), source=f"training set under {data.root}")


def load_image(path: Path) -> np.ndarray:
    """Any image file PIL reads, as the network's input size: (32, 32, 3) uint8 RGB.

    EXIF orientation is applied, alpha is dropped (``convert("RGB")``, as training reads its PNGs), and other
    sizes are resized (bicubic, anti-aliased when shrinking), ignoring the aspect ratio. Raises what PIL raises
    for a file that is not a readable image.
    """
    height, width, _ = IMAGE_SHAPE
    with Image.open(path) as img:
        img.load()
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return np.array(rgb, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)
