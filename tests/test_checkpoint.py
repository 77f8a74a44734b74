"""Checkpoints are loaded without trusting them."""

from __future__ import annotations

import pickle

import pytest
import torch

from cifar_lit.errors import CheckpointError
from cifar_lit.hydra_ext.instantiate import build_module
from cifar_lit.training.checkpoint import AtomicCheckpointIO, load_module
from tests.conftest import compose_train


class RunsACommand:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def save_module(module, path):
    torch.save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": "2"},
        path,
    )


def test_checkpoint_rebuilds_model_without_config(tmp_path):
    module = build_module(compose_train(["model=two_blocks"])).eval()
    save_module(module, tmp_path / "m.ckpt")
    again = load_module(tmp_path / "m.ckpt").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(again(x), module(x))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with path.open("wb") as f:
        pickle.dump({"state_dict": {}, "payload": RunsACommand(marker)}, f)
    with pytest.raises(CheckpointError, match="refusing"):
        load_module(path)
    assert not marker.exists()


def test_checkpoint_of_another_shape_names_the_tensor(tmp_path):
    module = build_module(compose_train(["model=two_blocks"]))
    state = module.state_dict()
    state["net.backbone.0.branch_weight"] = torch.zeros(3 * 64, 5, 3, 3)  # written for another input width
    torch.save(
        {"state_dict": state, "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": "2"},
        tmp_path / "other.ckpt",
    )
    with pytest.raises(CheckpointError, match="branch_weight"):
        load_module(tmp_path / "other.ckpt")


@pytest.mark.parametrize("kind", ["missing", "directory", "garbage"])
def test_unreadable_checkpoints_are_named(tmp_path, kind):
    path = tmp_path / "x.ckpt"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(CheckpointError, match="x.ckpt"):
        load_module(path)


class FailsToPickle:
    """Stands for a tensor that cannot be written: pickling it raises, part-way through the checkpoint."""

    def __reduce__(self):
        raise RuntimeError("disk gone")


@pytest.mark.parametrize("failure", ["pickling", "fsync"])
def test_atomic_save_keeps_the_previous_checkpoint_when_a_write_fails(tmp_path, monkeypatch, failure):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, path)
    new = {"weights": torch.ones(100_000), "step": torch.tensor(2)}
    if failure == "pickling":
        new["broken"] = FailsToPickle()
    else:
        monkeypatch.setattr("os.fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises((RuntimeError, OSError)):
        io.save_checkpoint(new, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind
    assert torch.load(path, weights_only=True)["step"] == 1
    monkeypatch.undo()
    io.save_checkpoint({"step": torch.tensor(3)}, path)  # and the next save replaces it
    assert torch.load(path, weights_only=True)["step"] == 3


def test_a_diverged_model_is_never_saved():
    module = build_module(compose_train(["model=two_blocks"]))
    state = module.state_dict()
    state["net.classifier.3.weight"] = torch.full_like(state["net.classifier.3.weight"], float("nan"))
    with pytest.raises(FloatingPointError, match=r"net.classifier.3.weight is not finite at epoch 0, step 0"):
        module.on_save_checkpoint({"state_dict": state})
