"""Checkpoints are loaded without trusting them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from cifar_lit.errors import CheckpointError
from cifar_lit.hydra_ext.instantiate import build_module
from cifar_lit.training.checkpoint import AtomicCheckpointIO, load_module
from cifar_lit.training.muon import Muon
from tests.conftest import compose_train, run_cli, synthetic_overrides


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


def rewritten(checkpoint: Path, path: Path, **hyper_parameters: dict) -> Path:
    """A copy of a real checkpoint whose hyper-parameters are replaced: what a crafted checkpoint holds."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["hyper_parameters"] = {**content["hyper_parameters"], **hyper_parameters}
    torch.save(content, path)
    return path


PROBE_MODULE = "cifar_lit_trust_probe"  # written into the test's folder; importing it creates the marker file


def crafted_checkpoint(tiny_checkpoint: Path, tmp_path: Path, crafted: str) -> tuple[Path, str, str]:
    """A checkpoint naming code outside torch.optim and cifar_lit: (its file, the key, the name)."""
    marker = tmp_path / "marker"
    (tmp_path / f"{PROBE_MODULE}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Optimizer: ...\n")
    if crafted == "os.system":  # its only argument given: today's argument check lets it through
        node = {"_target_": "os.system", "_partial_": True, "command": f"touch {marker}"}
        return rewritten(tiny_checkpoint, tmp_path / "shell.ckpt", scheduler=node), "scheduler._target_", "os.system"
    node = {"_target_": f"{PROBE_MODULE}.Optimizer", "_partial_": True, "lr": 0.1}
    path = rewritten(tiny_checkpoint, tmp_path / "import.ckpt", optimizer=node)
    return path, "optimizer._target_", node["_target_"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["eval", "predict", "export"])
@pytest.mark.parametrize("crafted", ["os.system", "import side effect"])
def test_a_checkpoint_naming_other_code_is_refused_before_importing_it(
    tiny_checkpoint, synthetic_root, tmp_path, entry, crafted
):
    path, key, target = crafted_checkpoint(tiny_checkpoint, tmp_path, crafted)
    overrides = {
        "eval": synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "predict": [f"inputs={synthetic_root / 'test'}"],
        "export": ["format=torchscript"],
    }[entry]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(tmp_path)}  # the probe is importable
    result = run_cli(entry, f"ckpt_path={path}", f"hydra.run.dir={tmp_path}/run", *overrides, env=env)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if key in line]
    assert line.startswith(f"error: refusing {str(path)!r}") and f"{key}={target!r}" in line
    assert not (tmp_path / "marker").exists()


def test_a_checkpoint_from_before_the_layout_change_names_muon_by_its_old_path(tiny_checkpoint, tmp_path):
    legacy = {"_target_": "cifar_lit.muon.Muon", "_partial_": True, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    legacy |= {"nesterov": True, "filter_lr": 0.12, "filter_momentum": 0.6, "ns_steps": 3, "ns_dtype": "float32"}
    module = load_module(rewritten(tiny_checkpoint, tmp_path / "legacy.ckpt", optimizer=legacy))
    assert isinstance(module.configure_optimizers()["optimizer"], Muon)
    assert module.hparams.optimizer["_target_"] == "cifar_lit.training.muon.Muon"  # a new checkpoint names it so


@pytest.mark.parametrize("key", ["_instantiator", "_class_path"])
def test_a_checkpoint_naming_an_instantiator_is_refused_in_one_line(tiny_checkpoint, tmp_path, key):
    crafted = rewritten(tiny_checkpoint, tmp_path / "instantiator.ckpt", **{key: "os.system"})
    with pytest.raises(CheckpointError, match=rf"refusing .*name code to run \({key}\)"):
        load_module(crafted)
