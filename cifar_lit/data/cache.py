"""The decoded-split cache: each split is decoded once into ``.npz`` files with a SHA-256 of their contents and a
fingerprint of the source files, so a later run loads in about a second and a corrupted or stale cache is noticed
and rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar_lit.data.source import ARCHIVE_DIR, CLASSES, download_archive, find_layout, read_archive, read_image_folder

log = logging.getLogger(__name__)


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


def load_split(
    root: str | Path,
    split: str,
    cache_dir: str | Path | None,
    download: bool = False,
    download_url: str | None = None,
    md5: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, SplitSource]:
    """Decoded (images uint8 (N, 32, 32, 3), labels int64 (N,)) of 'train' or 'test', through the cache, and
    where they came from. With ``download``, a ``root`` that holds neither layout first gets the python archive
    from ``download_url`` (None: the official one), checked against ``md5`` (None: the published sums)."""
    root = Path(root)
    if not (root / ARCHIVE_DIR).is_dir() and not (root / "train").is_dir() and download:
        download_archive(root, download_url, md5)
    layout = find_layout(root)
    if cache_dir is None:
        images, labels = read_archive(root, split, md5) if layout == "archive" else read_image_folder(root, split)
        return images, labels, SplitSource(layout)
    path = cache_file(Path(cache_dir), root, split)
    fingerprint = source_fingerprint(root, split, layout)
    cached = load_cached(path, fingerprint) if path.exists() else None
    if cached is not None:
        images, labels, checksum = cached
    else:
        images, labels = read_archive(root, split, md5) if layout == "archive" else read_image_folder(root, split)
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
