"""Shared fixtures: a small synthetic CIFAR-10 image folder, the real data set when present, Hydra composition."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

from cifar_lit.data.source import CLASSES

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REAL_DATA = Path(os.environ.get("CIFAR10_REAL_ROOT", ROOT.parent / "shared" / "data" / "cifar10"))


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """train/ and test/ folders of 32x32 PNGs whose colour depends on the class (so a model can learn them)."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(label * 25) % 256, (label * 70) % 256, 255 - label * 25], dtype=np.float64)
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """40 train and 10 test images per class."""
    return write_image_folder(tmp_path_factory.mktemp("cifar_synthetic"), {"train": 40, "test": 10})


def compose_train(overrides: list[str], output_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """The composed train config, with Hydra's runtime set so `${hydra:...}` interpolations resolve."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
    return cfg


def synthetic_overrides(root: Path, cache: Path) -> list[str]:
    return [
        f"data.root={root}",
        f"data.cache_dir={cache}",
        "data.val_size=100",
        "data.batch_size=32",
        "data.eval_batch_size=100",
        "trainer.accelerator=cpu",
    ]


TINY_BLOCKS = "[{in_channels:3,out_channels:8,pool:true},{in_channels:8,out_channels:8,pool:true}]"


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_root, tmp_path_factory) -> Path:
    """A real checkpoint to use (eval, predict, export): two 8-channel blocks fitted for one epoch on the synthetic
    images and saved by the Trainer with the datamodule attached, so it holds the normalisation as training's do."""
    import lightning as L

    from cifar_lit.hydra_ext.instantiate import build_module, instantiate

    out_dir = tmp_path_factory.mktemp("tiny_checkpoint")
    cfg = compose_train([f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, out_dir / "cache")])
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(build_module(cfg), datamodule=instantiate(cfg.data))
    path = out_dir / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path
