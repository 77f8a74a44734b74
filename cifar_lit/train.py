"""python -m cifar_lit.train [group=option ...] [key=value ...]: fit, test the best checkpoint, print metrics.

The function only instantiates and wires what the config describes; everything else lives in the parts.
"""

from __future__ import annotations

import logging
import signal
import sys

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from cifar_lit.callbacks.provenance import RunProvenance
from cifar_lit.callbacks.slurm_requeue import requeue_on_time_limit
from cifar_lit.errors import NoResultError
from cifar_lit.hydra_ext.distributed import check_other_ranks, job_scope
from cifar_lit.hydra_ext.entry import entry_point
from cifar_lit.hydra_ext.instantiate import build_module, instantiate, instantiate_list
from cifar_lit.hydra_ext.job_resume import resume_sweep_job
from cifar_lit.hydra_ext.runner import run_cli
from cifar_lit.reporting.console import print_config_tree, print_metrics
from cifar_lit.training.epoch_logger import EpochTensorBoardLogger, epoch_steps
from cifar_lit.training.monitor import monitor_mode, objective_names
from cifar_lit.training.monitor_check import check_monitor
from cifar_lit.training.precision import resolve_trainer_precision
from cifar_lit.training.process import keep_freed_memory, seed_run, set_threads
from cifar_lit.training.resume import logger_step, resolve_ckpt_path, resume_hint, with_purge_step

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test as ``cfg`` says; returns the final metrics (floats)."""
    monitor_mode(cfg)  # a monitor of unknown direction: one line now, not a resolver error in the config tree
    requested_precision = resolve_trainer_precision(cfg.trainer)  # auto -> what runs, in cfg before it is recorded
    if (finished := resume_sweep_job(cfg)) is not None:  # a rerun sweep: this job had finished
        return finished
    print_config_tree(cfg)
    set_threads(cfg.get("threads"))
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    cfg.seed = seed_run(cfg.get("seed"))  # seed=null: the drawn seed, for ${seed} (data.seed) and run.json
    module = build_module(cfg)  # first after seeding, as always: the same initial weights for the same seed
    callbacks = instantiate_list(cfg.get("callbacks"))
    for callback in callbacks:
        if isinstance(callback, RunProvenance):
            callback.config = cfg  # run.json and the TensorBoard hparams record the whole composed config
            callback.precision_requested = requested_precision
    with requeue_on_time_limit(callbacks):  # SLURM's warning answered from data preparation to the final test
        return fit_and_test(cfg, module, callbacks)


def fit_and_test(cfg: DictConfig, module: L.LightningModule, callbacks: list[Callback]) -> dict[str, float]:
    """Prepare the data, fit, test the best checkpoint; returns the final metrics (floats)."""
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # the epoch's batch count, for the check; Lightning's setup then finds it done
    check_monitor(cfg.get("monitor"), cfg.trainer, datamodule)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), callbacks)
    loggers = cfg.get("logger")
    if ckpt_path is not None and ckpt_path != "hpc":
        loggers = with_purge_step(loggers, logger_step(ckpt_path, epoch_steps(cfg.trainer.get("val_check_interval"))))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=instantiate_list(loggers) or False)
    EpochTensorBoardLogger.follow(trainer)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:  # InterruptCheckpoint saved last.ckpt; exit as a process killed by SIGTERM would
        print(f"stopped by SIGTERM; to resume: {resume_hint(cfg)}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    # a fit resumed at its end validates nothing: the checkpoint's best values are its results
    metrics = {**module.resumed_results(), **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    metrics["model/params"] = float(sum(p.numel() for p in module.parameters()))  # an objective to minimise
    if (monitor := cfg.get("monitor")) is not None and f"{monitor}_best" not in metrics:
        # what check_monitor could not foresee (validation on a clock, ranks unknown): no result is a failure, not
        # an "ok" job without a value that a search would tell FAIL and a sweep summary would rank last
        raise NoResultError(
            f"monitor={monitor} was never logged: the run ended without {monitor}_best, its result "
            "(did it ever validate? see trainer.max_steps, trainer.val_check_interval, trainer.limit_val_batches)"
        )
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the current weights")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    # DDP: no rank leaves before every rank is here (rank 0 may still be drawing the test's figures, and Lightning's
    # watcher kills rank 0 when another rank exits with an error first); then a rank that fails on its way out fails
    # the run too
    trainer.strategy.barrier("end of run")
    check_other_ranks(trainer)
    return metrics


@entry_point("train")
def main(cfg: DictConfig) -> float | list[float | None] | None:
    with job_scope():  # in a multirun, DDP's other ranks run this job only (cifar_lit.distributed)
        metrics = run_cli(train, cfg)
    if metrics is None:  # a failed multirun job, recorded in its FAILED.txt
        return None
    print_metrics(metrics)
    # what a search optimises: <monitor>_best (a running max or min, as monitor_mode says), or the objectives
    values = [metrics.get(name) for name in objective_names(cfg)]
    return values[0] if len(values) == 1 else values


if __name__ == "__main__":
    main()
