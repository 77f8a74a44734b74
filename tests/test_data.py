"""Reading, caching and splitting CIFAR-10; errors that name the bad file; the data root, seed and overfit settings
through the real command line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_lit.data import datamodule as data
from cifar_lit.data.cache import cache_file, describe_split, load_split
from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.data.source import CLASSES
from cifar_lit.errors import DataError
from cifar_lit.hydra_ext.instantiate import instantiate
from tests.conftest import (
    IMAGE_DAMAGE,
    REAL_DATA,
    TINY_BLOCKS,
    broken_copy,
    compose_train,
    empty_ship_folder,
    run_cli,
    synthetic_overrides,
)


def test_image_folder_reads_in_cifar_order(synthetic_root, tmp_path):
    images, labels, _ = load_split(synthetic_root, "train", tmp_path / "cache")
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
    before, _, _ = load_split(root, "test", tmp_path / "cache")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "test" / "airplane" / "airplane_0000.png")
    after, _, _ = load_split(root, "test", tmp_path / "cache")
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
    real = data.load_split
    monkeypatch.setattr(data, "load_split", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
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


def test_subset_is_drawn_with_split_seed(synthetic_root, tmp_path):
    def subset_of(split_seed: int) -> np.ndarray:
        dm = CIFAR10DataModule(
            root=str(synthetic_root), cache_dir=str(tmp_path), val_size=0, subset=50, split_seed=split_seed
        )
        dm.setup("fit")
        return dm.splits["train"][0]

    # val_size=0: every training image is a candidate whatever split_seed, so only the subset's draw can differ
    assert np.array_equal(subset_of(1), subset_of(1))
    assert not np.array_equal(subset_of(0), subset_of(1))


def test_data_root_is_the_given_one_else_cifar10_root_else_data(monkeypatch, tmp_path):
    def root(*overrides: str) -> Path:
        return instantiate(compose_train(list(overrides), output_dir=tmp_path).data).root

    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    assert root() == Path("data")
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "env"))
    assert root() == tmp_path / "env"
    assert root(f"data.root={tmp_path / 'given'}") == tmp_path / "given"


def train_cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m cifar_lit.train`` in a fresh process (no seed left in the environment by an earlier test)."""
    env = {k: v for k, v in os.environ.items() if k != "PL_GLOBAL_SEED"} | {"CUDA_VISIBLE_DEVICES": ""}
    return run_cli("train", *overrides, f"hydra.run.dir={run_dir}", env=env)


def epoch_lines(run_dir: Path) -> list[str]:
    """The per-epoch metric lines of train.log, without their timestamps and durations."""
    lines = (run_dir / "train.log").read_text().splitlines()
    return [re.sub(r" \(\d+ s\)$", "", line.split(" - ", 1)[1]) for line in lines if "epoch_log" in line]


@pytest.mark.slow
def test_seed_null_draws_a_logged_seed_that_repeats_the_run(synthetic_root, tmp_path):
    tiny = [f"model.blocks={TINY_BLOCKS}", "trainer.max_epochs=1", "test=false", "callbacks.progress_bar=null"]
    tiny += ["data.augment.flip=true", "data.augment.crop_padding=2"]  # the data's draws follow the seed too
    tiny += synthetic_overrides(synthetic_root, tmp_path / "cache")
    drawn = train_cli(tmp_path / "drawn", "seed=null", *tiny)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    seed = int(re.search(r"seed=null: drew seed (\d+)", (tmp_path / "drawn" / "train.log").read_text())[1])
    assert json.loads((tmp_path / "drawn" / "run.json").read_text())["seed"] == seed
    again = train_cli(tmp_path / "again", f"seed={seed}", *tiny)
    assert again.returncode == 0, again.stderr[-3000:]
    assert epoch_lines(tmp_path / "again") == epoch_lines(tmp_path / "drawn") != []


@pytest.mark.slow
def test_fast94_can_be_overfitted(synthetic_root, tmp_path):
    """debug=overfit on an experiment without a validation split (fast94: val_size 0, monitor test/acc) runs with its
    alternating flip (resident loader) and measures the gap on held-out training images, not on the test set."""
    small = "[{in_channels:24,out_channels:8,pool:true},{in_channels:8,out_channels:8,pool:true}]"
    overrides = ["experiment=fast94", "debug=overfit", f"model.blocks={small}", "trainer.max_epochs=2"]
    overrides += ["callbacks.progress_bar=null", *synthetic_overrides(synthetic_root, tmp_path / "cache")]
    result = train_cli(tmp_path / "run", *overrides, "data.batch_size=16")
    assert result.returncode == 0, result.stderr[-3000:]
    logged = epoch_lines(tmp_path / "run")
    assert len(logged) == 2 and all("val/acc" in line and "test/" not in line for line in logged)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["metrics"].keys() == {"val/acc_best"}
    for experiment in ("fast94", "seed_two_blocks"):  # both train on all 50,000 images; the latter tests every epoch
        cfg = compose_train([f"experiment={experiment}", "debug=overfit"], output_dir=tmp_path)
        assert instantiate(cfg.data).eval_splits == ["val"]


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
    test_images, test_labels, _ = load_split(REAL_DATA, "test", cache)
    assert test_images.shape == (10000, 32, 32, 3)
    assert hashlib.sha256(test_images.tobytes()).hexdigest().startswith("52a9dc125982c044")
    assert hashlib.sha256(test_labels.tobytes()).hexdigest().startswith("c5575395e636cadc")
    assert np.bincount(test_labels).tolist() == [1000] * 10
    dm = CIFAR10DataModule(root=str(REAL_DATA), cache_dir=str(cache), subset=1000, val_size=5000)
    dm.setup("fit")
    np.testing.assert_allclose(dm.mean.numpy(), [0.4914, 0.4822, 0.4465], atol=1e-3)
    np.testing.assert_allclose(dm.std.numpy(), [0.2470, 0.2435, 0.2616], atol=1e-3)
    assert np.bincount(dm.splits["train"][1]).tolist() == [100] * 10
