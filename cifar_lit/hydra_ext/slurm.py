"""What hydra/launcher=slurm (hydra-submitit-launcher) needs from the project: the ``slurm_gpus`` resolver, so that
a CPU trainer asks SLURM for no GPU, and submitit's repeated sacct warnings cut to one. ``register()`` runs when
``cifar_lit`` is imported: before an entry point, or a ``compose()`` of the configs, resolves the launcher's config.

- ``gpus_per_node: ${slurm_gpus:${trainer.accelerator},${trainer.devices}}``: ``trainer.devices`` GPUs, none for
  ``trainer.accelerator=cpu`` (``trainer=cpu``, ``trainer=ddp_cpu``), which a GPU-less partition would refuse and a
  GPU one would leave idle.
- submitit learns a job's state from ``sacct``. On a cluster without accounting (a test cluster, some small sites)
  every poll fails and logs the same warning; the job still ends when its result file appears, so the first
  warning says all there is to say.
"""

from __future__ import annotations

import logging

from cifar_lit.hydra_ext.hydra_compat import register_resolver

SACCT_WARNING = "Bypassing sacct error"


def slurm_gpus(accelerator: str, devices: int) -> int | None:
    """GPUs per node for a trainer: ``devices`` unless it runs on the CPU (None: sbatch gets no --gpus-per-node)."""
    return None if accelerator == "cpu" else devices


class OnceSacctWarning(logging.Filter):
    """Lets the first "Bypassing sacct error" record through and drops the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if SACCT_WARNING not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def register() -> None:
    """The resolver and the submitit log filter; idempotent. (submitit configures its logger when imported, which
    keeps a logger's filters.)"""
    register_resolver("slurm_gpus", slurm_gpus)
    submitit_log = logging.getLogger("submitit")
    if not any(isinstance(f, OnceSacctWarning) for f in submitit_log.filters):
        submitit_log.addFilter(OnceSacctWarning())
