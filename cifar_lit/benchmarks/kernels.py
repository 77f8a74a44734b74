"""Model-only timings of ``python -m cifar_lit.bench``: the block forms, the convolution floor of a step, and
evaluation batch sizes.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from omegaconf import DictConfig

from cifar_lit.benchmarks.paths import default_device, synchronize
from cifar_lit.hydra_ext.instantiate import build_module, plain
from cifar_lit.network.model import BlockNetwork
from cifar_lit.training.optim import build_optimizer
from cifar_lit.training.precision import resolve_precision
from cifar_lit.training.process import keep_freed_memory


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
    from cifar_lit.network.block import BLOCK_FORMS

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
    bf16 = "bf16" in str(resolve_precision(cfg.trainer.precision, device.type))  # auto: what training would use
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
    """Seconds to evaluate ``images`` images (the test set's size; a synthetic tensor) on the CPU with the default
    model path (the configured precision, ``auto`` as chosen for this CPU; channels_last, eval mode) at each
    evaluation batch size, alternated over ``rounds``."""
    keep_freed_memory(cfg.get("keep_freed_memory", True))
    bf16 = "bf16" in str(resolve_precision(cfg.trainer.precision, "cpu"))
    module = build_module(cfg).eval()
    x = torch.randn(images, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def seconds(batch: int) -> float:
        start = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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
