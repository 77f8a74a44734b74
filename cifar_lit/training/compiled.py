"""``compile=...``: torch.compile of the network, and what its CUDA graphs ask of the training loop.

On a GPU a four_blocks step at batch 128 is launch-bound: hundreds of small kernels whose launches, not their
multiply-adds, set the pace (docs/gpu.md). torch.compile fuses the element-wise work (gates, BatchNorm, ReLU,
residual adds) into fewer kernels; its ``reduce-overhead`` mode also records the forward and the backward as CUDA
graphs, replayed with one launch each. A CUDA graph replays fixed shapes: every new batch shape records a graph of
its own (and is compiled for it), so ``data.drop_last=true`` keeps training batches at one shape. On a CPU the
CUDA-graph modes compile as ``default`` does.
"""

from __future__ import annotations

from typing import Any

from cifar_lit.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
COMPILE_TRUE = "reduce-overhead"  # what compile=true means: on a GPU the graphs remove the launches (docs/gpu.md)


def compile_mode(value: Any) -> str | None:
    """The torch.compile mode that ``compile=value`` asks for (None: eager). ``true`` is ``COMPILE_TRUE``."""
    if value is None or value is False:
        return None
    if value is True:
        return COMPILE_TRUE
    if value in COMPILE_MODES:
        return value
    raise ConfigError(f"compile must be true, false or one of {', '.join(COMPILE_MODES)}; got {value!r}")


def uses_cuda_graphs(mode: str | None) -> bool:
    return mode in CUDA_GRAPH_MODES
