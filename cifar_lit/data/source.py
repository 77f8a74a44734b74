"""Where CIFAR-10 comes from: the official python archive (read, and fetched, through torchvision) or an image folder
of PNGs (``train/<class>/*.png``, ``test/<class>/*.png``), decoded to uint8 arrays (N, 32, 32, 3) and int64 labels.
A source that is there is only ever read (it may live on a read-only share); only a download writes, into data.root.
"""

from __future__ import annotations

import shutil
import socket
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifar_lit.errors import ConfigError, DataError

if TYPE_CHECKING:  # torchvision is imported where it is used: reading an image folder never needs it
    from torchvision.datasets import CIFAR10

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


IMAGE_SHAPE = (32, 32, 3)


ARCHIVE_DIR = "cifar-10-batches-py"


OFFICIAL_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


DOWNLOAD_TIMEOUT_S = 15.0  # seconds without a byte from the server before a download is given up


def find_layout(root: Path) -> str:
    """'archive' (cifar-10-batches-py/) or 'folder' (train/<class>/*.png); raise with both fixes when neither."""
    if (root / ARCHIVE_DIR).is_dir():
        return "archive"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return "folder"
    raise DataError(f"no CIFAR-10 found under {str(root)!r}. " + how_to_provide(root))


def how_to_provide(root: Path) -> str:
    """The two ways to give a run its data, for every message that finds none under ``root``."""
    return (
        "Either\n"
        f"  1. put the official python archive there ({root / ARCHIVE_DIR}/, from "
        f"{OFFICIAL_PAGE}; data.download=true, the default, fetches it when the network allows), or\n"
        "  2. point data.root (or $CIFAR10_ROOT) at a copy in either layout: a folder holding "
        f"{ARCHIVE_DIR}/, or an image folder with train/<class>/*.png and test/<class>/*.png, "
        "e.g. data.root=/path/to/cifar10"
    )


def archive_dataset(md5: Mapping[str, str] | None = None) -> type[CIFAR10]:
    """torchvision's CIFAR10, which checks the published md5 sums of the archive and of each file in it; with
    ``md5`` (file name -> sum, for the archive and each of its files) a subclass that checks those instead.
    Another URL alone (a mirror) keeps the published sums: only an archive of other content needs others."""
    from torchvision.datasets import CIFAR10

    if md5 is None:
        return CIFAR10
    names = [CIFAR10.filename, *(name for name, _ in CIFAR10.train_list + CIFAR10.test_list), CIFAR10.meta["filename"]]
    missing = [name for name in names if name not in md5]
    if missing:
        raise ConfigError(f"data.md5 must give the md5 sum of every file of the archive; missing {missing}")
    sums = {name: str(md5[name]) for name in names}
    return type(
        "CIFAR10WithOwnMd5",
        (CIFAR10,),
        {
            "tgz_md5": sums[CIFAR10.filename],
            "train_list": [[name, sums[name]] for name, _ in CIFAR10.train_list],
            "test_list": [[name, sums[name]] for name, _ in CIFAR10.test_list],
            "meta": {**CIFAR10.meta, "md5": sums[CIFAR10.meta["filename"]]},
        },
    )


def download_archive(root: Path, url: str | None = None, md5: Mapping[str, str] | None = None) -> None:
    """Fetch the python archive from ``url`` (None: the official one) into ``root``, check its md5 sums and unpack
    it. Everything happens in a hidden staging folder inside ``root`` that is renamed into place only once checked,
    and removed on any failure: a corrupt or interrupted download never leaves something a later run would read
    as data. With no network it fails within DOWNLOAD_TIMEOUT_S, with how to provide the data instead."""
    from torchvision.datasets.utils import calculate_md5, check_integrity, download_url, extract_archive

    dataset = archive_dataset(md5)
    url = url or dataset.url
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".cifar10-download-", dir=root))
    except OSError as err:
        raise DataError(f"cannot download CIFAR-10 into {str(root)!r} ({err}). " + how_to_provide(root)) from err
    try:
        previous_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # torchvision's urlopen has none: a dead network would hang
        try:
            download_url(url, str(staging), dataset.filename)  # no md5 here: checked below, naming the mismatch
        except Exception as err:  # noqa: BLE001 - any network failure becomes one actionable message
            raise DataError(f"could not download CIFAR-10 from {url} ({err}). " + how_to_provide(root)) from err
        finally:
            socket.setdefaulttimeout(previous_timeout)
        actual = calculate_md5(str(staging / dataset.filename))
        if actual != dataset.tgz_md5:
            raise DataError(
                f"{url}: md5 mismatch, the download's md5 is {actual}, not {dataset.tgz_md5} (a corrupt download, "
                f"or not the CIFAR-10 python archive); nothing was kept under {root}"
            )
        try:
            extract_archive(str(staging / dataset.filename), str(staging))
        except (tarfile.TarError, EOFError, OSError) as err:  # only an archive checked against data.md5 gets here
            raise DataError(f"{url}: the downloaded archive cannot be unpacked ({err})") from err
        files = [*dataset.train_list, *dataset.test_list, [dataset.meta["filename"], dataset.meta["md5"]]]
        for name, expected in files:
            if not check_integrity(str(staging / ARCHIVE_DIR / name), expected):
                raise DataError(f"{url}: {ARCHIVE_DIR}/{name} in the archive is missing or fails its md5 {expected}")
        try:
            (staging / ARCHIVE_DIR).rename(root / ARCHIVE_DIR)
        except OSError:
            if not (root / ARCHIVE_DIR).is_dir():  # else another process (a parallel job) was first: keep its copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_archive(root: Path, split: str, md5: Mapping[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The python archive, through torchvision (which checks the published md5 sums, or ``md5``)."""
    try:
        ds = archive_dataset(md5)(str(root), train=split == "train", download=False)
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
