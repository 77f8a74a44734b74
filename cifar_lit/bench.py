"""python -m cifar_lit.bench [options] [hydra overrides]: training throughput, reference path vs project path.

* reference: the seed's way. Literal block (K separate convolutions), fp32, NCHW, a plain PyTorch loop fed by a
  ``torch.utils.data.DataLoader`` over a per-image dataset (PIL -> ToTensor -> Normalize, same augmentation).
* project: the default training path of ``cifar_lit.train`` (the Lightning Trainer with the composed config:
  resident batches, the configured block form, precision and memory format).

Each measurement runs in its own subprocess (so peak memory is that path's alone), alternating reference and
project for ``--rounds`` pairs; a run times ``--steps`` optimizer steps after ``--warmup`` steps, data loading
included. The median of each path is reported; the last line is ``speedup: X.XX`` (project / reference images/s).
On a machine with a GPU both paths train there (the reference copies each batch from its DataLoader to it).

Other modes: ``--forms`` (every block form x precision x layout, model only), ``--conv-floor`` (a model-only step
against its Blocks' 3x3 convolutions alone: how much of a step kernel fusion could remove at most) and
``--eval-batches`` (evaluation time per batch size).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict
from torch.utils.data import DataLoader

from cifar_lit.cli import build_module, instantiate, keep_freed_memory, plain
from cifar_lit.loader import PerImageDataset
from cifar_lit.module import build_optimizer
from cifar_lit.network import BlockNetwork


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize

    with initialize(version_base="1.3", config_path="../conf"):
        return hydra_compose(config_name="train", overrides=overrides)


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
    trainer: L.Trainer = instantiate(
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


def model_training_step(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, labels: torch.Tensor, bf16: bool
) -> None:
    """One optimizer step of the model alone (no data loading, no Lightning)."""
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(net(inputs).float(), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def seconds_per_call(fn: Callable[[], None], warmup: int, calls: int) -> list[float]:
    """Wall seconds of each of ``calls`` calls of ``fn`` after ``warmup`` untimed ones."""
    device = default_device()
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(calls):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_forms(cfg: DictConfig, steps: int, warmup: int) -> None:
    """Model-only training images/s of every block form x precision x memory format (synthetic batch, no data),
    on the GPU when there is one, else on the CPU: the fastest form depends on the device."""
    from cifar_lit.block import BLOCK_FORMS

    keep_freed_memory(cfg.get("keep_freed_memory", True))  # as training does, for every cell alike
    device = default_device()
    batch = cfg.data.batch_size
    x, y = torch.randn(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, batch {batch}")
    print(f"{'form':10s} {'precision':9s} {'layout':13s} images/s")
    for form in BLOCK_FORMS:
        for bf16 in (False, True):
            for channels_last in (False, True):
                torch.manual_seed(0)
                net = BlockNetwork(**(plain(cfg.model) | {"form": form}))
                memory_format = torch.channels_last if channels_last else torch.contiguous_format
                net.to(device, memory_format=memory_format)
                inputs = x.contiguous(memory_format=memory_format)
                optimizer = build_optimizer(net, plain(cfg.optimizer))
                step = partial(model_training_step, net, optimizer, inputs, y, bf16)
                rate = batch / statistics.median(seconds_per_call(step, warmup, steps))
                layout = "channels_last" if channels_last else "NCHW"
                print(f"{form:10s} {'bf16' if bf16 else 'fp32':9s} {layout:13s} {rate:8.1f}", flush=True)


def block_conv_shapes(net: BlockNetwork, inputs: torch.Tensor) -> list[tuple[tuple[int, ...], int]]:
    """For every Block, the input shape (B, K x C_in, H, W) and output channels of its 3x3 multiply-adds done as one
    convolution (the ``concat`` form), read from one forward pass."""
    shapes: list[tuple[tuple[int, ...], int]] = []

    def record(block: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        batch, _, height, width = args[0].shape
        shapes.append(((batch, block.num_branches * block.in_channels, height, width), block.out_channels))

    hooks = [block.register_forward_pre_hook(record) for block in net.blocks()]
    with torch.no_grad():
        net(inputs)
    for hook in hooks:
        hook.remove()
    return shapes


def time_conv_floor(cfg: DictConfig, steps: int, warmup: int, rounds: int) -> None:
    """A model-only training step of the configured network against its Blocks' 3x3 convolutions alone (forward
    and backward, each Block's as one convolution over its K scaled copies), alternated over ``rounds``, in
    seconds per 50,000 images. The convolutions are the floor of a step: what lies above it (BatchNorm, gates,
    residual paths, activations, pooling, the optimizer) is what kernel fusion could remove."""
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    device, batch = default_device(), cfg.data.batch_size
    bf16 = "bf16" in str(cfg.trainer.precision)
    memory_format = torch.channels_last if cfg.get("channels_last", True) else torch.contiguous_format
    torch.manual_seed(0)
    net = BlockNetwork(**plain(cfg.model)).to(device, memory_format=memory_format)
    inputs = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 10, (batch,), device=device)
    optimizer = build_optimizer(net, plain(cfg.optimizer))
    convs = [
        (
            torch.randn(shape, device=device).contiguous(memory_format=memory_format).requires_grad_(),
            torch.randn(out_channels, shape[1], 3, 3, device=device, requires_grad=True),
        )
        for shape, out_channels in block_conv_shapes(net, inputs)
    ]

    def convolutions_alone() -> None:
        for conv_input, weight in convs:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = torch.nn.functional.conv2d(conv_input, weight, padding=1)
            out.backward(torch.ones_like(out))

    cases = {
        "network training step": partial(model_training_step, net, optimizer, inputs, labels, bf16),
        "3x3 convolutions alone": convolutions_alone,
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            seconds[name] += seconds_per_call(fn, warmup, steps)
    per_epoch = {name: statistics.median(s) * 50_000 / batch for name, s in seconds.items()}
    layout = "channels_last" if memory_format == torch.channels_last else "NCHW"
    precision = "bf16" if bf16 else "fp32"
    print(f"device: {device.type}, batch {batch}, {precision}, {layout}, {torch.get_num_threads()} threads")
    for name, value in per_epoch.items():
        print(f"{name:24s} {value:8.1f} s per 50,000 images (median of {rounds} x {steps} calls)")
    share = per_epoch["3x3 convolutions alone"] / per_epoch["network training step"]
    print(f"convolution share: {share:.2f}")


def time_eval_batches(cfg: DictConfig, batch_sizes: list[int], rounds: int, images: int = 10_000) -> None:
    """Seconds to evaluate ``images`` images (the test set's size; a synthetic tensor) with the default model path
    (bf16 autocast, channels_last, eval mode) at each evaluation batch size, alternated over ``rounds``."""
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    module = build_module(cfg).eval()
    x = torch.randn(images, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def seconds(batch: int) -> float:
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for i in range(0, images, batch):
                module(x[i : i + batch])
        return time.perf_counter() - start

    seconds(batch_sizes[0])  # warm-up
    times: dict[int, list[float]] = {batch: [] for batch in batch_sizes}
    for _ in range(rounds):
        for batch in batch_sizes:
            times[batch].append(seconds(batch))
    for batch, measured in times.items():
        runs = " ".join(f"{t:.2f}" for t in measured)
        print(
            f"eval batch {batch:5d}: {statistics.median(measured):6.2f} s for {images} images "
            f"(median of {rounds}: {runs})"
        )


def worker(path: str, overrides: list[str], warmup: int, steps: int) -> dict[str, Any]:
    cfg = compose(overrides)
    seconds = (run_reference if path == "reference" else run_project)(cfg, warmup, steps)
    return {
        "path": path,
        "images_per_s": steps * cfg.data.batch_size / seconds,
        "peak_memory_mb": peak_memory_mb(),
        "precision": "32" if path == "reference" else str(cfg.trainer.precision),
    }


def measure(path: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "cifar_lit.bench", "--worker", path, "--warmup", str(args.warmup)]
    cmd += ["--steps", str(args.steps), *args.overrides]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: the {path} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config, e.g. model=two_blocks")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=2, help="reference/project pairs, alternated")
    parser.add_argument("--forms", action="store_true", help="time the block forms (model only; GPU if any) instead")
    parser.add_argument(
        "--conv-floor", action="store_true", help="time a model-only step against its 3x3 convolutions alone instead"
    )
    parser.add_argument("--eval-batches", help="time evaluation at these batch sizes instead, e.g. 64,128,500")
    parser.add_argument("--worker", choices=["reference", "project"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forms:
        time_forms(compose(args.overrides), args.steps, args.warmup)
        return
    if args.conv_floor:
        time_conv_floor(compose(args.overrides), args.steps, args.warmup, args.rounds)
        return
    if args.eval_batches:
        time_eval_batches(compose(args.overrides), [int(b) for b in args.eval_batches.split(",")], args.rounds)
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.overrides, args.warmup, args.steps)))
        return
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "project": []}
    for round_index in range(args.rounds):
        for path in runs:
            runs[path].append(measure(path, args))
            r = runs[path][-1]
            print(
                f"round {round_index + 1} {path:9s}: {r['images_per_s']:8.1f} images/s, "
                f"peak memory {r['peak_memory_mb']:7.0f} MiB",
                flush=True,
            )
    speed = {path: statistics.median(r["images_per_s"] for r in rs) for path, rs in runs.items()}
    memory = {path: max(r["peak_memory_mb"] for r in rs) for path, rs in runs.items()}
    cfg = compose(args.overrides)
    print(
        f"config: {' '.join(args.overrides) or '(defaults)'}; batch {cfg.data.batch_size}, "
        f"{args.steps} timed steps after {args.warmup}, {args.rounds} rounds; {torch.get_num_threads()} threads"
    )
    for path in runs:
        print(f"{path:9s} median {speed[path]:8.1f} images/s, peak memory {memory[path]:7.0f} MiB")
    print(f"speedup: {speed['project'] / speed['reference']:.2f}")


if __name__ == "__main__":
    main()
