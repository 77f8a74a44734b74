"""CIFAR-10: where it comes from (official archive or image folder), its decoded cache, and the DataModule.

Sources are decoded once into uint8 arrays (N, 32, 32, 3) + int64 labels and cached as ``.npz`` files with a
SHA-256 of their contents, so a second run loads in about a second and a corrupted cache is noticed and rebuilt.
The source itself is only read (it may live on a read-only share).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from cifar_lit.errors import ConfigError, DataError
from cifar_lit.loader import Augment, PerImageDataset, ResidentLoader, eval_sampler

log = logging.getLogger(__name__)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
ARCHIVE_DIR = "cifar-10-batches-py"


def default_root() -> str:
    """``$CIFAR10_ROOT`` when set, else ``data/``."""
    return os.environ.get("CIFAR10_ROOT", "data")


def find_layout(root: Path) -> str:
    """'archive' (cifar-10-batches-py/) or 'folder' (train/<class>/*.png); raise with both fixes when neither."""
    if (root / ARCHIVE_DIR).is_dir():
        return "archive"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    raise DataError(f"no CIFAR-10 found under {str(root)!r}. " + how_to_provide(root))


def how_to_provide(root: Path) -> str:
    return (
        "Either\n"
        f"  1. put the official python archive there ({root / ARCHIVE_DIR}/, from "
        "https://www.cs.toronto.edu/~kriz/cifar.html; data.download=true fetches it when the network allows), or\n"
        f"  2. point data.root (or $CIFAR10_ROOT) at an image folder with train/<class>/*.png and "
        "test/<class>/*.png, e.g. data.root=../shared/data/cifar10"
    )


def download_archive(root: Path) -> None:
    """Fetch the official archive with torchvision (md5-checked); a clear error when there is no network."""
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - any network failure becomes one actionable message
        raise DataError(f"could not download CIFAR-10 into {str(root)!r} ({err}). " + how_to_provide(root)) from err


def read_archive(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The official python archive, through torchvision (which checks the published md5 sums)."""
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(str(root), train=split == "train", download=False)
    except RuntimeError as err:
        raise DataError(f"{root / ARCHIVE_DIR}: {err}") from err
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def list_image_folder(split_dir: Path) -> list[tuple[Path, int]]:
    """(file, label) for every image, sorted by class (CIFAR-10 order) then file name."""
    if not split_dir.is_dir():
        raise DataError(f"missing folder {split_dir} (expected {split_dir}/<class>/*.png)")
    missing = [name for name in CLASSES if not (split_dir / name).is_dir()]
    if missing:
        raise DataError(f"{split_dir}: missing class folder(s) {missing}; expected one folder per class {CLASSES}")
    files = []
    for label, name in enumerate(CLASSES):
        class_files = sorted(p for p in (split_dir / name).iterdir() if p.is_file())
        if not class_files:
            raise DataError(f"{split_dir / name}: class folder is empty")
        files += [(p, label) for p in class_files]
    return files


def read_image(path: Path) -> np.ndarray:
    """One 32x32 RGB image as uint8 (32, 32, 3); names the file when it is unreadable or the wrong size."""
    try:
        with Image.open(path) as img:
            img.load()
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"{path}: not a readable image ({err}); delete or replace it") from err
    if array.shape != IMAGE_SHAPE:
        raise DataError(f"{path}: image is {array.shape[1]}x{array.shape[0]}, CIFAR-10 images are 32x32")
    return array


def read_image_folder(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    files = list_image_folder(root / split)
    images = np.stack([read_image(path) for path, _ in files])
    return images, np.array([label for _, label in files], dtype=np.int64)


def sha256(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def cache_file(cache_dir: Path, root: Path, split: str) -> Path:
    """One cache file per (source folder, split): the resolved source path is part of the name."""
    source_key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    return cache_dir / f"cifar10-{split}-{source_key}.npz"


def source_fingerprint(root: Path, split: str, layout: str) -> str:
    """Names, sizes and modification times of the source files: when any changes, the cache is stale."""
    folder = root / ARCHIVE_DIR if layout == "archive" else root / split
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_cached(path: Path, fingerprint: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The cached arrays and their stored checksum; None when the cache is missing, unreadable, stale or fails
    its checksum."""
    try:
        with np.load(path) as cache:
            images, labels = cache["images"], cache["labels"]
            checksum, source = str(cache["sha256"]), str(cache["source"])
    except (OSError, KeyError, ValueError):
        return None
    return (images, labels, checksum) if source == fingerprint and sha256(images, labels) == checksum else None


def save_cache(path: Path, images: np.ndarray, labels: np.ndarray, fingerprint: str) -> str:
    """Write atomically (temp file + rename), so a killed run never leaves half a cache; returns the checksum."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    checksum = sha256(images, labels)
    np.savez(tmp, images=images, labels=labels, sha256=np.array(checksum), source=np.array(fingerprint))
    tmp.replace(path)
    return checksum


@dataclass(frozen=True)
class SplitSource:
    """Which data a split was decoded from: the layout, and the cache's SHA-256 of the decoded arrays and
    fingerprint of the source files (both None without a cache: nothing is hashed then). Recorded in run.json."""

    layout: str
    sha256: str | None = None
    fingerprint: str | None = None


def load_split_with_source(
    root: str | Path, split: str, cache_dir: str | Path | None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, SplitSource]:
    """Decoded (images uint8 (N, 32, 32, 3), labels int64 (N,)) of 'train' or 'test', through the cache, and
    where they came from."""
    root = Path(root)
    if not (root / ARCHIVE_DIR).is_dir() and not (root / "train").is_dir() and download:
        download_archive(root)
    layout = find_layout(root)
    if cache_dir is None:
        images, labels = read_archive(root, split) if layout == "archive" else read_image_folder(root, split)
        return images, labels, SplitSource(layout)
    path = cache_file(Path(cache_dir), root, split)
    fingerprint = source_fingerprint(root, split, layout)
    cached = load_cached(path, fingerprint) if path.exists() else None
    if cached is not None:
        images, labels, checksum = cached
    else:
        images, labels = read_archive(root, split) if layout == "archive" else read_image_folder(root, split)
        checksum = save_cache(path, images, labels, fingerprint)
    log.info("%s", describe_split(split, labels))
    return images, labels, SplitSource(layout, checksum, fingerprint)


def describe_split(split: str, labels: np.ndarray) -> str:
    """``train: 50000 images, 5000 per class``, or each class's count when they differ (a partial copy shows)."""
    counts = np.bincount(labels, minlength=len(CLASSES))
    per_class = (
        f"{counts[0]} per class"
        if (counts == counts[0]).all()
        else ", ".join(f"{name} {count}" for name, count in zip(CLASSES, counts, strict=True))
    )
    return f"{split}: {len(labels)} images, {per_class}"


def load_split(root: str | Path, split: str, cache_dir: str | Path | None, download: bool = False):
    """Decoded (images uint8 (N, 32, 32, 3), labels int64 (N,)) of 'train' or 'test', through the cache."""
    images, labels, _ = load_split_with_source(root, split, cache_dir, download)
    return images, labels


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
        root: str | None = None,
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
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size <= 0 or eval_batch_size <= 0:
            raise ConfigError(f"data.batch_size must be > 0, got {batch_size} (eval_batch_size {eval_batch_size})")
        if loader not in ("resident", "torch"):
            raise ConfigError(f"data.loader must be 'resident' or 'torch', got {loader!r}")
        if subset is not None and subset <= 0:
            raise ConfigError(f"data.subset must be a positive number of images or null, got {subset}")
        self.root = Path(root or default_root())
        self.cache_dir = cache_dir
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.subset = val_size, split_seed, subset
        self.augment = augment if isinstance(augment, Augment) else Augment(**(augment or {}))
        self.test_every_epoch, self.loader, self.num_workers = test_every_epoch, loader, num_workers
        self.channels_last, self.download, self.seed = channels_last, download, seed
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
        """Decode and cache both splits once (rank 0 only under DDP); setup() in this process then reuses them."""
        for split in ("train", "test"):
            self._prepared[split] = load_split_with_source(self.root, split, self.cache_dir, self.download)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray, SplitSource]:
        """What prepare_data() decoded here, or (another DDP rank, or no prepare_data) the split through the cache."""
        prepared = self._prepared.pop(split, None)
        return prepared or load_split_with_source(self.root, split, self.cache_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train_images, train_labels, self.sources["train"] = self._load("train")
        if self.mean is None:  # a checkpoint's statistics (load_state_dict) win: the model was trained on them
            self.mean, self.std = channel_stats(train_images)
        train_index, val_index = split_train_val(train_labels, self.val_size, self.split_seed)
        if self.subset is not None:
            train_index = balanced_subset(train_index, train_labels, min(self.subset, len(train_index)), 0)
        self.splits["train"] = (train_images[train_index], train_labels[train_index])
        self.splits["val"] = (train_images[val_index], train_labels[val_index])
        test_images, test_labels, self.sources["test"] = self._load("test")
        self.splits["test"] = (test_images, test_labels)

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
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if self.loader == "torch":  # training: Lightning puts in a DistributedSampler under DDP
            dataset = PerImageDataset(images, labels, self.mean.tolist(), self.std.tolist(), augment)
            sampler = None if train else eval_sampler(len(dataset), rank, world_size)
            return DataLoader(dataset, batch_size, shuffle=train, sampler=sampler, num_workers=self.num_workers)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        return ResidentLoader(
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
        )

    def train_dataloader(self) -> Iterable:
        return self._loader("train", train=True)

    def val_dataloader(self) -> list[Iterable]:
        return [self._loader(split, train=False) for split in self.eval_splits]

    def test_dataloader(self) -> Iterable:
        return self._loader("test", train=False)
