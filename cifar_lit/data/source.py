"""Where CIFAR-10 comes from: the official python archive (read, and fetched, through torchvision) or an image folder
of PNGs (``train/<class>/*.png``, ``test/<class>/*.png``), decoded to uint8 arrays (N, 32, 32, 3) and int64 labels.
The source is only ever read: it may live on a read-only share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifar_lit.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


IMAGE_SHAPE = (32, 32, 3)


ARCHIVE_DIR = "cifar-10-batches-py"


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
