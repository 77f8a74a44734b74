"""Upstream hydra-optuna-sweeper's example app (example/sphere.py), written for this port: x^2 + y^2, minimised;
``error=true`` makes every trial raise (tests/test_optuna_upstream.py)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return float(cfg.x) ** 2 + float(cfg.y) ** 2


if __name__ == "__main__":
    sphere()
