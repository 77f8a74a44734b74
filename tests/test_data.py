"""Reading, caching and splitting CIFAR-10; errors that name the bad file."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_lit.data import datamodule as data
from cifar_lit.data.cache import cache_file, describe_split, load_split
from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.data.source import CLASSES
from cifar_lit.errors import DataError
from tests.conftest import IMAGE_DAMAGE, REAL_DATA, broken_copy, empty_ship_folder


def test_image_folder_reads_in_cifar_order(synthetic_root, tmp_path):
    images, labels = load_split(synthetic_root, "train", tmp_path / "cache")
    assert images.shape == (400, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [c for c in range(10) for _ in range(40)]
    first = np.asarray(Image.open(synthetic_root / "train" / "airplane" / "airplane_0000.png"))
    np.testing.assert_array_equal(images[0], first)


def test_split_counts_are_reported(synthetic_root, tmp_path, caplog):
    with caplog.at_level("INFO", logger="cifar_lit.data"):
        load_split(synthetic_root, "test", tmp_path / "cache")
    assert "test: 100 images, 10 per class" in caplog.text
    uneven = describe_split("train", np.array([0, 0, 1, 9]))
    counts = [2, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert uneven == "train: 4 images, " + ", ".join(f"{n} {c}" for n, c in zip(CLASSES, counts, strict=True))


def test_cache_is_reused_and_rebuilt_when_corrupt(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    first = load_split(synthetic_root, "test", cache)
    path = cache_file(cache, synthetic_root, "test")
    assert path.exists()
    with np.load(path) as stored:  # tamper with the images but keep the stored checksum
        fields = {key: stored[key].copy() for key in stored.files}
    fields["images"][0, 0, 0, 0] ^= 0xFF
    np.savez(path, **fields)
    again = load_split(synthetic_root, "test", cache)
    np.testing.assert_array_equal(again[0], first[0])  # rebuilt from the source, not the tampered cache


def test_cache_is_rebuilt_when_the_source_changes(synthetic_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_root / "test", root / "test")
    shutil.copytree(synthetic_root / "train", root / "train")
    before, _ = load_split(root, "test", tmp_path / "cache")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "test" / "airplane" / "airplane_0000.png")
    after, _ = load_split(root, "test", tmp_path / "cache")
    assert not np.array_equal(before[0], after[0]) and after[0, 0, 0].tolist() == [1, 2, 3]


def test_datamodule_splits_and_normalises(synthetic_root, tmp_path):
    dm = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), batch_size=16, val_size=100)
    dm.setup("fit")
    assert len(dm.splits["train"][1]) == 300 and len(dm.splits["val"][1]) == 100
    assert len(dm.splits["test"][1]) == 100
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    everything = torch.cat([b[0] for b in dm._loader("train", train=False)])
    assert everything.mean().abs() < 0.15  # normalised with the training mean/std (val excluded, hence not 0)
    assert dm.eval_splits == ["val"]


def test_setup_reuses_what_prepare_data_decoded(synthetic_root, tmp_path, monkeypatch):
    calls = []
    real = data.load_split_with_source
    monkeypatch.setattr(data, "load_split_with_source", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    dm = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), val_size=100)
    dm.prepare_data()
    dm.setup("fit")
    assert calls == ["train", "test"]  # each split read once, not again by setup
    assert len(dm.splits["train"][1]) == 300 and dm.sources["test"].sha256 is not None
    other_rank = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), val_size=100)
    other_rank.setup("fit")  # no prepare_data in this process (a DDP rank > 0): reads through the cache
    assert calls[2:] == ["train", "test"] and other_rank.sources == dm.sources


def test_balanced_subset(synthetic_root, tmp_path):
    dm = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), val_size=0, subset=50)
    dm.setup("fit")
    assert np.bincount(dm.splits["train"][1]).tolist() == [5] * 10
    assert dm.eval_splits == ["test"]  # no validation split: the test set is evaluated each epoch instead


def test_missing_data_says_how_to_provide_it(tmp_path):
    with pytest.raises(DataError, match=r"(?s)no CIFAR-10 found.*official python archive.*data.root"):
        load_split(tmp_path / "nowhere", "train", tmp_path / "cache")


def test_missing_class_folder_is_named(synthetic_root, tmp_path):
    root = broken_copy(synthetic_root, tmp_path, lambda root: shutil.rmtree(root / "train" / "frog"))
    with pytest.raises(DataError, match="frog"):
        load_split(root, "train", None)


def test_empty_class_folder_is_named(synthetic_root, tmp_path):
    root = broken_copy(synthetic_root, tmp_path, empty_ship_folder)
    with pytest.raises(DataError, match="ship.*empty"):
        load_split(root, "test", None)


@pytest.mark.parametrize("kind", IMAGE_DAMAGE)
def test_bad_image_file_is_named(synthetic_root, tmp_path, kind):
    root = broken_copy(synthetic_root, tmp_path, IMAGE_DAMAGE[kind])
    with pytest.raises(DataError, match="cat_0003.png"):
        load_split(root, "test", None)


@pytest.mark.skipif(not (REAL_DATA / "train").is_dir(), reason="real CIFAR-10 image folder not present")
def test_real_cifar10_matches_published_checksums(tmp_path_factory):
    """The full real set decodes to the arrays whose SHA-256 the data README publishes (cache outside the source)."""
    cache = tmp_path_factory.getbasetemp() / "real_cache"
    test_images, test_labels = load_split(REAL_DATA, "test", cache)
    assert test_images.shape == (10000, 32, 32, 3)
    assert hashlib.sha256(test_images.tobytes()).hexdigest().startswith("52a9dc125982c044")
    assert hashlib.sha256(test_labels.tobytes()).hexdigest().startswith("c5575395e636cadc")
    assert np.bincount(test_labels).tolist() == [1000] * 10
    dm = CIFAR10DataModule(root=str(REAL_DATA), cache_dir=str(cache), subset=1000, val_size=5000)
    dm.setup("fit")
    np.testing.assert_allclose(dm.mean.numpy(), [0.4914, 0.4822, 0.4465], atol=1e-3)
    np.testing.assert_allclose(dm.std.numpy(), [0.2470, 0.2435, 0.2616], atol=1e-3)
    assert np.bincount(dm.splits["train"][1]).tolist() == [100] * 10
