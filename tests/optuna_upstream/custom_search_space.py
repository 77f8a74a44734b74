"""Upstream hydra-optuna-sweeper's custom search space example (example/custom-search-space-objective.py), written
for this port: ``configure`` suggests z near the sampled x, and a new key w (``+w``: not in the config)."""

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(version_base=None, config_path="custom_search_space_conf", config_name="config")
def sphere4(cfg: DictConfig) -> float:
    return sum(float(cfg[key]) ** 2 for key in ("w", "x", "y", "z"))


def configure(cfg: DictConfig, trial: Trial) -> None:
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    sphere4()
