"""python -m cifar_lit.export ckpt_path=PATH format=onnx|torchscript [output=FILE]: the network for other runtimes.

The exported graph is the network alone, in eval mode and fp32: input ``images`` (B, 3, 32, 32) float32 RGB,
normalised as in training, ``(x / 255 - mean) / std`` per channel; output ``logits`` (B, 10) in the order of
``cifar_lit.data.CLASSES``. Any batch size works (ONNX: dynamic axis ``batch``). The classes, mean and std travel
with the file: ONNX metadata properties, or the TorchScript extra file ``cifar_lit.json``.

ONNX uses torch's ``torch.export``-based exporter (it needs ``onnx`` and ``onnxscript``, the ``onnx`` extra:
``pip install 'cifar_lit[onnx]'``). TorchScript is traced; torch marks TorchScript deprecated, so prefer ONNX for
new consumers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from cifar_lit.data.inference import training_normalisation
from cifar_lit.data.source import CLASSES, IMAGE_SHAPE
from cifar_lit.errors import ConfigError
from cifar_lit.hydra_ext.entry import entry_point
from cifar_lit.hydra_ext.runner import run_cli
from cifar_lit.training.checkpoint import load_module

log = logging.getLogger(__name__)


FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}  # format -> file suffix


METADATA_FILE = "cifar_lit.json"  # the TorchScript extra file holding the metadata


def example_batch(batch_size: int = 2) -> torch.Tensor:
    """A normalised-image-like batch to trace with (its size is not baked in: the batch axis stays dynamic)."""
    height, width, channels = IMAGE_SHAPE
    return torch.randn(batch_size, channels, height, width, generator=torch.Generator().manual_seed(0))


def export_onnx(net: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    try:
        import onnx  # noqa: F401 - the exporter needs both; say so before it fails deep inside
        import onnxscript  # noqa: F401
    except ImportError as err:
        message = f"format=onnx needs the 'onnx' extra ({err}): pip install 'cifar_lit[onnx]'"
        raise ConfigError(message) from err
    program = torch.onnx.export(
        net,
        (example_batch(),),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    program.model.metadata_props.update({key: json.dumps(value) for key, value in metadata.items()})
    program.save(path)


def export_torchscript(net: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    traced = torch.jit.trace(net, example_batch())
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})


def export(cfg: DictConfig) -> Path:
    """Write the checkpoint's network in ``cfg.format`` to ``cfg.output`` (default: the run's output dir)."""
    if cfg.format not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {cfg.format!r}")
    module = load_module(cfg.ckpt_path, compile=False)  # export the plain network, never a compiled wrapper
    normalisation = training_normalisation(cfg.ckpt_path, cfg.data)
    net = module.net.float().eval().to(memory_format=torch.contiguous_format)
    metadata = {
        "classes": list(CLASSES),
        **normalisation.metadata(),
        "input": "images: (B, 3, 32, 32) float32 RGB, (x / 255 - mean) / std per channel",
        "checkpoint": str(cfg.ckpt_path),
    }
    output = Path(cfg.output or Path(cfg.paths.output_dir) / (Path(cfg.ckpt_path).stem + FORMATS[cfg.format]))
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        (export_onnx if cfg.format == "onnx" else export_torchscript)(net, output, metadata)
    log.info("wrote %s; its input: images normalised with %s", output, normalisation)
    return output


@entry_point("export")
def main(cfg: DictConfig) -> None:
    run_cli(export, cfg)


if __name__ == "__main__":
    main()
