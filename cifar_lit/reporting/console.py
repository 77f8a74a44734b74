"""What a run prints for people: the composed config as a tree, and the final metrics as a table."""

from __future__ import annotations

from collections.abc import Mapping

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from cifar_lit.reporting.secrets import mask_secrets


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """The composed config, resolved, as a tree: the top-level values, then one branch per group (Hydra's own
    node left out), so a run's output starts with what it runs. ``.hydra/config.yaml`` in the run dir keeps it."""

    def yaml(node: DictConfig) -> Syntax:
        text = mask_secrets(OmegaConf.to_yaml(node, resolve=True).rstrip())  # a job's log may be a file (SLURM)
        return Syntax(text, "yaml", theme="ansi_dark", word_wrap=True)

    groups = [key for key, node in cfg.items() if isinstance(node, DictConfig) and key != "hydra"]
    values = [key for key in cfg if not isinstance(cfg[key], DictConfig)]
    tree = Tree("config", guide_style="dim")
    tree.add(yaml(OmegaConf.masked_copy(cfg, values)))
    for key in groups:
        tree.add(str(key)).add(yaml(cfg[key]))
    Console().print(tree)


@rank_zero_only
def print_metrics(metrics: Mapping[str, float]) -> None:
    table = Table(title="final metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in sorted(metrics):
        table.add_row(name, f"{metrics[name]:.4f}")
    Console().print(table)
