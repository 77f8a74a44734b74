"""The lr schedulers over the real optimizers: a schedule moves the learning rate and nothing else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cifar_lit.hydra_ext.instantiate import build_module, plain
from cifar_lit.training.optim import build_optimizer, build_scheduler
from tests.conftest import TINY_BLOCKS, compose_train

STEPS = 20


@pytest.mark.parametrize("optimizer_name", ["rmsprop", "muon"])
def test_onecycle_cycles_the_lr_and_keeps_the_optimizers_momentum(optimizer_name, tmp_path):
    """OneCycleLR's momentum cycling would set every group's momentum to 0.85-0.95: RMSprop's 0 (the seed's
    plain RMSprop) would become a momentum, Muon's filter momentum would be overwritten."""
    overrides = [f"optimizer={optimizer_name}", "scheduler=onecycle", f"model.blocks={TINY_BLOCKS}"]
    cfg = compose_train(overrides, output_dir=tmp_path)
    net = build_module(cfg).net
    optimizer = build_optimizer(net, plain(cfg.optimizer))
    scheduler = build_scheduler(plain(cfg.scheduler), optimizer, lambda: STEPS)["scheduler"]
    wanted = [
        cfg.optimizer.filter_momentum if group.get("orthogonalize") else cfg.optimizer.get("momentum", 0.0)
        for group in optimizer.param_groups
    ]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    lrs = []
    for _ in range(STEPS - 1):  # the scheduler's first step is its construction
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        scheduler.step()
        assert [group["momentum"] for group in optimizer.param_groups] == wanted
        lrs.append(optimizer.param_groups[0]["lr"])
    group = optimizer.param_groups[0]
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(group["max_lr"]) and 0 < peak < len(lrs) - 1  # up to the peak, then down
    assert lrs[:peak] == sorted(lrs[:peak]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)
    assert lrs[-1] < group["initial_lr"] < group["max_lr"]
