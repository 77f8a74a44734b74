"""A test-only Hydra app for hydra/launcher=packed (tests/test_launcher.py), run as ``python -m tests.packed_app``:
each job records what its process sees (``job.json``: pid, device slot, threads), then does as its ``fate`` says:
``live`` returns ``x``, ``die`` ends its process at once with status 3 (no result, no FAILED.txt of its own) and
``sleep`` sleeps until it is stopped. No training, so a sweep takes seconds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cifar_lit.hydra_ext.entry import CONFIG_DIR, expose_project_plugins

ENV = ("CUDA_VISIBLE_DEVICES", "CIFAR_LIT_DEVICE_SLOT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

ConfigStore.instance().store(
    name="packed_app",
    node={
        "fate": "live",
        "x": 0.5,
        "hydra": {
            "searchpath": [f"file://{CONFIG_DIR}"],  # the project's hydra/launcher and hydra/sweeper options
            "callbacks": {"summary": {"_target_": "cifar_lit.hydra_ext.sweep.SweepSummary"}},
        },
    },
)


@hydra.main(version_base="1.3", config_path=None, config_name="packed_app")
def main(cfg: DictConfig) -> float:
    import torch

    record = {"pid": os.getpid(), "torch_threads": torch.get_num_threads(), **{k: os.environ.get(k) for k in ENV}}
    (Path(HydraConfig.get().runtime.output_dir) / "job.json").write_text(json.dumps(record))
    if cfg.fate == "die":
        os._exit(3)
    if cfg.fate == "sleep":
        time.sleep(600)
    return float(cfg.x)


if __name__ == "__main__":
    expose_project_plugins()
    main()
