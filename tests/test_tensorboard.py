"""What a run shows in TensorBoard beyond scalars (branch weights, confusion matrix, misclassified images, the
custom-scalars layout), and what a real TensorBoard server serves: a run's val/acc as the event files hold it, and
an lr x batch-size sweep whose HPARAMS and curves can be compared run against run."""

from __future__ import annotations

import json
import re
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
from cifar_lit.callbacks.provenance import RUN_FILE
from cifar_lit.callbacks.tensorboard_extras import TensorBoardExtras, denormalize
from cifar_lit.data.augment import normalize
from cifar_lit.hydra_ext.instantiate import build_module, instantiate
from cifar_lit.report import main as report_main
from cifar_lit.reporting.events import STEPS_PER_EPOCH_TAG, per_epoch_table, read_scalars
from cifar_lit.reporting.sweeps import summarize_job
from cifar_lit.training.tta import shift
from tests.conftest import (
    CLI_ENV,
    SMALL_BLOCKS,
    TINY_BLOCKS,
    compose_train,
    load_events,
    read_csv,
    run_cli,
    run_training,
    scalar_events,
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
def test_branch_weights_one_distribution_per_block_and_one_mean_per_branch_each_epoch(tiny_run):
    accumulator = load_events(tiny_run)
    assert set(accumulator.Tags()["histograms"]) == {f"weights/block{i}" for i in range(2)}
    logged = scalar_events(tiny_run)
    for i in range(2):
        per_epoch = [e.histogram_value for e in accumulator.Histograms(f"weights/block{i}")]
        assert [e.step for e in accumulator.Histograms(f"weights/block{i}")] == list(range(EPOCHS))
        for histogram in per_epoch:
            assert histogram.num == VAL_SIZE * BRANCHES  # each validation image once; no sanity check, no test set
            assert 0 <= histogram.min <= histogram.max <= 1  # g = sigmoid
        for k in range(BRANCHES):
            means = logged[f"weights/block{i}/branch{k}"]
            assert [step for step, _ in means] == list(range(EPOCHS))
            assert all(
                histogram.min <= mean <= histogram.max for (_, mean), histogram in zip(means, per_epoch, strict=True)
            )


@pytest.mark.slow
def test_confusion_matrix_and_misclassified_images_for_val_and_test(tiny_run):
    accumulator = load_events(tiny_run)
    images = set(accumulator.Tags()["images"])
    for split in ("val", "test"):
        assert {f"{split}/confusion_matrix", f"{split}/misclassified"} <= images
        picture = accumulator.Images(f"{split}/confusion_matrix")[-1]
        assert picture.width > 300 and picture.height > 300
    assert [step for step, _ in scalar_events(tiny_run)["train/lr-RMSprop"]] == list(range(EPOCHS))  # one per epoch


@pytest.mark.slow
def test_validating_twice_an_epoch_gives_each_validation_its_own_point(synthetic_root, tmp_path):
    """trainer.val_check_interval=0.5 validates half-way through each epoch and at its end: each validation gets
    its own step, in hundredths of an epoch (the same unit whatever the batch size, so a sweep's runs still line
    up), the training metrics stay one an epoch at its end, and the report's reader reads the steps as epochs."""
    run_dir = run_training(
        tmp_path / "run", f"trainer.max_epochs={EPOCHS}", "trainer.val_check_interval=0.5",
        f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    )  # fmt: skip
    logged = scalar_events(run_dir)
    halves = [50, 100, 150, 200]  # 10 batches an epoch, validated after the 5th and the 10th
    for tag in ("val/acc", "val/loss", "val/acc_best", "weights/block0/branch0"):
        assert [step for step, _ in logged[tag]] == halves, tag
    for tag in ("train/acc", "train/loss"):
        assert [step for step, _ in logged[tag]] == [100, 200], tag
    assert [step for step, _ in logged["train/lr-RMSprop"]] == [0, 100]  # each epoch's, where it starts
    events = load_events(run_dir)
    assert [event.step for event in events.Histograms("weights/block0")] == halves
    assert [event.step for event in events.Images("test/confusion_matrix")] == [200]
    assert [step for step, _ in logged["test/acc"]] == [200]  # the final test, after the last epoch
    assert logged["train/trained_epochs"] == [(200, EPOCHS)]
    assert logged[STEPS_PER_EPOCH_TAG] == [(0, 100)]  # the unit, for the readers

    table = per_epoch_table(read_scalars(run_dir))  # 0-based like an epoch axis (epoch e ends at e)
    assert table.values["val/acc"] == {step / 100 - 1: value for step, value in logged["val/acc"]}
    assert table.values["train/acc"] == {step / 100 - 1: value for step, value in logged["train/acc"]}
    assert summarize_job(run_dir).epochs == EPOCHS
    report_main([str(run_dir), "--out", str(tmp_path / "report")])
    shown = {row["epoch"] for row in read_csv(tmp_path / "report" / "table.csv")} - {""}
    assert shown and shown <= {"0.5", "1", "1.5", "2"}  # 1-based, as the tables show every run's epochs


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


# ------------------------------------------------------------------------------------------ a sweep compared
LRS, BATCH_SIZES = (0.002, 0.02), (16, 32)
RUNS = len(LRS) * len(BATCH_SIZES)


@pytest.fixture(scope="module")
def sweep_dir(synthetic_root, tmp_path_factory) -> Path:
    """A real 2x2 lr x batch-size sweep (python -m cifar_lit.train -m), two epochs each, then the test."""
    sweep = tmp_path_factory.mktemp("sweep")
    result = run_cli(
        "train", "-m", f"optimizer.lr={','.join(map(str, LRS))}", f"data.batch_size={','.join(map(str, BATCH_SIZES))}",
        f"trainer.max_epochs={EPOCHS}", f"model.blocks={TINY_BLOCKS}", "callbacks.progress_bar=null",
        *synthetic_overrides(synthetic_root, tmp_path_factory.mktemp("sweep_cache"))[:2], "data.val_size=100",
        "data.eval_batch_size=100", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep


class TensorBoardServer:
    """``python -m tensorboard.main`` on 127.0.0.1 over ``logdir``, its JSON API read with ``get``/``post``."""

    def __init__(self, logdir: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--reload_interval", "1"]
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(cmd, env=CLI_ENV, stdout=out, stderr=subprocess.STDOUT)

    def get(self, path: str):
        return get_json(self.base + path)

    def post(self, path: str, body: dict):
        request = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def wait_for(self, ready, seconds: float = 90):
        """``ready()``'s first true value, polled while the server starts and loads the event files."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = self.log.read_text()
                if "could not bind" in message.lower() or "address already in use" in message.lower():
                    pytest.skip(f"tensorboard could not bind 127.0.0.1:{self.port}: {message[-300:]}")
                pytest.fail(f"tensorboard exited with {self.process.returncode}: {message[-3000:]}")
            try:
                value = ready()
                if value:
                    return value
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet, or still loading
            time.sleep(0.5)
        pytest.fail(f"tensorboard served nothing usable in {seconds} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def tensorboard_server(tmp_path):
    servers = []

    def start(logdir: Path) -> TensorBoardServer:
        servers.append(TensorBoardServer(logdir, tmp_path / "tensorboard.log"))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.mark.slow
def test_tensorboard_server_serves_the_logged_val_acc(tiny_run, tensorboard_server):
    expected = scalars(tiny_run)["val/acc"]
    server = tensorboard_server(tiny_run)
    served = server.wait_for(
        lambda: (
            "tensorboard" in server.get("/data/runs")
            and server.get("/data/plugin/scalars/scalars?run=tensorboard&tag=val/acc")
        )
    )
    assert [value for _, _, value in served] == pytest.approx(expected, rel=1e-6)


def hparams_table(server: TensorBoardServer) -> tuple[dict, list[dict]]:
    """The HPARAMS tab's experiment (its columns) and its rows, one session group a run, every column included."""
    experiment = server.post("/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = [{"hparam": info["name"], "includeInResult": True} for info in experiment.get("hparamInfos", [])]
    columns += [{"metric": info["name"], "includeInResult": True} for info in experiment.get("metricInfos", [])]
    request = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"], "colParams": columns}
    groups = server.post("/data/plugin/hparams/session_groups", request | {"startIndex": 0, "sliceSize": 100})
    return experiment, groups.get("sessionGroups", [])


def loaded(table: tuple[dict, list[dict]]) -> tuple[dict, list[dict]] | None:
    """The table once the server has read every run's hparams and metrics (it loads the event files a while)."""
    rows = table[1]
    tested = [any(value["name"]["tag"] == "test/acc" for value in row.get("metricValues", [])) for row in rows]
    ready = len(rows) == RUNS and all(row.get("hparams") for row in rows) and all(tested)
    return table if ready else None


@pytest.mark.slow
def test_a_sweeps_hparams_and_epoch_curves_compare_run_against_run(sweep_dir, tensorboard_server):
    """What a person comparing the sweep in a browser gets: an HPARAMS row per run with the lr and batch size it
    varied and its metrics, no ``_target_`` or path column; curves that step by epoch whatever the batch size."""
    server = tensorboard_server(sweep_dir)
    experiment, groups = server.wait_for(lambda: loaded(hparams_table(server)))
    columns = {info["name"] for info in experiment["hparamInfos"]}
    assert {"lr", "batch_size", "optimizer", "K", "epochs", "seed"} <= columns
    # the two the sweep varies lead (TensorBoard shows differing columns first, the rest by name, the first few)
    assert [info["name"] for info in experiment["hparamInfos"][:2]] == ["batch_size", "lr"]
    assert [info["name"] for info in experiment["hparamInfos"] if info.get("differs")] == ["batch_size", "lr"]
    assert len(columns) < 30, sorted(columns)
    assert not [name for name in columns if "_target_" in name or "dir" in name or "root" in name]
    rows = groups  # one run a group: no two runs share all hparams
    for row in rows:
        assert not [value for value in row["hparams"].values() if isinstance(value, str) and "/" in value]
    assert sorted((row["hparams"]["lr"], row["hparams"]["batch_size"]) for row in rows) == sorted(
        (lr, batch) for lr in LRS for batch in BATCH_SIZES
    )
    metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
    assert {"val/acc_best", "val/acc", "test/acc", "train/trained_epochs", "train/wall_time_s"} <= metric_tags
    for row in rows:
        metrics = {value["name"]["tag"]: value["value"] for value in row["metricValues"]}
        assert metrics["train/trained_epochs"] == EPOCHS and metrics["train/wall_time_s"] > 0
        record = json.loads((sweep_dir / row["name"].split("/")[0] / RUN_FILE).read_text())
        assert metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"], rel=1e-6)

    runs = [run for run in server.get("/data/runs") if run.endswith("tensorboard")]
    assert len(runs) == len(rows)
    # the run list and HPARAMS' run column say which run is which: the job's number and the values it swept
    for row in rows:
        lr, batch_size = row["hparams"]["lr"], row["hparams"]["batch_size"]
        assert re.fullmatch(rf"\d+_lr={lr:g},batch_size={batch_size:g}/tensorboard", row["name"]), row["name"]
    assert sorted(runs) == sorted(row["name"] for row in rows)
    for run in runs:
        tags = server.get(f"/data/plugin/scalars/tags?run={run}")[run]
        assert "epoch" not in tags  # the x axis is the epoch: no card of it
        for tag in ("train/acc", "val/acc", "val/loss", "train/lr-RMSprop"):
            served = server.get(f"/data/plugin/scalars/scalars?run={run}&tag={tag}")
            assert [step for _, step, _ in served] == list(range(EPOCHS)), (run, tag)
        test_steps = [step for _, step, _ in server.get(f"/data/plugin/scalars/scalars?run={run}&tag=test/acc")]
        assert test_steps == [EPOCHS]  # the final test, after the last epoch
