"""The fast94 ingredients: whitening stem, test-time augmentation, head and BatchNorm switches, and the experiment
run end to end (small) through the train entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from cifar_lit.errors import ConfigError
from cifar_lit.network.model import BlockNetwork
from cifar_lit.network.stem import WhiteningStem
from cifar_lit.train import train
from cifar_lit.training.module import BlockClassifier
from cifar_lit.training.tta import shift, tta_logits
from tests.conftest import compose_train, synthetic_overrides


def correlated_images(n: int = 512, seed: int = 0) -> torch.Tensor:
    """Smooth, colour-correlated images: neighbouring pixels and channels far from independent."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 8, 8, generator=g)
    smooth = nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
    return smooth * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 32, 32, generator=g)


def test_whitening_stem_decorrelates_patches():
    images = correlated_images()
    stem = WhiteningStem(patch=2, eps=1e-6)
    stem.fit(images)
    out = stem(images)
    assert out.shape == (len(images), 24, 31, 31)
    half = out[:, :12].permute(1, 0, 2, 3).flatten(1)  # the + filters; the other 12 are their negatives
    assert torch.allclose(torch.cov(half), torch.eye(12), atol=0.02)
    assert torch.equal(out[:, 12:], -out[:, :12])
    assert bool(stem.fitted)


def test_stem_filters_travel_in_the_state_dict():
    model = {"blocks": [{"in_channels": 24, "out_channels": 8, "pool": True}], "stem": {"patch": 2}}
    net = BlockNetwork(**model)
    net.stem.fit(correlated_images(64))
    copy = BlockNetwork(**model)
    copy.load_state_dict(net.state_dict())
    x = correlated_images(4, seed=1)
    net.eval(), copy.eval()
    assert bool(copy.stem.fitted) and torch.equal(copy(x), net(x))


def test_first_block_must_read_the_stem_channels():
    with pytest.raises(ConfigError, match="stem outputs 24 channels"):
        BlockNetwork(blocks=[{"in_channels": 3, "out_channels": 8}], stem={"patch": 2})


def test_head_pool_and_norm_momentum():
    net = BlockNetwork(blocks=[{"in_channels": 3, "out_channels": 8}], classifier={"pool": "max"}, norm_momentum=0.4)
    assert isinstance(net.classifier[0], nn.AdaptiveMaxPool2d)
    assert {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)} == {0.4}
    with pytest.raises(ConfigError, match="classifier.pool"):
        BlockNetwork(blocks=[{"in_channels": 3, "out_channels": 8}], classifier={"pool": "median"})
    with pytest.raises(ConfigError, match="norm_momentum"):
        BlockNetwork(blocks=[{"in_channels": 3, "out_channels": 8}], norm_momentum=0)


def test_logit_scale_multiplies_the_logits_and_adds_no_state():
    blocks = [{"in_channels": 3, "out_channels": 8}]
    torch.manual_seed(0)
    plain = BlockNetwork(blocks=blocks).eval()
    torch.manual_seed(0)
    scaled = BlockNetwork(blocks=blocks, classifier={"logit_scale": 0.125}).eval()
    assert scaled.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(scaled(x), plain(x) * 0.125)
    with pytest.raises(ConfigError, match="logit_scale"):
        BlockNetwork(blocks=blocks, classifier={"logit_scale": 0})


