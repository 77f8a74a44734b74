"""cifar_lit: the block network on CIFAR-10, trained with PyTorch Lightning and configured with Hydra.

Entry points (``python -m cifar_lit.<name>``): ``train``, ``eval``, ``predict``, ``export``, ``report``, ``bench``.
Beneath them, one subpackage per concern: ``network`` (the block network), ``data`` (CIFAR-10, its cache, the
resident batches), ``training`` (the LightningModule, optimizers, checkpoints, resuming), ``callbacks`` (Lightning
callbacks the configs name), ``hydra_ext`` (instantiation, error handling and Hydra callbacks), ``reporting`` (event
reading, tables, plots, sweep summaries) and ``benchmarks`` (the timed paths of ``bench``).
"""

from cifar_lit.hydra_ext import job_name as _job_name
from cifar_lit.hydra_ext import slurm as _slurm
from cifar_lit.training import monitor as _monitor

_slurm.register()  # the configs' ${slurm_gpus:...} resolver, for the entry points and for compose() alike
_monitor.register()  # ${metric_mode:...}: the callbacks' mode follows the monitor (cifar_lit.training.monitor)
_job_name.register()  # ${job_dirname:...}: a sweep's job folders named by what they vary (cifar_lit.hydra_ext.job_name)
