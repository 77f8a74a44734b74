"""python -m cifar_lit.predict ckpt_path=PATH inputs=PATH_OR_GLOB [topk=3] [output=FILE]: classify image files.

``inputs`` is a file, a directory (every image file under it, recursively), a glob (``'photos/*.jpg'``) or a
list of these. Images of any size and mode are converted to RGB, resized to 32x32 and normalised with the
training set's statistics (see ``cifar_lit.inference``), then classified in batches. A rich table is printed and
a CSV written: file, class, probability, the next ``topk - 1`` classes and probabilities, and ``error`` for a
file that is not a readable image (it is named in a warning and skipped; the others are still classified).
"""

from __future__ import annotations

import csv
import glob
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.table import Table

from cifar_lit.data.inference import Normalisation, load_image, training_normalisation
from cifar_lit.data.source import CLASSES
from cifar_lit.errors import ConfigError
from cifar_lit.hydra_ext.entry import entry_point
from cifar_lit.hydra_ext.runner import run_cli
from cifar_lit.training.checkpoint import load_module
from cifar_lit.training.module import BlockClassifier

log = logging.getLogger(__name__)


# file name endings PIL can open: what a directory input is searched for
IMAGE_SUFFIXES = frozenset(suffix.lower() for suffix in Image.registered_extensions())


UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass
class Prediction:
    """The ``topk`` most probable classes of one file, most probable first; or why it could not be read."""

    file: Path
    classes: list[str]
    probabilities: list[float]
    error: str | None = None


def find_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """Files named by ``inputs``: a file as it is, a directory's image files (recursively), a glob's files.

    In input order, sorted within a directory or glob, each file once. Raises ConfigError when nothing matched.
    """
    patterns = [inputs] if isinstance(inputs, str) else [str(item) for item in inputs]
    files: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        files.update(dict.fromkeys(matches))
    if not files:
        raise ConfigError(
            f"inputs={inputs!r} matched no image files: give an image file, a directory of images "
            "or a quoted glob such as 'photos/*.jpg'"
        )
    return list(files)


def batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def class_probabilities(module: BlockClassifier, normalisation: Normalisation, images: np.ndarray) -> torch.Tensor:
    """Softmax over the classes for a (B, 32, 32, 3) uint8 batch, preprocessed exactly as in training."""
    x = normalisation(torch.from_numpy(images).to(module.device), module.hparams.get("channels_last", True))
    return module(x).float().softmax(dim=1).cpu()


def predict_files(
    module: BlockClassifier, normalisation: Normalisation, files: Sequence[Path], topk: int, batch_size: int
) -> list[Prediction]:
    """Predictions for ``files`` in their order; an unreadable file gets a warning and an ``error`` entry."""
    predictions = []
    for chunk in batches(files, batch_size):
        readable, images = [], []
        results: dict[Path, Prediction] = {}
        for file in chunk:
            try:
                images.append(load_image(file))
                readable.append(file)
            except UNREADABLE as err:
                log.warning("%s: not a readable image (%s: %s); skipped", file, type(err).__name__, err)
                results[file] = Prediction(file, [], [], error=f"not a readable image ({type(err).__name__})")
        if images:
            top = class_probabilities(module, normalisation, np.stack(images)).topk(topk, dim=1)
            for file, probs, indices in zip(readable, top.values.tolist(), top.indices.tolist(), strict=True):
                results[file] = Prediction(file, [CLASSES[i] for i in indices], probs)
        predictions += [results[file] for file in chunk]
    return predictions


def write_predictions(predictions: Sequence[Prediction], topk: int, path: Path) -> None:
    """CSV: file, class, probability, class_2, probability_2, ... class_<topk>, probability_<topk>, error."""
    header = ["file", "class", "probability"]
    header += [f"{name}_{rank}" for rank in range(2, topk + 1) for name in ("class", "probability")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*header, "error"])
        for p in predictions:
            cells = [cell for pair in zip(p.classes, p.probabilities, strict=True) for cell in pair]
            cells += [""] * (2 * topk - len(cells))
            writer.writerow([str(p.file), *(f"{c:.6f}" if isinstance(c, float) else c for c in cells), p.error or ""])


def print_predictions(predictions: Sequence[Prediction], topk: int, max_rows: int) -> None:
    table = Table(title=f"predictions ({len(predictions)} files)")
    table.add_column("file", overflow="fold")
    table.add_column("class")
    table.add_column("probability", justify="right")
    if topk > 1:
        table.add_column(f"next {topk - 1}")
    for p in predictions[:max_rows]:
        if p.error:
            table.add_row(str(p.file), "[red]error[/red]", "", *([p.error] if topk > 1 else []))
            continue
        rest = ", ".join(f"{c} {q:.3f}" for c, q in zip(p.classes[1:], p.probabilities[1:], strict=True))
        table.add_row(str(p.file), p.classes[0], f"{p.probabilities[0]:.3f}", *([rest] if topk > 1 else []))
    if len(predictions) > max_rows:
        table.caption = f"first {max_rows} of {len(predictions)} rows; all are in the CSV"
    Console().print(table)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Classify the files ``cfg.inputs`` names with the checkpoint ``cfg.ckpt_path``; write ``cfg.output``."""
    if not isinstance(cfg.topk, int) or not 1 <= cfg.topk <= len(CLASSES):
        raise ConfigError(f"topk must be an integer from 1 to {len(CLASSES)}, got {cfg.topk!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size <= 0:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size!r}")
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else str(cfg.inputs)
    files = find_inputs(inputs)
    # compile=False: for one pass over a few files, compiling costs more than it saves
    module = load_module(cfg.ckpt_path, map_location=cfg.device, compile=False).eval()
    normalisation = training_normalisation(cfg.ckpt_path, cfg.data)
    log.info("normalisation as in training: %s", normalisation)
    predictions = predict_files(module, normalisation, files, cfg.topk, cfg.batch_size)
    print_predictions(predictions, cfg.topk, cfg.max_rows)
    output = Path(cfg.output)
    write_predictions(predictions, cfg.topk, output)
    failed = sum(p.error is not None for p in predictions)
    log.info("wrote %s (%d files, %d unreadable)", output, len(predictions), failed)
    return predictions


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    run_cli(predict, cfg)


if __name__ == "__main__":
    main()