def test_shift_moves_pixels_and_reflects_the_border():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    down_right = shift(x, 1, 1)
    assert torch.equal(down_right[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(down_right[..., 0, 1:], x[..., 1, :-1])  # row -1 reflects row 1
    up_left = shift(x, -1, -1)
    assert torch.equal(up_left[..., :-1, :-1], x[..., 1:, 1:])


def test_tta_is_the_mean_over_the_named_views():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    x = torch.randn(5, 3, 8, 8)
    assert torch.equal(tta_logits(net, x, "none"), net(x))

    def mirror(image):  # the literal left-right mirror, column by column
        return torch.stack([image[..., -1 - j] for j in range(image.shape[-1])], dim=-1)

    def moved(image, dy, dx):  # pixel (i, j) of the result is pixel (i - dy, j - dx) of the reflected image
        size = image.shape[-1]
        reflect = [abs(k) for k in range(-1, size + 1)]
        reflect = [2 * (size - 1) - k if k >= size else k for k in reflect]
        rows = [reflect[1 + i - dy] for i in range(size)]
        cols = [reflect[1 + j - dx] for j in range(size)]
        return image[..., rows, :][..., cols]

    views = [x, mirror(x)]
    translated = [moved(x, 1, 1), mirror(moved(x, 1, 1)), moved(x, -1, -1), mirror(moved(x, -1, -1))]
    expected_flip = sum(net(v) for v in views) / 2
    expected = expected_flip / 2 + sum(net(v) for v in translated) / 8
    assert torch.allclose(tta_logits(net, x, "flip"), expected_flip, atol=1e-6)
    assert torch.allclose(tta_logits(net, x, "flip_translate"), expected, atol=1e-6)


def test_bad_tta_and_label_smoothing_are_refused():
    model = {"blocks": [{"in_channels": 3, "out_channels": 8}]}
    with pytest.raises(ConfigError, match="tta"):
        BlockClassifier(model, {"lr": 0.1}, tta="rotate")
    with pytest.raises(ConfigError, match="label_smoothing"):
        BlockClassifier(model, {"lr": 0.1}, label_smoothing=1.0)


class LastCheckpointSpy(Callback):
    """Writes, at the start of each training epoch, whether last.ckpt exists yet (one line an epoch, into the
    run dir: the class Hydra imports need not be the one this test module sees)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        checkpoints = Path(trainer.checkpoint_callback.dirpath)
        with open(checkpoints.parent / "last_ckpt_seen.txt", "a") as record:
            record.write(f"{(checkpoints / 'last.ckpt').is_file()}\n")

    def on_validation_end(self, trainer, pl_module) -> None:
        self._record(trainer, "validation")

    def on_test_end(self, trainer, pl_module) -> None:
        self._record(trainer, "test")

    def _record(self, trainer, stage: str) -> None:
        """The test split's loss as evaluated in the fit loop (EMA weights swapped in) and by the final test."""
        with open(Path(trainer.checkpoint_callback.dirpath).parent / "test_loss_seen.txt", "a") as record:
            record.write(f"{stage} {float(trainer.callback_metrics['test/loss'])}\n")


def test_fast94_experiment_runs_end_to_end(synthetic_root, tmp_path):
    """The experiment's whole recipe (stem fitted from data, Muon + warm-up/linear decay, label smoothing,
    alternating flip + reflected translation, EMA, one evaluation after the last epoch, TTA test), on a small
    network and the synthetic set."""
    small = (
        "[{in_channels:24,out_channels:16,pool:true},{in_channels:16,out_channels:16,pool:true},"
        "{in_channels:16,out_channels:16,pool:true}]"
    )
    overrides = [
        "experiment=fast94",
        f"model.blocks={small}",
        "trainer.max_epochs=2",
        "~logger",
        "callbacks=ema",
        "~callbacks.tensorboard_extras",
        "~callbacks.progress_bar",
        "~callbacks.lr_monitor",
        "+callbacks.spy._target_=tests.test_fast94.LastCheckpointSpy",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "data.val_size=0",
        "data.batch_size=64",
    ]
    cfg = compose_train(overrides, output_dir=tmp_path)
    metrics = train(cfg)
    assert {"test/acc", "test/acc_tta"} <= metrics.keys()
    assert 0.0 <= metrics["test/acc_tta"] <= 1.0
    recorded = json.loads((tmp_path / "run.json").read_text())["metrics"]
    assert recorded["test/acc_tta"] == pytest.approx(metrics["test/acc_tta"])  # run.json keeps both test numbers
    checkpoint = torch.load(next((tmp_path / "checkpoints").glob("epoch_*.ckpt")), weights_only=True)
    assert checkpoint["epoch"] == 1  # evaluated (and so checkpointed) after the last epoch only
    seen = (tmp_path / "last_ckpt_seen.txt").read_text().split()
    assert seen == ["False", "True"]  # but last.ckpt is written after every epoch
    losses = dict(line.split() for line in (tmp_path / "test_loss_seen.txt").read_text().splitlines())  # last wins
    assert float(losses["test"]) == pytest.approx(float(losses["validation"]), rel=1e-5)  # the test measures EMA too
    state = checkpoint["state_dict"]
    assert bool(state["net.stem.fitted"]) and state["net.stem.weight"].abs().sum() > 0


SMALL_MODEL = {"blocks": [{"in_channels": 3, "out_channels": 8}, {"in_channels": 8, "out_channels": 16}]}


def optimizer_of(optimizer: dict, scheduler: dict | None = None, **model):
    module = BlockClassifier(model={**SMALL_MODEL, **model}, optimizer=optimizer, scheduler=scheduler)
    return module, module.configure_optimizers()


def test_norm_bias_lr_scale_gives_batchnorm_biases_their_own_group():
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5, "weight_decay": 0.01, "norm_bias_lr_scale": 64}
    onecycle = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.5,
                "total_steps": 10, "interval": "step"}  # fmt: skip
    module, config = optimizer_of(sgd, onecycle)
    others, biases = config["optimizer"].param_groups
    norm_biases = [m.bias for m in module.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(biases["params"]) == len(norm_biases) == 4  # two blocks: a BN each and a BN on each 1x1 skip
    assert all(any(p is b for b in norm_biases) for p in biases["params"])
    assert len(others["params"]) + len(biases["params"]) == len(list(module.net.parameters()))
    assert biases["weight_decay"] * biases["max_lr"] == pytest.approx(others["weight_decay"] * others["max_lr"])
    assert biases["max_lr"] == pytest.approx(64 * others["max_lr"]) and others["max_lr"] == 0.5
    del sgd["norm_bias_lr_scale"]
    assert len(optimizer_of(sgd)[1]["optimizer"].param_groups) == 1
    with pytest.raises(ConfigError, match="norm_bias_lr_scale"):  # at construction, before any data is loaded
        BlockClassifier(model=SMALL_MODEL, optimizer={**sgd, "norm_bias_lr_scale": 0})


def test_an_integer_warmup_fraction_from_the_command_line_is_accepted():
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5}
    onecycle = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.5,
                "total_steps": 10, "pct_start": 0, "div_factor": 1, "interval": "step"}  # fmt: skip
    _, config = optimizer_of(sgd, onecycle)  # `scheduler.pct_start=0` arrives as the int 0
    assert config["optimizer"].param_groups[0]["lr"] == pytest.approx(0.5, rel=0.05)  # no warm-up: at the peak


