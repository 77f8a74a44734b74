"""The two training paths ``python -m cifar_lit.bench`` compares: the project's (the Lightning Trainer with the
composed config) and the seed's reference (literal block, fp32, NCHW, a plain loop over a per-image DataLoader).
"""

from __future__ import annotations

import resource
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from cifar_lit.data.loaders import PerImageDataset
from cifar_lit.hydra_ext.instantiate import build_module, instantiate, instantiate_trainer, plain
from cifar_lit.network.model import BlockNetwork
from cifar_lit.training.optim import build_optimizer
from cifar_lit.training.precision import resolve_trainer_precision
from cifar_lit.training.process import keep_freed_memory


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def peak_memory_mb() -> float:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory, in MiB."""
    if default_device().type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock read after it times the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Wall time from the start of step ``warmup`` to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == trainer.max_steps:
            synchronize(pl_module.device)
        self.end = time.perf_counter()


def run_project(cfg: DictConfig, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` steps of the real training path (Lightning Trainer, configured data and model)."""
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    L.seed_everything(0)
    timer = StepTimer(warmup)
    with open_dict(cfg):
        cfg.trainer.default_root_dir = "."
    trainer: L.Trainer = instantiate_trainer(  # precision=auto resolved in cfg: the worker reports what ran
        cfg.trainer,
        max_epochs=-1,
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(build_module(cfg), datamodule=instantiate(cfg.data))
    return timer.end - timer.start


def run_model(cfg: DictConfig, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` steps of the project's module alone, compiled as ``cfg.compile`` says: forward, loss,
    backward and optimizer step on one synthetic batch, with no data loading and no Lightning loop. What the
    project path loses against it is the loop's and the data's cost (``--overhead``)."""
    torch.manual_seed(0)
    device = default_device()
    module = build_module(cfg).to(device)
    memory_format = torch.channels_last if cfg.get("channels_last", True) else torch.contiguous_format
    x = torch.randn(cfg.data.batch_size, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, cfg.model.get("num_classes", 10), (cfg.data.batch_size,), device=device)
    optimizer = build_optimizer(module.net, plain(cfg.optimizer))
    resolve_trainer_precision(cfg.trainer)  # auto: as training would run here (the worker reports it)
    bf16 = "bf16" in str(cfg.trainer.precision)

    def step() -> None:
        if module.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = module.criterion(module(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def run_reference(cfg: DictConfig, warmup: int, steps: int) -> float:
    """Seconds for ``steps`` steps of the seed-style loop: literal block, fp32, NCHW, per-image DataLoader (each
    batch copied to the GPU when there is one)."""
    torch.manual_seed(0)
    device = default_device()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images, labels = datamodule.splits["train"]
    dataset = PerImageDataset(images, labels, datamodule.mean.tolist(), datamodule.std.tolist(), datamodule.augment)
    loader = DataLoader(dataset, cfg.data.batch_size, shuffle=True, num_workers=cfg.data.num_workers, drop_last=True)
    net = BlockNetwork(**(plain(cfg.model) | {"form": "literal"})).to(device)
    optimizer = build_optimizer(net, plain(cfg.optimizer))
    criterion = torch.nn.CrossEntropyLoss()
    step, start = 0, 0.0
    while step < warmup + steps:
        for x, y in loader:
            if step == warmup:
                synchronize(device)
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup + steps:
                break
    synchronize(device)
    return time.perf_counter() - start
