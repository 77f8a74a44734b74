"""Reports a sweep job's monitored metric to its Optuna trial every validation epoch and stops the job when the
study's pruner says the trial is not worth finishing. Added to a job by the Optuna sweeper
(cifar_lit.hydra_ext.optuna_sweeper), which passes the study name, storage and trial number: the job reaches its
trial through the storage, so it may run in another process or on another machine than the sweeper.

A trial whose search died is retried (cifar_lit.hydra_ext.optuna_resume) by a job that carries the dead run's
reports and its pruner's verdict (the user attr ``pruned_at``: the epochs after which the pruner stopped it); the
retry keeps that verdict rather than asking the pruner again at a step it reported (successive halving, which
recorded the dead run's rung, would let it through), so it stops where the dead run stopped, as an uninterrupted
trial would have.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig

from cifar_lit.errors import PRUNED_FILE

log = logging.getLogger(__name__)

PRUNED_AT = "pruned_at"  # trial user attr: the epochs after which the pruner stopped it (a retry copies it)


class OptunaPruning(L.Callback):
    """After each validation (its epoch metrics computed): ``trial.report(<monitor>, step=epochs trained)``, so a
    pruner's steps are epochs (successive halving's ``min_resource: 1`` is one epoch). The value is the monitor's
    as logged; which way is worse is the study's direction, which the pruner reads from the study (the sweeper made
    it the monitor's: ``val/loss`` minimised), so nothing here depends on it. When ``should_prune()`` (by
    ``pruner``, the sweeper's: the storage does not keep it), training stops cleanly after that epoch (checkpoints
    and logs kept, the final test still run) and the job dir gets ``PRUNED.txt`` with the epochs run, which the
    sweeper reads to tell the study the trial was PRUNED."""

    def __init__(
        self, study_name: str, storage: str, trial_number: int, pruner: Any = None, monitor: str = "val/acc"
    ) -> None:
        self.study_name, self.storage, self.trial_number, self.monitor = study_name, storage, trial_number, monitor
        self.pruner = pruner  # an optuna.pruners.BasePruner (None: Optuna's default, the median pruner)
        self._trial = None
        self._carried: dict[int, float] = {}  # the reports of a retried trial's dead run, by step

    def trial(self):  # noqa: ANN201  (an optuna.Trial, or None; optuna is imported only by jobs of a search)
        """The job's trial, loaded once; None when it is finished already (a rerun of the job from its run.json
        command, after its search): the run then trains to its end and reports nothing."""
        if self._trial is None:
            import optuna

            from cifar_lit.hydra_ext.optuna_resume import WithoutRetried
            from cifar_lit.hydra_ext.optuna_workers import open_storage

            pruner = WithoutRetried(self.pruner) if self.pruner is not None else None  # a retry counts once
            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage), pruner=pruner)
            frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == self.trial_number)
            if frozen.state.is_finished():
                log.warning("Optuna trial %d is %s: not reporting to it", self.trial_number, frozen.state.name)
                self._trial = False
            else:
                self._trial = optuna.Trial(study, frozen._trial_id)
                self._carried = dict(frozen.intermediate_values)
        return self._trial or None

    def verdict(self, trial: Any, value: float, step: int) -> bool:
        """Whether to stop after ``step`` epochs: the verdict of a retried trial's dead run at a step it reported,
        else the pruner's (``value`` reported first)."""
        pruned_at = trial.user_attrs.get(PRUNED_AT)
        if pruned_at is not None and step >= pruned_at:
            return True
        if step in self._carried:
            return False  # the dead run went on past this step
        trial.report(value, step)
        if trial.should_prune():
            trial.set_user_attr(PRUNED_AT, step)
            return True
        return False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A retried trial resumed from a checkpoint past the epoch its dead run was pruned at: nothing to train."""
        stop = False
        if trainer.is_global_zero and (trial := self.trial()):
            pruned_at = trial.user_attrs.get(PRUNED_AT)
            stop = pruned_at is not None and trainer.current_epoch >= pruned_at
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            trainer.should_stop = True
        if stop and trainer.is_global_zero:
            self.mark_pruned(pruned_at, self._carried.get(pruned_at, float("nan")))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        # one report an epoch, whatever the number of ranks
        if trainer.is_global_zero and value is not None and (trial := self.trial()):
            prune = self.verdict(trial, float(value), trainer.current_epoch + 1)
        if trainer.world_size > 1:  # every rank stops at the same epoch, or DDP hangs
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            trainer.should_stop = True
        if prune and trainer.is_global_zero:
            self.mark_pruned(trainer.current_epoch + 1, float(value))

    def mark_pruned(self, epochs: int, value: float) -> None:
        """Log it and write PRUNED.txt into the job dir (what the sweeper tells the trial by)."""
        ran = f"{epochs} epoch" + ("s" if epochs > 1 else "")
        log.info("Optuna trial %d pruned after %s (%s=%.4f)", self.trial_number, ran, self.monitor, value)
        job_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()
        (job_dir / PRUNED_FILE).write_text(f"pruned after {ran}: {self.monitor}={value:.4f}\n")
