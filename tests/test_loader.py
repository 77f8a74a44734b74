"""Resident batches: same augmentation distribution as torchvision's per-image path, DDP-style sharding."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifar_lit.data.augment import Augment, random_crop
from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.data.loaders import PerImageDataset, ResidentLoader
from cifar_lit.errors import ConfigError

MEAN, STD = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.2, 0.3])


def gradient_image() -> np.ndarray:
    """One 32x32 image whose pixel values encode their position, so a crop/flip can be read off the result."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([rows * 8 + 1, cols * 8 + 1, np.full((32, 32), 200)], axis=-1).astype(np.uint8)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * STD.view(1, 3, 1, 1) + MEAN.view(1, 3, 1, 1)).mul(255).round()


def offsets_and_flips(batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Recover each crop's vertical offset and whether it was mirrored from the position-encoded pixels."""
    pixels = to_uint8(batch)
    rows, cols = pixels[:, 0], pixels[:, 1]
    row_ids = torch.where(rows > 0, (rows - 1) / 8, torch.nan)
    dy = (row_ids - torch.arange(32).view(1, 32, 1)).nanmedian(dim=2).values.nanmedian(dim=1).values
    col_ids = torch.where(cols > 0, (cols - 1) / 8, torch.nan)
    slope = (col_ids[:, 16, 20] - col_ids[:, 16, 12]).nan_to_num(0)
    return dy.numpy(), (slope < 0).numpy()


def test_resident_augmentation_matches_torchvision_distribution():
    n = 2000
    images = np.repeat(gradient_image()[None], n, axis=0)
    labels = np.zeros(n, dtype=np.int64)
    augment = Augment(crop_padding=4, flip=True)
    torch.manual_seed(0)
    reference = torch.stack(
        [PerImageDataset(images, labels, MEAN.tolist(), STD.tolist(), augment)[i][0] for i in range(n)]
    )
    loader = ResidentLoader(torch.from_numpy(images), torch.from_numpy(labels), MEAN, STD, n, augment, shuffle=True)
    resident = next(iter(loader))[0]
    dy_ref, flip_ref = offsets_and_flips(reference)
    dy_res, flip_res = offsets_and_flips(resident)
    # offsets are uniform on -4..4 in both (9 values, ~222 each); flips are fair coins in both
    hist_ref = np.bincount(np.round(dy_ref).astype(int) + 4, minlength=9)
    hist_res = np.bincount(np.round(dy_res).astype(int) + 4, minlength=9)
    expected = n / 9
    chi2 = lambda h: float(((h - expected) ** 2 / expected).sum())  # noqa: E731
    assert chi2(hist_ref) < 26.1 and chi2(hist_res) < 26.1  # 8 dof, p = 0.001
    assert abs(flip_ref.mean() - 0.5) < 0.05 and abs(flip_res.mean() - 0.5) < 0.05
    # the padded border is black in both: the same fraction of zero pixels
    zeros_ref = (to_uint8(reference) == 0).all(dim=1).float().mean()
    zeros_res = (to_uint8(resident) == 0).all(dim=1).float().mean()
    assert abs(zeros_ref - zeros_res) < 0.01


def test_without_augmentation_batches_equal_torchvision():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10)
    reference = torch.stack([PerImageDataset(images, labels, MEAN.tolist(), STD.tolist())[i][0] for i in range(10)])
    batch, y = next(iter(ResidentLoader(torch.from_numpy(images), torch.from_numpy(labels), MEAN, STD, 10)))
    torch.testing.assert_close(batch, reference)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert y.tolist() == list(range(10))


def test_shards_partition_each_epoch_and_change_between_epochs():
    images = torch.zeros(103, 32, 32, 3, dtype=torch.uint8)
    labels = torch.arange(103)
    seen = []
    for rank in range(2):
        loader = ResidentLoader(images, labels, MEAN, STD, 16, shuffle=True, seed=7, rank=rank, world_size=2)
        loader.sampler.set_epoch(0)
        first = torch.cat([y for _, y in loader])
        loader.sampler.set_epoch(1)
        second = torch.cat([y for _, y in loader])
        assert not torch.equal(first, second)
        seen.append(first)
    assert len(seen[0]) == len(seen[1]) == 52  # DistributedSampler pads to equal shards
    assert set(torch.cat(seen).tolist()) == set(range(103))


def test_same_epoch_same_augmentation():
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    loader = ResidentLoader(images, torch.zeros(64), MEAN, STD, 64, Augment(4, True, 8), shuffle=True, seed=3)
    loader.sampler.set_epoch(5)
    a = next(iter(loader))[0]
    b = next(iter(loader))[0]
    torch.testing.assert_close(a, b)  # a resumed epoch replays exactly
    assert (a == 0).any()  # cutout zeroed something


def test_reflect_padding_is_torch_pad_reflect():
    """The literal form: F.pad(mode="reflect") then slicing, against random_crop's index arithmetic."""
    images = torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8)
    cropped = random_crop(images, 4, torch.Generator().manual_seed(1), pad_mode="reflect")
    offsets = torch.Generator().manual_seed(1)  # the same draws: dy, then dx
    dy, dx = (torch.randint(0, 9, (16, 1), generator=offsets) for _ in range(2))
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (4, 4, 4, 4), mode="reflect")
    windows = zip(padded, dy.flatten(), dx.flatten(), strict=True)
    expected = torch.stack([p[:, y : y + 32, x : x + 32] for p, y, x in windows])
    torch.testing.assert_close(cropped.permute(0, 3, 1, 2).float(), expected)
    assert not torch.equal(cropped, random_crop(images, 4, torch.Generator().manual_seed(1)))  # zeros differ


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    n = 400
    images = torch.from_numpy(np.repeat(gradient_image()[None], n, axis=0))
    loader = ResidentLoader(images, torch.arange(n), MEAN, STD, 64, Augment(flip="alternate"), shuffle=True, seed=2)
    flipped = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        order = torch.cat([y for _, y in batches]).argsort()
        flipped.append(torch.from_numpy(offsets_and_flips(torch.cat([x for x, _ in batches])[order])[1]))
    assert abs(flipped[0].float().mean() - 0.5) < 0.1  # half of the images start mirrored
    assert torch.equal(flipped[1], ~flipped[0]) and torch.equal(flipped[2], flipped[0])


def test_bad_augment_values_are_refused():
    for bad in ({"flip": "sometimes"}, {"pad_mode": "wrap"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Augment(**bad)


class BatchRecorder(L.LightningModule):
    """Records the training images of every epoch; learns nothing (no validation step: Lightning skips it)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.seen.setdefault(self.current_epoch, []).append(batch[0].clone())
        return self.weight * batch[0].mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def images_per_epoch(synthetic_root, tmp_path, **trainer_args) -> list[torch.Tensor]:
    datamodule = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), batch_size=16, val_size=100)
    recorder = BatchRecorder()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, **trainer_args,
    )  # fmt: skip
    trainer.fit(recorder, datamodule=datamodule)
    return [torch.cat(recorder.seen[epoch]) for epoch in range(2)]


def test_overfit_batches_are_the_same_images_every_epoch(synthetic_root, tmp_path):
    first, second = images_per_epoch(synthetic_root, tmp_path, overfit_batches=2)
    assert len(first) == 32 and torch.equal(first, second)
    first, second = images_per_epoch(synthetic_root, tmp_path, limit_train_batches=2)
    assert len(first) == 32 and not torch.equal(first, second)  # otherwise the resident loader reshuffles
