"""Checkpoints are loaded without trusting them."""

from __future__ import annotations

import pickle

import pytest
import torch

from cifar_lit.checkpoint import CheckpointError, load_module
from cifar_lit.cli import build_module
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
