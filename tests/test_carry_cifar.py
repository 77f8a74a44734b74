"""scripts/carry_cifar.py: the packed data set comes back bit for bit, and a missing part is refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cifar_lit.data.cache import load_split, sha256
from tests.conftest import load_script, write_image_folder

carry = load_script("carry_cifar")


@pytest.mark.parametrize("kind", ["noise", "smooth", "extremes"])
def test_encode_decode_is_lossless(kind):
    rng = np.random.default_rng(0)
    if kind == "noise":
        images = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    elif kind == "smooth":  # what the predictor is for: small residuals
        ramp = np.add.outer(np.arange(32), np.arange(32))[None, :, :, None] * 4
        images = ((ramp + rng.integers(0, 3, (7, 32, 32, 3))) % 256).astype(np.uint8)
    else:  # 0/255 edges, where the clipped prediction and the modular residual must wrap correctly
        images = (rng.integers(0, 2, (7, 32, 32, 3)) * 255).astype(np.uint8)
    assert np.array_equal(carry.decode(carry.encode(images)), images)


def test_pack_unpack_rebuilds_the_cache(tmp_path):
    source = write_image_folder(tmp_path / "source", {"train": 6, "test": 3})
    carry.pack(str(source), str(tmp_path / "packed"), parts=3, cache_dir=str(tmp_path / "cache"))
    train, train_labels, _ = load_split(source, "train", None)
    test, test_labels, _ = load_split(source, "test", None)
    expected = {"train": sha256(train), "test": sha256(test)}
    parts = [tmp_path / f"p{i}" for i in range(3)]
    for i, part in enumerate(parts):  # one folder a part, as each is carried by its own call
        part.mkdir()
        shutil.copy(tmp_path / "packed" / f"part{i}.xz", part)
    shutil.copy(tmp_path / "packed" / "labels.npz", parts[-1])

    target = tmp_path / "target"
    carry.unpack([str(p) for p in parts], str(target), str(tmp_path / "cache2"), expected)
    rebuilt, rebuilt_labels, _ = load_split(target, "train", tmp_path / "cache2")  # from the cache: folders are empty
    assert np.array_equal(rebuilt, train) and np.array_equal(rebuilt_labels, train_labels)
    rebuilt, rebuilt_labels, _ = load_split(target, "test", tmp_path / "cache2")
    assert np.array_equal(rebuilt, test) and np.array_equal(rebuilt_labels, test_labels)

    with pytest.raises(SystemExit, match="do not match the published SHA-256"):
        carry.unpack([str(p) for p in parts[1:]], str(tmp_path / "t2"), str(tmp_path / "cache3"), expected)


def test_fake_data_is_read_as_the_image_folder(tmp_path):
    carry.fake(str(tmp_path / "root"), str(tmp_path / "cache"), sizes={"train": 20, "test": 10})
    images, labels, _ = load_split(tmp_path / "root", "train", tmp_path / "cache")
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8 and labels.tolist() == list(range(10)) * 2
    assert load_split(tmp_path / "root", "test", tmp_path / "cache")[0].shape == (10, 32, 32, 3)
