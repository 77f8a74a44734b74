"""python -m cifar_lit.eval ckpt_path=PATH: test a checkpoint on the official test set, with per-class accuracy.

Besides the printed metrics, the run's output dir gets the confusion matrix (``confusion_matrix.csv`` and
``.png``: rows = true class, columns = predicted) and ``per_class_accuracy.csv``. ``tta=flip_translate`` (or
``flip``, ``none``) also reports the test-time-augmented accuracy, ``test/acc_tta``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from cifar_lit.data.source import CLASSES
from cifar_lit.hydra_ext.entry import entry_point
from cifar_lit.hydra_ext.instantiate import instantiate, instantiate_trainer
from cifar_lit.hydra_ext.runner import run_cli
from cifar_lit.reporting.confusion import per_class_accuracy, write_confusion
from cifar_lit.reporting.console import print_metrics
from cifar_lit.training.checkpoint import load_module
from cifar_lit.training.process import seed_run
from cifar_lit.training.tta import check_tta

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    cfg.seed = seed_run(cfg.get("seed"))  # seed=null: a drawn seed, for ${seed} (data.seed), as in training
    module = load_module(cfg.ckpt_path)
    if cfg.get("tta") is not None:  # else the checkpoint's own setting
        module.tta = check_tta(cfg.tta)
    datamodule = instantiate(cfg.data)
    trainer: L.Trainer = instantiate_trainer(cfg.trainer, logger=False)
    # ckpt_path: Lightning also restores the datamodule's state, i.e. the normalisation the model was trained with
    metrics = trainer.test(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True, verbose=False)[0]
    confusion = module.confusion.compute()
    per_class = per_class_accuracy(confusion)
    metrics.update({f"test/acc_{name}": acc for name, acc in zip(CLASSES, per_class, strict=True)})
    for path in write_confusion(confusion, CLASSES, Path(cfg.paths.output_dir)):
        log.info("wrote %s", path)
    return metrics


@entry_point("eval")
def main(cfg: DictConfig) -> None:
    metrics = run_cli(evaluate, cfg)
    if metrics is not None:
        print_metrics(metrics)


if __name__ == "__main__":
    main()
