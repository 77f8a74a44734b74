"""Resident batches: the whole split lives in memory as one uint8 tensor, and every step slices, augments and
normalises a whole batch at once (no per-image Python, no worker processes).

This is the data path of training. The per-image torchvision path (``PerImageDataset`` + ``DataLoader``) is kept
for comparison: ``cifar_lit.bench`` uses it as the reference, and a test checks that both give the same
augmentation distribution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler
from torchvision import transforms

from cifar_lit.data.augment import Augment, alternating_flip, normalize, random_crop, random_cutout, random_flip

log = logging.getLogger(__name__)


class ResidentLoader:
    """Iterates (images, labels) batches of an in-memory split, on whatever device the tensors live on.

    Shuffling and sharding are a ``DistributedSampler``'s, so under DDP each rank sees its own shard of every
    epoch, and Lightning calls ``sampler.set_epoch`` at each epoch start. Unshuffled (evaluation) splits are
    sharded by ``eval_sampler`` instead, which never repeats an image. Augmentation draws from a generator
    seeded by (seed, epoch, rank): an epoch is the same whether the run was resumed or not.

    The loader counts the batches it has served this epoch; Lightning saves that count (``state_dict``) in a
    checkpoint written mid-epoch and hands it back (``load_state_dict``) before the resumed epoch starts, which
    then serves only the batches not yet served, with the augmentation an uninterrupted epoch gives them.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        batch_size: int,
        augment: Augment = Augment(),
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = True,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a (N, H, W, C) uint8 tensor, got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels.to(images.device)
        self.mean, self.std = mean.to(images.device), std.to(images.device)
        self.batch_size, self.augment, self.seed = batch_size, augment, seed
        self.channels_last, self.drop_last = channels_last, drop_last
        coins = torch.Generator().manual_seed(seed)
        self.flip_first = (torch.rand(len(images), generator=coins) < 0.5).to(images.device)  # alternating flip
        self.sampler: DistributedSampler = (
            DistributedSampler(range(len(images)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            if shuffle
            else eval_sampler(len(images), rank, world_size)
        )
        self.batch_sampler = None  # Lightning inspects .sampler/.batch_sampler as on a DataLoader
        self.batches_served = 0  # of epoch served_epoch, so far
        self.served_epoch = -1
        self.resume_from: dict[str, int] | None = None  # a checkpoint's state, applied by the next epoch served

    def __len__(self) -> int:
        if self.drop_last:  # every batch full: one shape for a compiled step (cifar_lit.training.compiled)
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # a generator: nothing here runs before the first batch is asked for, by when Lightning has set the epoch
        device = self.images.device
        order = torch.tensor(list(self.sampler), dtype=torch.long, device=device)
        generator = torch.Generator(device=device)
        generator.manual_seed(hash((self.seed, self.sampler.epoch, self.sampler.rank)) & 0x7FFF_FFFF)
        skip = self.batches_to_skip()
        self.served_epoch, self.batches_served = self.sampler.epoch, 0
        for number, start in enumerate(range(0, len(self) * self.batch_size, self.batch_size)):
            index = order[start : start + self.batch_size]
            if number < skip and not self.augment.active:
                self.batches_served += 1
                continue
            images = self.make_batch(index, generator)  # augmented even when skipped: the next batch's draws follow
            self.batches_served += 1
            if number >= skip:
                yield images, self.labels[index]

    def state_dict(self) -> dict[str, int]:
        """Where this epoch stands: the batches served, and what fixes the epoch's order and augmentation."""
        served = self.batches_served if self.served_epoch == self.sampler.epoch else 0  # 0: not started yet
        return {"batches_served": served, **self.epoch_identity()}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Resume the epoch a checkpoint was saved in (Lightning calls this only for a checkpoint saved
        mid-epoch, before it sets the epoch): the next epoch served starts after its ``batches_served``."""
        self.resume_from = dict(state_dict)

    def epoch_identity(self) -> dict[str, int]:
        """What fixes the epoch's batches on every rank (each rank resumes from rank 0's count: under DDP they
        all serve the same number of batches an epoch)."""
        return {
            "epoch": self.sampler.epoch,
            "seed": self.seed,
            "world_size": self.sampler.num_replicas,
            "images": len(self.images),
            "batch_size": self.batch_size,
        }

    def batches_to_skip(self) -> int:
        """The batches of this epoch that a resumed checkpoint had already served (0 when not resuming), once."""
        saved, self.resume_from = self.resume_from, None
        if saved is None:
            return 0
        saved_identity = {key: saved.get(key) for key in self.epoch_identity()}
        if saved_identity != self.epoch_identity():
            log.warning(
                "the checkpoint was saved mid-epoch by another training loader (%s; this run: %s): the epoch's "
                "data starts again from its first batch",
                saved_identity,
                self.epoch_identity(),
            )
            return 0
        return int(saved["batches_served"])

    def make_batch(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment and normalise the (B, H, W, C) uint8 images at ``index``."""
        images = self.images[index]
        if self.augment.crop_padding:
            images = random_crop(images, self.augment.crop_padding, generator, self.augment.pad_mode)
        if self.augment.flip == "alternate":
            images = alternating_flip(images, self.flip_first[index], self.sampler.epoch)
        elif self.augment.flip:
            images = random_flip(images, generator)
        x = normalize(images, self.mean, self.std, self.channels_last)
        if self.augment.cutout:
            x = random_cutout(x, self.augment.cutout, generator)
        return x


def eval_sampler(size: int, rank: int = 0, world_size: int = 1) -> UnrepeatedDistributedSampler:
    """Rank ``rank``'s share of an evaluation split: every ``world_size``-th image from ``rank`` on, in order.

    A ``DistributedSampler`` pads the split to a multiple of ``world_size`` by repeating images, so a metric synced
    over the ranks would count those twice; Lightning's unrepeated sampler lets the shards differ in size by one,
    and the synced accuracy is exactly that of one process. (Evaluation has no per-batch collective, so ranks may
    run unequal batch counts.) Being a ``DistributedSampler``, Lightning leaves it in place in a ``DataLoader``.
    """
    return UnrepeatedDistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=False)


class PerImageDataset(Dataset):
    """The classic per-image path: PIL image -> torchvision transforms, one image at a time (the reference)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, augment: Augment = Augment()) -> None:
        self.images, self.labels = images, labels
        steps: list = []
        if augment.cutout or augment.flip == "alternate":
            raise ValueError("PerImageDataset has no cutout or alternating flip; use the resident loader")
        if augment.crop_padding:
            padding_mode = {"zeros": "constant", "reflect": "reflect"}[augment.pad_mode]
            steps.append(transforms.RandomCrop(images.shape[1], augment.crop_padding, padding_mode=padding_mode))
        if augment.flip:
            steps.append(transforms.RandomHorizontalFlip())
        steps += [transforms.ToTensor(), transforms.Normalize(list(mean), list(std))]
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])
