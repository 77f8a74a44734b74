"""cifar_lit.eval: confusion matrix and per-class accuracy files, normalised as the checkpoint was trained."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cifar_lit.data.cache import load_split
from cifar_lit.data.datamodule import CIFAR10DataModule, channel_stats
from cifar_lit.data.inference import DATAMODULE_KEY
from cifar_lit.data.source import CLASSES
from cifar_lit.eval import evaluate
from cifar_lit.reporting.confusion import CONFUSION_CSV, CONFUSION_PNG, PER_CLASS_CSV
from cifar_lit.training.checkpoint import read_checkpoint
from tests.conftest import compose_train, read_rows, run_cli, synthetic_overrides

TEST_IMAGES_PER_CLASS = 10  # conftest.synthetic_root


def test_eval_writes_confusion_matrix_and_per_class_accuracy(tiny_checkpoint, synthetic_root, tmp_path):
    result = run_cli(
        "eval",
        f"ckpt_path={tiny_checkpoint}",
        f"hydra.run.dir={tmp_path}",
        "seed=null",  # allowed as in training: evaluation draws nothing from it, but must not trip over it
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (CONFUSION_CSV, PER_CLASS_CSV, CONFUSION_PNG):
        assert str(tmp_path / name) in result.stdout  # it says where it wrote them
    with Image.open(tmp_path / CONFUSION_PNG) as png:
        assert png.format == "PNG" and png.width > 100 and png.height > 100
        png.load()

    rows = read_rows(tmp_path / CONFUSION_CSV)
    assert rows[0][1:] == list(CLASSES) and [row[0] for row in rows[1:]] == list(CLASSES)
    counts = torch.tensor([[int(cell) for cell in row[1:]] for row in rows[1:]])
    assert counts.sum(dim=1).tolist() == [TEST_IMAGES_PER_CLASS] * len(CLASSES)  # rows are the true classes
    accuracy = counts.diag().sum().item() / counts.sum().item()
    assert f"{accuracy:.4f}" in result.stdout  # the matrix agrees with the printed test/acc

    per_class = read_rows(tmp_path / PER_CLASS_CSV)
    assert per_class[0] == ["class", "correct", "images", "accuracy"]
    for name, row, (cls, correct, images, acc) in zip(CLASSES, counts.tolist(), per_class[1:], strict=True):
        assert (cls, int(correct), int(images)) == (name, row[CLASSES.index(name)], TEST_IMAGES_PER_CLASS)
        assert float(acc) == pytest.approx(int(correct) / TEST_IMAGES_PER_CLASS)


def test_checkpoint_carries_the_training_normalisation(tiny_checkpoint, synthetic_root, tmp_path):
    stored = read_checkpoint(tiny_checkpoint)[DATAMODULE_KEY]
    mean, std = channel_stats(load_split(synthetic_root, "train", None)[0])
    torch.testing.assert_close(torch.tensor(stored["mean"]), mean)
    torch.testing.assert_close(torch.tensor(stored["std"]), std)

    datamodule = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), val_size=100)
    datamodule.load_state_dict({"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    datamodule.setup()  # keeps the restored statistics: they are what the model was trained with
    assert datamodule.mean.tolist() == [0.5] * 3 and datamodule.std.tolist() == [0.25] * 3


def test_eval_normalises_with_the_checkpoint_statistics(tiny_checkpoint, synthetic_root, tmp_path):
    """A checkpoint whose stored statistics differ gives another test loss: eval uses them, not recomputed ones."""
    checkpoint = read_checkpoint(tiny_checkpoint)
    checkpoint[DATAMODULE_KEY] = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    torch.save(checkpoint, tmp_path / "other_stats.ckpt")
    losses = []
    for ckpt in (tiny_checkpoint, tmp_path / "other_stats.ckpt"):
        out = tmp_path / ckpt.stem
        overrides = [
            f"ckpt_path={ckpt}",
            *synthetic_overrides(synthetic_root, tmp_path / "cache"),
            "trainer.precision=32",
        ]
        cfg = compose_train(overrides, output_dir=out, config_name="eval")
        losses.append(evaluate(cfg)["test/loss"])
        assert (out / CONFUSION_CSV).is_file()
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
