"""python -m cifar_lit.train [group=option ...] [key=value ...]: fit, test the best checkpoint, print metrics.

The function only instantiates and wires what the config describes; everything else lives in the parts.
"""

from __future__ import annotations

import logging

import hydra
import lightning as L
from omegaconf import DictConfig

from cifar_lit.cli import build_module, instantiate, instantiate_list, print_metrics, run_cli

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as ``cfg`` says; returns the final metrics (floats)."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    module = build_module(cfg)
    datamodule = instantiate(cfg.data)
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=instantiate_list(cfg.get("callbacks")),
        logger=instantiate_list(cfg.get("logger")) or False,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_cli(train, cfg)
    if metrics is None:  # a failed multirun job, recorded in its FAILED.txt
        return None
    print_metrics(metrics)
    return metrics.get(f"{cfg.monitor}_best")


if __name__ == "__main__":
    main()
