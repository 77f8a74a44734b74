"""cifar_lit.export: TorchScript and ONNX files compute what the checkpoint computes, at any batch size."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from cifar_lit.data.inference import load_image, training_normalisation
from cifar_lit.data.source import CLASSES, list_image_folder
from cifar_lit.errors import ConfigError
from cifar_lit.export import METADATA_FILE, export
from cifar_lit.training.checkpoint import load_module, read_checkpoint
from tests.conftest import compose_train, run_cli


@pytest.fixture(scope="module")
def batch_and_logits(tiny_checkpoint, synthetic_root) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Five normalised test images (the exports were traced with two) and the checkpoint module's logits."""
    normalisation = training_normalisation(tiny_checkpoint, data=None)
    files = [path for path, _ in list_image_folder(synthetic_root / "test")][::20]
    x = normalisation(torch.from_numpy(np.stack([load_image(f) for f in files])), channels_last=False)
    with torch.no_grad():
        logits = load_module(tiny_checkpoint).eval()(x)
    return x, logits, list(normalisation.mean)


def export_to(ckpt, fmt: str, output, tmp_path):
    cfg = compose_train([f"ckpt_path={ckpt}", f"format={fmt}", f"output={output}"], tmp_path, config_name="export")
    return export(cfg)


def test_torchscript_export_cli_matches_the_checkpoint(tiny_checkpoint, batch_and_logits, tmp_path):
    x, logits, mean = batch_and_logits
    result = run_cli("export", f"ckpt_path={tiny_checkpoint}", "format=torchscript", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    path = tmp_path / "tiny.pt"  # default: the run dir, named after the checkpoint
    assert f"wrote {path}" in result.stdout
    files = {METADATA_FILE: ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), logits, atol=1e-4, rtol=1e-4)
    metadata = json.loads(files[METADATA_FILE])
    assert metadata["classes"] == list(CLASSES) and metadata["mean"] == mean


def test_onnx_export_matches_the_checkpoint(tiny_checkpoint, batch_and_logits, tmp_path):
    x, logits, mean = batch_and_logits
    path = export_to(tiny_checkpoint, "onnx", tmp_path / "net.onnx", tmp_path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    (out,) = session.run(None, {"images": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), logits, atol=1e-4, rtol=1e-4)
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["classes"]) == list(CLASSES) and json.loads(metadata["mean"]) == mean


def test_unknown_format_is_refused_with_the_choices(tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"format must be one of \['onnx', 'torchscript'\], got 'tflite'"):
        export_to(tiny_checkpoint, "tflite", tmp_path / "net.tflite", tmp_path)
    assert not (tmp_path / "net.tflite").exists()


def test_a_compiled_model_exports_its_plain_network(tiny_checkpoint, batch_and_logits, tmp_path):
    """A checkpoint of a ``compile=true`` run still traces: the export loads the network uncompiled."""
    x, logits, _ = batch_and_logits
    checkpoint = read_checkpoint(tiny_checkpoint)
    checkpoint["hyper_parameters"]["compile"] = True
    torch.save(checkpoint, tmp_path / "compiled.ckpt")
    path = export_to(tmp_path / "compiled.ckpt", "torchscript", tmp_path / "net.pt", tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(path))(x), logits, atol=1e-4, rtol=1e-4)
