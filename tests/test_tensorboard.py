"""What a run shows in TensorBoard beyond scalars (gate histograms, confusion matrix, misclassified images), and a
real TensorBoard server serving a run's val/acc as the event files hold it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from cifar_lit.callbacks import tensorboard_extras
from cifar_lit.callbacks.tensorboard_extras import TensorBoardExtras, denormalize
from cifar_lit.data.augment import normalize
from cifar_lit.hydra_ext.instantiate import build_module, instantiate
from cifar_lit.training.tta import shift
from tests.conftest import (
    CLI_ENV,
    SMALL_BLOCKS,
    TINY_BLOCKS,
    compose_train,
    load_events,
    run_training,
    scalars,
    synthetic_overrides,
)

VAL_SIZE, BRANCHES, EPOCHS = 60, 2, 2


@pytest.fixture(scope="module")
def tiny_run(synthetic_root, tmp_path_factory) -> Path:
    """Two epochs of a two-block, K=2 network, then the final test: every TensorBoard view gets written."""
    return run_training(
        tmp_path_factory.mktemp("tiny_run"),
        f"trainer.max_epochs={EPOCHS}",
        f"model.blocks={SMALL_BLOCKS}",
        f"model.num_branches={BRANCHES}",
        *synthetic_overrides(synthetic_root, tmp_path_factory.mktemp("cache")),
        f"data.val_size={VAL_SIZE}",
    )


def test_denormalize_inverts_normalize():
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    mean, std = torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])
    x = normalize(images, mean, std, channels_last=True)
    restored = torch.stack([denormalize(image, mean, std) for image in x])
    torch.testing.assert_close(restored, images.float() / 255, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_gate_histograms_cover_every_branch_of_every_block_each_epoch(tiny_run):
    accumulator = load_events(tiny_run)
    tags = {f"gates/block{i}/branch{k}" for i in range(2) for k in range(BRANCHES)}
    assert tags <= set(accumulator.Tags()["histograms"])
    for tag in tags:
        per_epoch = [e.histogram_value for e in accumulator.Histograms(tag)]
        assert len(per_epoch) == EPOCHS
        for histogram in per_epoch:
            assert histogram.num == VAL_SIZE  # each validation image once; not the sanity check, not the test set
            assert 0 <= histogram.min <= histogram.max <= 1  # g = sigmoid


@pytest.mark.slow
def test_confusion_matrix_and_misclassified_images_for_val_and_test(tiny_run):
    accumulator = load_events(tiny_run)
    images = set(accumulator.Tags()["images"])
    for split in ("val", "test"):
        assert {f"{split}/confusion_matrix", f"{split}/misclassified"} <= images
        picture = accumulator.Images(f"{split}/confusion_matrix")[-1]
        assert picture.width > 300 and picture.height > 300
    assert "lr-RMSprop" in accumulator.Tags()["scalars"]  # LearningRateMonitor's, one per epoch
    assert len(scalars(tiny_run)["lr-RMSprop"]) == EPOCHS


def test_test_figures_show_the_plain_prediction_with_test_time_augmentation(synthetic_root, tmp_path, monkeypatch):
    """With tta the test step runs the network on mirrored and shifted views after the plain pass; the confusion
    matrix and misclassified images are of the plain prediction, the one the image shown gets."""
    figures: dict[str, list] = {"confusion": [], "wrong": []}
    real_confusion, real_wrong = tensorboard_extras.confusion_figure, tensorboard_extras.misclassified_figure

    def record_confusion(matrix, classes, split):
        figures["confusion"].append((split, matrix))
        return real_confusion(matrix, classes, split)

    def record_wrong(wrong, mean, std, split):
        figures["wrong"].append((split, wrong))
        return real_wrong(wrong, mean, std, split)

    monkeypatch.setattr(tensorboard_extras, "confusion_figure", record_confusion)
    monkeypatch.setattr(tensorboard_extras, "misclassified_figure", record_wrong)
    overrides = [f"model.blocks={TINY_BLOCKS}", "tta=flip_translate", *synthetic_overrides(synthetic_root, tmp_path)]
    cfg = compose_train(overrides)
    L.seed_everything(0)
    module, datamodule = build_module(cfg), instantiate(cfg.data)
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=TensorBoardLogger(tmp_path / "tensorboard"),
        callbacks=[TensorBoardExtras(max_images=1000, gate_histograms=False)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule)

    images, labels = datamodule.splits["test"]
    x = normalize(torch.from_numpy(images), datamodule.mean, datamodule.std, channels_last=False)
    module.eval()
    with torch.no_grad():
        plain = module(x).argmax(dim=1)
        last_view = module(shift(x, -1, -1).flip(-1)).argmax(dim=1)  # the last view flip_translate evaluates
    assert (plain != last_view).any(), "the views agree everywhere: nothing to tell them apart by"
    [(split, matrix)] = figures["confusion"]
    assert split == "test"
    assert torch.equal(matrix, module.confusion.compute().cpu())  # what test_step filled from the plain logits
    labels = torch.as_tensor(labels)
    assert int(matrix.sum()) == len(labels) and int(matrix.trace()) == int((plain == labels).sum())
    [(split, wrong)] = figures["wrong"]
    shown = sorted((true, pred) for _, true, pred in wrong)
    assert shown == sorted((int(t), int(p)) for t, p in zip(labels, plain, strict=True) if t != p)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_tensorboard_server_serves_the_logged_val_acc(tiny_run, tmp_path):
    expected = scalars(tiny_run)["val/acc"]
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(tiny_run), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--reload_interval", "1"]
    log = tmp_path / "tensorboard.log"
    with log.open("w") as out:
        server = subprocess.Popen(cmd, env=CLI_ENV, stdout=out, stderr=subprocess.STDOUT)
    try:
        base, served = f"http://127.0.0.1:{port}", None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if server.poll() is not None:
                message = log.read_text()
                if "could not bind" in message.lower() or "address already in use" in message.lower():
                    pytest.skip(f"tensorboard could not bind 127.0.0.1:{port}: {message[-300:]}")
                pytest.fail(f"tensorboard exited with {server.returncode}: {message[-3000:]}")
            try:
                runs = get_json(f"{base}/data/runs")
                if "tensorboard" in runs:
                    served = get_json(f"{base}/data/plugin/scalars/scalars?run=tensorboard&tag=val/acc")
                    if len(served) == len(expected):
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or still loading
            time.sleep(0.5)
        assert served is not None, f"no run 'tensorboard' served in 90 s: {log.read_text()[-3000:]}"
        assert [value for _, _, value in served] == pytest.approx(expected, rel=1e-6)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
