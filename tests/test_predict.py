"""cifar_lit.predict: image files of any size and mode, normalised exactly as in training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_lit.data.datamodule import CIFAR10DataModule
from cifar_lit.data.inference import DATAMODULE_KEY, load_image, training_normalisation
from cifar_lit.data.source import CLASSES, list_image_folder
from cifar_lit.errors import CheckpointError, ConfigError
from cifar_lit.predict import find_inputs, predict, predict_files
from cifar_lit.training.checkpoint import load_module, read_checkpoint
from tests.conftest import compose_train, read_csv, run_cli, synthetic_overrides


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Good images of other sizes and modes (one in a subfolder), a text file named bad.png, a non-image file."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 4), dtype=np.uint8), mode="RGBA").save(folder / "rgba_64x48.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), mode="L").save(folder / "gray_20x20.jpg")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "sub" / "rgb_32x32.bmp")
    (folder / "bad.png").write_text("not an image")
    (folder / "notes.txt").write_text("not an image either, and not named like one: ignored")
    return folder


def test_predict_cli_classifies_every_readable_image_and_names_the_bad_one(tiny_checkpoint, mixed_folder, tmp_path):
    output = tmp_path / "predictions.csv"
    result = run_cli(
        "predict",
        f"ckpt_path={tiny_checkpoint}",
        f"inputs={mixed_folder}",
        "topk=10",
        f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bad.png" in result.stdout + result.stderr and "predictions (4 files)" in result.stdout
    rows = {Path(row["file"]).name: row for row in read_csv(output)}
    assert set(rows) == {"rgba_64x48.png", "gray_20x20.jpg", "rgb_32x32.bmp", "bad.png"}
    assert rows["bad.png"]["error"] and not rows["bad.png"]["class"]

    module = load_module(tiny_checkpoint).eval()
    normalisation = training_normalisation(tiny_checkpoint, data=None)
    for name in ("rgba_64x48.png", "gray_20x20.jpg", "rgb_32x32.bmp"):
        row = rows[name]
        assert not row["error"]
        classes = [row["class"], *(row[f"class_{k}"] for k in range(2, 11))]
        probs = [float(row["probability"]), *(float(row[f"probability_{k}"]) for k in range(2, 11))]
        assert sorted(classes) == sorted(CLASSES) and probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
        # the module's own answer on the same preprocessed image
        file = next(mixed_folder.rglob(name))
        x = normalisation(torch.from_numpy(load_image(file)[None]))
        with torch.no_grad():
            assert row["class"] == CLASSES[module(x).argmax(dim=1).item()]


def test_predictions_equal_the_model_on_training_batches(tiny_checkpoint, synthetic_root, tmp_path):
    """32x32 PNGs through predict give the same probabilities as the test batches training's loader makes."""
    files = [path for path, _ in list_image_folder(synthetic_root / "test")]
    module = load_module(tiny_checkpoint).eval()
    normalisation = training_normalisation(tiny_checkpoint, data=None)
    predictions = predict_files(module, normalisation, files, topk=1, batch_size=64)  # batches unlike the loader's

    datamodule = CIFAR10DataModule(root=str(synthetic_root), cache_dir=str(tmp_path), val_size=100)
    datamodule.setup()
    with torch.no_grad():
        probs = torch.cat([module(x).softmax(dim=1) for x, _ in datamodule.test_dataloader()])
    assert [p.classes[0] for p in predictions] == [CLASSES[i] for i in probs.argmax(dim=1).tolist()]
    torch.testing.assert_close(torch.tensor([p.probabilities[0] for p in predictions]), probs.max(dim=1).values)


def test_old_checkpoint_recomputes_the_normalisation_from_the_training_set(tiny_checkpoint, synthetic_root, tmp_path):
    checkpoint = read_checkpoint(tiny_checkpoint)
    stored = checkpoint.pop(DATAMODULE_KEY)
    torch.save(checkpoint, tmp_path / "old.ckpt")
    data = compose_train(synthetic_overrides(synthetic_root, tmp_path / "cache")).data
    recomputed = training_normalisation(tmp_path / "old.ckpt", data)
    assert recomputed.mean == pytest.approx(stored["mean"]) and recomputed.std == pytest.approx(stored["std"])
    assert str(synthetic_root) in recomputed.source


def test_inputs_that_match_nothing_are_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    for inputs in (str(tmp_path / "nothing-*.png"), str(tmp_path / "empty")):
        with pytest.raises(ConfigError, match="matched no image files") as err:
            find_inputs(inputs)
        assert inputs in str(err.value)


def test_missing_checkpoint_and_bad_topk_are_named(mixed_folder, tmp_path):
    overrides = [f"ckpt_path={tmp_path / 'missing.ckpt'}", f"inputs={mixed_folder}"]
    with pytest.raises(CheckpointError, match="missing.ckpt"):
        predict(compose_train(overrides, output_dir=tmp_path, config_name="predict"))
    with pytest.raises(ConfigError, match="topk"):
        predict(compose_train([*overrides, "topk=11"], output_dir=tmp_path, config_name="predict"))