def test_head_lr_scale_gives_the_classifier_its_own_group():
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5, "weight_decay": 0.01}
    module, config = optimizer_of({**sgd, "head_lr_scale": 0.25, "norm_bias_lr_scale": 8})
    others, biases, head = config["optimizer"].param_groups
    assert [id(p) for p in head["params"]] == [id(p) for p in module.net.classifier.parameters()]
    assert head["lr"] == 0.125 and head["weight_decay"] == pytest.approx(0.04) and biases["lr"] == 4.0
    assert len(others["params"]) + len(biases["params"]) + len(head["params"]) == len(list(module.net.parameters()))
    with pytest.raises(ConfigError, match="head_lr_scale"):
        BlockClassifier(model=SMALL_MODEL, optimizer={**sgd, "head_lr_scale": -1})


def test_frozen_norm_weights_stay_one_and_leave_the_optimizer():
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5}
    module, config = optimizer_of(sgd, freeze_norm_weight=True)
    norms = [m for m in module.net.modules() if isinstance(m, nn.BatchNorm2d)]
    optimized = {id(p) for group in config["optimizer"].param_groups for p in group["params"]}
    assert all(id(m.weight) not in optimized and id(m.bias) in optimized for m in norms)
    loss = module.net(torch.randn(4, 3, 8, 8)).logsumexp(1).sum()
    loss.backward()
    config["optimizer"].step()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert all(m.weight.requires_grad for m in optimizer_of(sgd)[0].net.modules() if isinstance(m, nn.BatchNorm2d))
