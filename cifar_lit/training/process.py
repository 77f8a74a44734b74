"""Process-wide settings a run makes before any tensor work: the seed, torch's thread count and glibc malloc's reuse
of freed memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import sys
from typing import Any

import lightning as L
import torch

from cifar_lit.errors import ConfigError

log = logging.getLogger(__name__)


def seed_run(seed: int | None) -> int:
    """Seed Python, numpy and torch (Lightning's ``seed_everything``) with ``seed``; returns the seed used.

    ``seed=null`` draws one, logged so that ``seed=<it>`` repeats the run. Lightning's DDP ranks 1..N-1 re-run the
    command line in rank 0's environment, where ``seed_everything`` left the seed (``PL_GLOBAL_SEED``): they take
    it instead of drawing their own, so all ranks shuffle and shard with one seed."""
    if seed is None and "PL_GLOBAL_SEED" not in os.environ:
        seed = random.SystemRandom().randrange(2**31)
        log.info("seed=null: drew seed %d; seed=%d repeats this run", seed, seed)
    return L.seed_everything(seed, workers=True)


def set_threads(threads: Any) -> None:
    """``torch.set_num_threads(threads)`` before any tensor work, so parallel jobs (hydra/launcher=joblib) share
    the cores; None keeps torch's default."""
    if threads is None:
        return
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a number of threads >= 1 or null, got {threads!r}")
    torch.set_num_threads(threads)
    log.info("torch threads: %d", threads)


GLIBC_M_TRIM_THRESHOLD, GLIBC_M_MMAP_MAX = -1, -4  # mallopt() parameters, from glibc's malloc.h


def keep_freed_memory(enabled: bool = True) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    CPU tensors come from malloc. By default glibc serves each large block (a batch of activations: 33 MiB for
    128 x 128 x 32 x 32 in bf16) with its own ``mmap`` and unmaps it when the tensor is freed, so every step
    page-faults all of its activations in again: on the 2-core CPU about 100,000 faults and a third of the time
    of a four_blocks step, spent in the kernel (docs/performance.md). With mmap off and heap trimming off, freed
    blocks are reused. Returns whether it applied (Linux with glibc; elsewhere it does nothing)."""
    if not enabled or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl)
        return False
    applied = libc.mallopt(GLIBC_M_MMAP_MAX, 0) == 1 and libc.mallopt(GLIBC_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if applied:
        log.info("malloc keeps freed memory for reuse (keep_freed_memory=true)")
    return applied
