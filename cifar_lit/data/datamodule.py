"""The CIFAR-10 LightningDataModule: train / val (carved from train) / test (the official 10,000), normalised with the
training set's statistics and served by resident batches (``cifar_lit.data.loaders``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from cifar_lit.data.augment import Augment
from cifar_lit.data.cache import SplitSource, load_split
from cifar_lit.data.loaders import PerImageDataset, ResidentLoader, eval_sampler
from cifar_lit.data.source import CLASSES
from cifar_lit.errors import ConfigError


def split_train_val(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a random train/val split of the training set, fixed by ``seed``."""
    if not 0 <= val_size < len(labels):
        raise ConfigError(f"data.val_size must be in [0, {len(labels)}), got {val_size}")
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def balanced_subset(indices: np.ndarray, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices drawn from ``indices``, as equal a number per class as possible."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(indices[labels[indices] == c]) for c in range(len(CLASSES))]
    take = [size // len(CLASSES) + (c < size % len(CLASSES)) for c in range(len(CLASSES))]
    return np.sort(np.concatenate([members[:n] for members, n in zip(per_class, take, strict=True)]))


def channel_stats(images: np.ndarray, chunk: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (0-1 scale) of (N, H, W, C) uint8 images, in chunks to keep memory flat."""
    total = torch.zeros(images.shape[-1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        pixels = torch.from_numpy(images[start : start + chunk]).reshape(-1, images.shape[-1]).double()
        total += pixels.sum(0)
        squares += pixels.square().sum(0)
    count = images.size // images.shape[-1]
    mean = total / count
    std = (squares / count - mean.square()).sqrt()
    return (mean / 255).float(), (std / 255).float()


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 train / val (carved from train) / test (the official 10,000), served by resident batches.

    ``eval_splits`` names what validation evaluates each epoch: ``val`` (unless ``val_size=0``) and, with
    ``test_every_epoch``, ``test``. The module logs each under its own name.
    """

    def __init__(
        self,
        root: str | Path,
        cache_dir: str | None = "data/cache",
        batch_size: int = 128,
        eval_batch_size: int = 32,
        val_size: int = 5000,
        split_seed: int = 0,
        subset: int | None = None,
        augment: dict | Augment | None = None,
        test_every_epoch: bool = False,
        loader: str = "resident",
        num_workers: int = 0,
        channels_last: bool = True,
        download: bool = False,
        download_url: str | None = None,
        md5: Mapping[str, str] | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if batch_size <= 0 or eval_batch_size <= 0:
            raise ConfigError(f"data.batch_size must be > 0, got {batch_size} (eval_batch_size {eval_batch_size})")
        if loader not in ("resident", "torch"):
            raise ConfigError(f"data.loader must be 'resident' or 'torch', got {loader!r}")
        if subset is not None and subset <= 0:
            raise ConfigError(f"data.subset must be a positive number of images or null, got {subset}")
        self.root = Path(root)  # its default ($CIFAR10_ROOT, else data/) lives in conf/data/cifar10.yaml only
        self.cache_dir = cache_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.subset = val_size, split_seed, subset
        self.augment = augment if isinstance(augment, Augment) else Augment(**(augment or {}))
        self.test_every_epoch, self.loader, self.num_workers = test_every_epoch, loader, num_workers
        self.channels_last, self.download, self.seed = channels_last, download, seed
        self.drop_last = drop_last  # training batches only: evaluation always sees every image
        self.download_url, self.md5 = download_url, md5  # None: the official archive and its published md5 sums
        self.splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.sources: dict[str, SplitSource] = {}  # train / test: filled by setup
        # splits prepare_data() decoded in this process, for setup() to take instead of reading them again
        self._prepared: dict[str, tuple[np.ndarray, np.ndarray, SplitSource]] = {}
        # per-channel mean and std (0-1 scale) of the training set: set by setup(), or by load_state_dict()
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def source_info(self) -> dict:
        """Where the data came from, for run.json: the root, its layout and each split's checksums as the cache
        stores them (set up first; nothing is hashed again here)."""
        return {
            "root": str(self.root.resolve()),
            "layout": next((source.layout for source in self.sources.values()), None),
            **{split: {"sha256": s.sha256, "fingerprint": s.fingerprint} for split, s in self.sources.items()},
        }

    @property
    def eval_splits(self) -> list[str]:
        return (["val"] if self.val_size else []) + (["test"] if self.test_every_epoch or not self.val_size else [])

    def prepare_data(self) -> None:
        """Decode and cache both splits once (rank 0 only under DDP); setup() in this process then reuses them.
        Nothing when already set up (the train entry sets up first, to count the batches): a second copy would
        only wait in memory."""
        if self.splits:
            return
        for split in ("train", "test"):
            self._prepared[split] = self._read(split)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray, SplitSource]:
        """What prepare_data() decoded here, or (another DDP rank, or no prepare_data) the split through the cache."""
        prepared = self._prepared.pop(split, None)
        return prepared or self._read(split)

    def _read(self, split: str) -> tuple[np.ndarray, np.ndarray, SplitSource]:
        return load_split(self.root, split, self.cache_dir, self.download, self.download_url, self.md5)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_images, train_labels, self.sources["train"] = self._load("train")
        if self.mean is None:  # a checkpoint's statistics (load_state_dict) win: the model was trained on them
            self.mean, self.std = channel_stats(train_images)
        train_index, val_index = split_train_val(train_labels, self.val_size, self.split_seed)
        if self.subset is not None:
            size = min(self.subset, len(train_index))
            train_index = balanced_subset(train_index, train_labels, size, self.split_seed)
        self.splits["train"] = (train_images[train_index], train_labels[train_index])
        self.splits["val"] = (train_images[val_index], train_labels[val_index])
        test_images, test_labels, self.sources["test"] = self._load("test")
        self.splits["test"] = (test_images, test_labels)

    def train_batches(self, world_size: int = 1) -> int:
        """The training batches of one epoch on each of ``world_size`` ranks (set up first), as the loaders serve
        them: each rank an equal shard (DistributedSampler pads), the last batch partial unless ``drop_last``. When a
        run first validates depends on it (``cifar_lit.training.monitor_check``)."""
        shard = -(-len(self.splits["train"][1]) // world_size)
        return shard // self.batch_size if self.drop_last else -(-shard // self.batch_size)

    def state_dict(self) -> dict[str, list[float]]:
        """The normalisation statistics. Lightning saves them in every checkpoint (under this class's name), so
        eval, predict and export normalise exactly as training did, without the training data at hand."""
        if self.mean is None:
            return {}
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state_dict: dict[str, list[float]]) -> None:
        """Use a checkpoint's statistics (``setup`` then keeps them instead of recomputing)."""
        if "mean" in state_dict and "std" in state_dict:
            self.mean = torch.tensor(state_dict["mean"], dtype=torch.float32)
            self.std = torch.tensor(state_dict["std"], dtype=torch.float32)

    def _loader(self, split: str, train: bool) -> Iterable:
        images, labels = self.splits[split]
        augment = self.augment if train else Augment()
        batch_size = self.batch_size if train else self.eval_batch_size
        trainer = self.trainer
        # The data-parallel shard, from where Lightning's own DataLoader re-wiring takes it (None: not distributed);
        # global_rank and world_size count processes, several of which share one shard under model parallelism.
        shard = (trainer.distributed_sampler_kwargs if trainer is not None else None) or {}
        rank, world_size = shard.get("rank", 0), shard.get("num_replicas", 1)
        if self.loader == "torch":  # training: Lightning puts in a DistributedSampler under DDP
            dataset = PerImageDataset(images, labels, self.mean.tolist(), self.std.tolist(), augment)
            sampler = None if train else eval_sampler(len(dataset), rank, world_size)
            return DataLoader(
                dataset,
                batch_size,
                shuffle=train,
                sampler=sampler,
                num_workers=self.num_workers,
                drop_last=train and self.drop_last,
            )
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        loader = ResidentLoader(
            torch.from_numpy(images).to(device),
            torch.from_numpy(labels),
            self.mean,
            self.std,
            batch_size,
            augment,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            channels_last=self.channels_last,
            drop_last=train and self.drop_last,
        )
        if train and trainer is not None and trainer.overfit_batches > 0:
            # overfit_batches must see the same batches every epoch. Lightning turns shuffling off in DataLoaders
            # only; here it is turned off as Lightning does it there: the DistributedSampler keeps its equal-sized
            # shards (ranks run equal batch counts under DDP), in order.
            loader.sampler.shuffle = False
        return loader

    def train_dataloader(self) -> Iterable:
        return self._loader("train", train=True)

    def val_dataloader(self) -> list[Iterable]:
        return [self._loader(split, train=False) for split in self.eval_splits]

    def test_dataloader(self) -> Iterable:
        return self._loader("test", train=False)
