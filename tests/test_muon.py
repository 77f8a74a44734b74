"""cifar_lit.muon: Newton-Schulz against the SVD it approximates, SGD groups against torch.optim.SGD, filters held
at their norm, schedulers and checkpoints seeing one optimizer."""

from __future__ import annotations

import copy
import functools
import inspect

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from cifar_lit.training.module import BlockClassifier
from cifar_lit.training.muon import Muon, orthogonalize
from tests.conftest import compose_train

SMALL_MODEL = {"blocks": [{"in_channels": 3, "out_channels": 8}, {"in_channels": 8, "out_channels": 16}]}


@functools.cache
def muon_config() -> dict:
    """``optimizer=muon`` as the train config composes it: the one source of Muon's settings."""
    return OmegaConf.to_container(compose_train(["optimizer=muon"]).optimizer, resolve=True)


def muon(params, **changes) -> Muon:
    """A Muon with the config's settings, but for ``changes``."""
    settings = {key: value for key, value in muon_config().items() if not key.startswith("_")}
    return Muon(params, **settings | changes)


def test_the_config_sets_every_muon_setting_and_no_code_default_contradicts_it():
    """So ``Muon(params, lr=...)`` and ``optimizer=muon`` cannot train differently, and a run's saved config holds
    every value it used."""
    config = muon_config()
    settings = {name: p for name, p in inspect.signature(Muon).parameters.items() if name != "params"}
    assert set(settings) <= set(config)
    contradicted = {
        name: (p.default, config[name])
        for name, p in settings.items()
        if p.default is not inspect.Parameter.empty and p.default != config[name]
    }
    assert not contradicted, "Muon's default (first) differs from conf/optimizer/muon.yaml's (second)"


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 0.15)])
@pytest.mark.parametrize("shape", [(16, 72), (72, 16)])
def test_orthogonalize_keeps_the_singular_vectors_and_flattens_the_spectrum(shape, dtype, tolerance):
    """The literal form: U V^T from the SVD. Newton-Schulz gives U S' V^T with S' near 1 (not exactly 1: the
    coefficients trade convergence for speed), whatever the spread of the original singular values. In bfloat16
    the rounding leaks up to about 0.1 off the diagonal (measured 0.07-0.09); the spectrum flattens all the same."""
    g = torch.Generator().manual_seed(0)
    u, _, vh = torch.linalg.svd(torch.randn(*shape, generator=g), full_matrices=False)
    spread = torch.logspace(0, -3, min(shape))  # singular values from 1 down to 1e-3
    matrix = u @ torch.diag(spread) @ vh
    s_prime = u.T @ orthogonalize(matrix, steps=10, dtype=dtype).float() @ vh.T  # diagonal: singular vectors kept
    off_diagonal = s_prime - torch.diag(torch.diagonal(s_prime))
    assert off_diagonal.abs().max() < tolerance
    assert torch.diagonal(s_prime).min() > 0.6 and torch.diagonal(s_prime).max() < 1.3
    ratio = spread.max() / spread.min()
    assert torch.diagonal(s_prime).max() / torch.diagonal(s_prime).min() < ratio / 100


def test_parameters_that_are_not_filters_get_torch_sgd_updates():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3))
    twin = copy.deepcopy(net)
    muon_sgd = muon(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    sgd = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    assert [g["orthogonalize"] for g in muon_sgd.param_groups] == [False]  # no 4-D tensor: no filter group
    for step in range(3):
        x = torch.randn(8, 6, generator=torch.Generator().manual_seed(step))
        for model, optimizer in ((net, muon_sgd), (twin, sgd)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for p, q in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_an_unknown_newton_schulz_dtype_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="ns_dtype must be one of .*'bfloat16'.*got 'half'"):
        muon(nn.Linear(2, 2).parameters(), lr=0.1, ns_dtype="half")


@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
def test_filters_move_but_keep_their_norm(ns_dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3)
    start = conv.weight.detach().clone()
    optimizer = muon(conv.parameters(), lr=0.1, filter_lr=0.2, ns_dtype=ns_dtype)
    filters = [g for g in optimizer.param_groups if g["orthogonalize"]]
    assert len(filters) == 1 and filters[0]["params"][0] is conv.weight and filters[0]["weight_decay"] == 0
    for _ in range(3):
        optimizer.zero_grad()
        conv(torch.randn(2, 4, 6, 6)).square().sum().backward()
        optimizer.step()
    torch.testing.assert_close(conv.weight.norm(), start.norm())
    assert (conv.weight - start).norm() > 0.1 * start.norm()


def test_muon_trains_the_block_network_and_resumes_from_its_state_dict():
    onecycle = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.1,
                "total_steps": 40, "interval": "step"}  # fmt: skip
    settings = muon_config() | {"lr": 0.1, "weight_decay": 1e-3, "filter_lr": 0.2}
    module = BlockClassifier(model=SMALL_MODEL, optimizer=settings, scheduler=onecycle)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    filters = [g for g in optimizer.param_groups if g["orthogonalize"]]
    assert filters and all(p.ndim == 4 for g in filters for p in g["params"])
    assert all(g["max_lr"] == pytest.approx(0.2) for g in filters)  # OneCycleLR peaks at filter_lr for them
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)

    def train_steps(module, optimizer, steps, scheduler=None):
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(module(x), y)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.item())
        return losses

    losses = train_steps(module, optimizer, 30, scheduler)
    assert losses[-1] < 0.7 * losses[0]
    resumed = BlockClassifier(model=SMALL_MODEL, optimizer=settings, scheduler=onecycle)
    resumed.load_state_dict(module.state_dict())
    resumed_optimizer = resumed.configure_optimizers()["optimizer"]
    resumed_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as from disk: no shared buffers
    train_steps(module, optimizer, 2), train_steps(resumed, resumed_optimizer, 2)
    for p, q in zip(module.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"lr": 0}, "lr"), ({"lr": 0.1, "filter_lr": -1}, "filter_lr"), ({"lr": 0.1, "filter_momentum": 1}, "momentum")],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        muon(nn.Conv2d(1, 1, 3).parameters(), **kwargs)
