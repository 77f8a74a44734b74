"""Carry the decoded CIFAR-10 to a machine that has no copy of it (a lent GPU machine), in parts that fit a
size-limited transfer, and rebuild the project's data cache there without changing one byte.

    python scripts/carry_cifar.py pack ROOT OUT_DIR [--parts 3]   here: OUT_DIR/part{i}.xz + labels.npz
    python scripts/carry_cifar.py unpack PART_DIRS... --root DIR  there: DIR/{train,test}/<class>/ + data/cache
    python scripts/carry_cifar.py fake --root DIR                 random images of the same sizes (timing only)

Lossless: each image plane is replaced by its residual against the gradient predictor (left + up - up-left, the
idea of PNG's filters) and xz-compressed: about 0.66 of the raw 184 MB. ``unpack`` inverts the predictor, checks
the SHA-256 of the arrays against the published ones (../shared/data/README.md) and writes the cache file that
``cifar_lit.data.cache`` would have written for an image folder at ``--root``; the class folders it creates stay empty,
so nothing is ever decoded from them (the cache's fingerprint is that of the empty folders).
"""

from __future__ import annotations

import argparse
import lzma
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from cifar_lit.data.cache import cache_file, load_split, save_cache, sha256, source_fingerprint
from cifar_lit.data.source import CLASSES

PUBLISHED_SHA256 = {  # ../shared/data/README.md: uint8 (N, 32, 32, 3) images sorted by class folder then name
    "train": "61bea91e73ac2b02dfb856e685981dce64abe13d4e780aa98a1ac1e7c056d03b",
    "test": "52a9dc125982c0440d5eed87474b2f521e96c45a98df08e4329aa42c692b9d9d",
}


def predict(planes: np.ndarray) -> np.ndarray:
    """Gradient predictor of every pixel from its left, upper and upper-left neighbours (int16, same shape)."""
    p = planes.astype(np.int16)
    guess = np.zeros_like(p)
    guess[..., 1:, 1:] = (p[..., 1:, :-1] + p[..., :-1, 1:] - p[..., :-1, :-1]).clip(0, 255)
    guess[..., 0, 1:] = p[..., 0, :-1]
    guess[..., 1:, 0] = p[..., :-1, 0]
    return guess


def encode(images: np.ndarray) -> bytes:
    planes = images.transpose(0, 3, 1, 2)
    residual = ((planes.astype(np.int16) - predict(planes)) % 256).astype(np.uint8)
    return lzma.compress(residual.tobytes(), preset=6)


def decode(blob: bytes) -> np.ndarray:
    """Inverse of encode: pixels rebuilt row by row (each needs its already rebuilt neighbours)."""
    residual = np.frombuffer(lzma.decompress(blob), dtype=np.uint8).reshape(-1, 3, 32, 32).astype(np.int16)
    p = np.zeros_like(residual)
    p[..., 0, :] = np.cumsum(residual[..., 0, :], axis=-1) % 256  # first row: left neighbour only
    for row in range(1, 32):
        p[..., row, 0] = (p[..., row - 1, 0] + residual[..., row, 0]) % 256
        for col in range(1, 32):
            guess = (p[..., row, col - 1] + p[..., row - 1, col] - p[..., row - 1, col - 1]).clip(0, 255)
            p[..., row, col] = (guess + residual[..., row, col]) % 256
    return p.astype(np.uint8).transpose(0, 2, 3, 1).copy()


def pack(root: str, out_dir: str, parts: int, cache_dir: str) -> None:
    train, train_labels, _ = load_split(root, "train", cache_dir)
    test, test_labels, _ = load_split(root, "test", cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "labels.npz", train=train_labels, test=test_labels)
    chunks = np.array_split(np.concatenate([train, test]), parts)
    with ProcessPoolExecutor(2) as pool:
        for i, blob in enumerate(pool.map(encode, chunks)):
            (out / f"part{i}.xz").write_bytes(blob)
            print(f"part{i}.xz: {len(chunks[i])} images, {len(blob) / 2**20:.1f} MiB", flush=True)


def unpack(part_dirs: list[str], root: str, cache_dir: str, expected: dict[str, str] = PUBLISHED_SHA256) -> None:
    files = sorted((f for d in part_dirs for f in Path(d).glob("part*.xz")), key=lambda f: int(f.stem[4:]))
    labels_files = [f for d in part_dirs for f in Path(d).glob("labels.npz")]
    if not files or not labels_files:
        raise SystemExit(f"{part_dirs}: expected part*.xz files and one labels.npz (written by `pack`)")
    labels_file = labels_files[0]
    with ProcessPoolExecutor(len(files)) as pool:
        images = np.concatenate(list(pool.map(decode, [f.read_bytes() for f in files])))
    with np.load(labels_file) as labels:
        splits = {"train": labels["train"], "test": labels["test"]}
    start = 0
    for split, split_labels in splits.items():
        split_images = images[start : start + len(split_labels)]
        start += len(split_labels)
        if sha256(split_images) != expected[split]:
            raise SystemExit(f"{split}: rebuilt images do not match the published SHA-256 (a part is missing?)")
        write_split(root, cache_dir, split, split_images, split_labels)
        print(f"{split}: {len(split_images)} images, SHA-256 matches the published one", flush=True)


def write_split(root: str, cache_dir: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """The cache file of an image folder at ``root`` holding ``images``; the folder's class folders stay empty."""
    for name in CLASSES:
        (Path(root) / split / name).mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint(Path(root), split, "folder")
    save_cache(cache_file(Path(cache_dir), Path(root), split), images, labels, fingerprint)


def fake(root: str, cache_dir: str, sizes: dict[str, int] = {"train": 50_000, "test": 10_000}) -> None:  # noqa: B006
    """Random images of CIFAR-10's shapes and sizes, for timing where the real ones are not (yet) there."""
    rng = np.random.default_rng(0)
    for split, size in sizes.items():
        images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        write_split(root, cache_dir, split, images, np.arange(size) % len(CLASSES))
        print(f"{split}: {size} random images (timing only)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("root")
    p.add_argument("out_dir")
    p.add_argument("--parts", type=int, default=3)
    u = sub.add_parser("unpack")
    u.add_argument("part_dirs", nargs="+")
    u.add_argument("--root", required=True)
    f = sub.add_parser("fake", help="random images of CIFAR-10's sizes in the cache (timing without the data)")
    f.add_argument("--root", required=True)
    for q in (p, u, f):
        q.add_argument("--cache-dir", default="data/cache")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.root, args.out_dir, args.parts, args.cache_dir)
    elif args.command == "fake":
        fake(args.root, args.cache_dir)
    else:
        unpack(args.part_dirs, args.root, args.cache_dir)


if __name__ == "__main__":
    main()
