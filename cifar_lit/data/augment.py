"""Batch augmentation and normalisation of (B, H, W, C) uint8 images: random crops (zero or mirrored padding), flips
(random or alternating by epoch), cutout, and ``normalize``. Whole batches at once, on whatever device the images
live on: no per-image Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cifar_lit.errors import ConfigError


@dataclass(frozen=True)
class Augment:
    """Batch augmentation recipe. All zeros/False = no augmentation (the seed's reference runs)."""

    crop_padding: int = 0  # random crop of the original size after padding each side by this many pixels
    flip: bool | str = False  # True: mirror with probability 1/2; "alternate": every other epoch (airbench)
    cutout: int = 0  # side of a square set to the mean colour (0 after normalisation), DeVries & Taylor 2017
    pad_mode: str = "zeros"  # what the crop's padding holds: "zeros" (black) or "reflect" (mirrored border)

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.cutout < 0:
            raise ConfigError(f"data.augment: crop_padding and cutout must be >= 0, got {self}")
        if self.flip not in (True, False, "alternate"):
            raise ConfigError(f"data.augment.flip must be true, false or alternate, got {self.flip!r}")
        if self.pad_mode not in ("zeros", "reflect"):
            raise ConfigError(f"data.augment.pad_mode must be zeros or reflect, got {self.pad_mode!r}")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.cutout)


def random_crop(
    images: torch.Tensor, padding: int, generator: torch.Generator, pad_mode: str = "zeros"
) -> torch.Tensor:
    """Pad a (B, H, W, C) uint8 batch by ``padding`` (zeros, or the image mirrored at its border) and cut a
    random H x W window from each image."""
    batch, height, width, _ = images.shape
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), device=images.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), device=images.device, generator=generator)
    rows = (dy + torch.arange(height, device=images.device))[:, :, None]
    cols = (dx + torch.arange(width, device=images.device))[:, None, :]
    if pad_mode == "reflect":  # index the unpadded image: position -1 reads row 1, H reads row H - 2
        rows, cols = reflect_index(rows - padding, height), reflect_index(cols - padding, width)
    else:
        images = torch.nn.functional.pad(images, (0, 0, padding, padding, padding, padding))
    return images[torch.arange(batch, device=images.device)[:, None, None], rows, cols]


def reflect_index(index: torch.Tensor, size: int) -> torch.Tensor:
    """Positions outside [0, size) mirrored back inside, without repeating the edge (``F.pad``'s "reflect")."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each (B, H, W, C) image left-right with probability 1/2."""
    return mirror(images, torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5)


def alternating_flip(images: torch.Tensor, flip_first: torch.Tensor, epoch: int) -> torch.Tensor:
    """Mirror the images whose fixed coin ``flip_first`` differs from the epoch's parity: each image is seen
    mirrored every other epoch, so any two consecutive epochs show both views (airbench's alternating flip;
    over an odd number of epochs each image is still mirrored with probability 1/2)."""
    return mirror(images, flip_first ^ bool(epoch % 2))


def mirror(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the (B, H, W, C) images where the (B,) bool ``flip`` is set."""
    return torch.where(flip[:, None, None, None], images.flip(2), images)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) centred at a random pixel of each normalised image."""
    batch, _, height, width = x.shape
    cy = torch.randint(0, height, (batch, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, width, (batch, 1, 1), device=x.device, generator=generator)
    rows = torch.arange(height, device=x.device)[None, :, None]
    cols = torch.arange(width, device=x.device)[None, None, :]
    inside = ((rows - cy + size // 2) >= 0) & ((rows - cy + size // 2) < size)
    inside = inside & ((cols - cx + size // 2) >= 0) & ((cols - cx + size // 2) < size)
    return x.masked_fill(inside[:, None], 0.0)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float, (x / 255 - mean) / std. NHWC storage gives channels_last free."""
    x = images.permute(0, 3, 1, 2).float()
    x = x.sub_(mean.view(1, -1, 1, 1) * 255).div_(std.view(1, -1, 1, 1) * 255)
    return x if channels_last else x.contiguous()
