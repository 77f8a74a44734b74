"""``trainer.precision=auto``: the precision that is fast on the device the Trainer will use, chosen once at start.

Why: bf16 autocast is the fastest setting on CPUs with bf16 units (AMX, AVX512-BF16) and on GPUs from Ampere on, but
on a CPU without them PyTorch emulates bf16 and training runs several times slower than fp32 (2.8x measured on a
Xeon without AMX/AVX512-BF16, docs/sweeps.md); and GPUs before Ampere have fp16 tensor cores but no bf16. So:

* GPU (``accelerator`` auto with CUDA available, gpu or cuda): ``bf16-mixed`` where the GPU computes bf16 natively,
  else ``16-mixed``;
* CPU (``accelerator=cpu``, or auto without CUDA or MPS): ``bf16-mixed`` where the CPU has AMX-BF16 or AVX512-BF16,
  else ``32-true``;
* anything else (mps, tpu, ...): ``32-true``, the precision every accelerator runs.

An explicit precision passes through unchanged; a value Lightning does not know is a ``ConfigError`` before
anything is built. Entry points resolve it in the config itself (``resolve_trainer_precision``), so the value that
ran is the one the run's records (``run.json``, the HPARAMS entry) show.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from cifar_lit.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"

# What lightning.Trainer(precision=...) accepts (lightning.fabric's _PRECISION_INPUT; tests/test_precision.py checks
# that the two agree). Written out: Lightning keeps its list private.
LIGHTNING_PRECISIONS: tuple[str | int, ...] = (
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of the units that make bf16 fast
CPUINFO = Path("/proc/cpuinfo")  # a module constant: the tests point it at fake files


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux; the first processor's line), None where it cannot be read."""
    try:
        with CPUINFO.open() as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_has_fast_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AMX-BF16 or AVX512-BF16): /proc/cpuinfo's flags on Linux, else
    PyTorch's own (private) probes where this version has them, else False (fp32 is never the slow choice)."""
    flags = cpu_flags()
    if flags is not None:
        return any(flag in flags for flag in CPU_BF16_FLAGS)
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def gpu_has_bf16() -> bool:
    """Whether the current CUDA GPU computes bf16 natively (Ampere or newer), not by emulation."""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def device_kind(accelerator: Any) -> str:
    """``gpu``, ``cpu`` or ``other``: the kind of device ``lightning.Trainer(accelerator=...)`` will use."""
    name = str(accelerator).lower()
    if name in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "gpu"
    if name == "cpu" or (name == "auto" and not torch.backends.mps.is_available()):
        return "cpu"
    return "other"


def choose_precision(accelerator: Any) -> tuple[str, str]:
    """What ``auto`` means for ``accelerator`` on this machine, and why (for the log line and the benchmark)."""
    kind = device_kind(accelerator)
    if kind == "gpu":
        if gpu_has_bf16():
            return "bf16-mixed", "GPU with native bf16"
        return "16-mixed", "GPU without native bf16"
    if kind == "cpu":
        if cpu_has_fast_bf16():
            return "bf16-mixed", "CPU with AMX-BF16 or AVX512-BF16"
        return "32-true", "CPU without AMX-BF16 or AVX512-BF16"
    return "32-true", f"accelerator {accelerator}"


def check_precision(precision: Any) -> None:
    """A one-line ``ConfigError`` unless ``precision`` is ``auto`` or a precision Lightning knows."""
    known = isinstance(precision, str | int) and not isinstance(precision, bool) and precision in LIGHTNING_PRECISIONS
    if precision != AUTO and not known:  # (32.0 == 32 and True == 1: the types are checked too)
        accepted = ", ".join(str(p) for p in (AUTO, *LIGHTNING_PRECISIONS) if not isinstance(p, int))
        raise ConfigError(f"trainer.precision={precision} is not a precision; use one of: {accepted}")


def resolve_precision(precision: Any, accelerator: Any) -> Any:
    """``auto`` -> the precision ``choose_precision`` picks for ``accelerator``; any valid explicit value unchanged
    (an int stays an int); anything else a ``ConfigError``."""
    check_precision(precision)
    return choose_precision(accelerator)[0] if precision == AUTO else precision


def resolve_trainer_precision(trainer: DictConfig) -> Any:
    """Resolve ``trainer.precision`` (a ``trainer`` config node) in place and return the value it held (what was
    asked for, e.g. ``auto``). Idempotent: a resolved node stays as it is. Logs the choice when it was automatic."""
    requested = trainer.get("precision", AUTO)
    check_precision(requested)
    if requested == AUTO:
        resolved, reason = choose_precision(trainer.get("accelerator", "auto"))
        log.info("precision=auto -> %s (%s)", resolved, reason)
        with open_dict(trainer):
            trainer.precision = resolved
    return requested
