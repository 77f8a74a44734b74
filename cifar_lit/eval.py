"""python -m cifar_lit.eval ckpt_path=PATH: test a checkpoint on the official test set, with per-class accuracy."""

from __future__ import annotations

import hydra
import lightning as L
from omegaconf import DictConfig

from cifar_lit.checkpoint import load_module
from cifar_lit.cli import instantiate, print_metrics, run_cli
from cifar_lit.data import CLASSES


def evaluate(cfg: DictConfig) -> dict[str, float]:
    module = load_module(cfg.ckpt_path)
    datamodule = instantiate(cfg.data)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False)
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    confusion = module.confusion.compute()
    per_class = (confusion.diag() / confusion.sum(dim=1).clamp(min=1)).tolist()
    metrics.update({f"test/acc_{name}": acc for name, acc in zip(CLASSES, per_class, strict=True)})
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    metrics = run_cli(evaluate, cfg)
    if metrics is not None:
        print_metrics(metrics)


if __name__ == "__main__":
    main()
