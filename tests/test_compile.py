"""compile=...: a compiled network trains as the eager one does (to float rounding), through Lightning's loop; the
training loader's drop_last keeps every batch one shape for the compiled graphs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cifar_lit.callbacks.tensorboard_extras import TensorBoardExtras
from cifar_lit.data.loaders import ResidentLoader
from cifar_lit.hydra_ext.instantiate import build_module, instantiate
from tests.conftest import SMALL_BLOCKS, compose_train, synthetic_overrides


def fitted_weights(overrides: list[str], log_dir: Path) -> dict[str, torch.Tensor]:
    """The network's weights after two epochs; its TensorBoard events (with the gate histograms) in ``log_dir``."""
    cfg = compose_train(overrides)
    L.seed_everything(3)
    module = build_module(cfg)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        precision="32-true",
        logger=TensorBoardLogger(log_dir, name="", version="", default_hp_metric=False),
        callbacks=[TensorBoardExtras()],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=instantiate(cfg.data))
    assert trainer.global_step == 2 * (400 - 100) // 32  # drop_last: 9 full batches an epoch, the 12 images left out
    return {name: tensor.detach().clone() for name, tensor in module.net.state_dict().items()}


@pytest.mark.slow
def test_compiled_training_equals_eager(synthetic_root, tmp_path):
    """Two epochs (18 SGD steps, BatchNorm statistics, validation) of the eager network and of the compiled one
    (``compile=true``: reduce-overhead, which on a CPU compiles as ``default`` does) from the same seed."""
    overrides = [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        f"model.blocks={SMALL_BLOCKS}",
        "data.drop_last=true",
        "model.classifier.dropout=0",  # compiled code draws dropout masks from its own generator
        "optimizer=sgd",  # RMSprop's first steps are ~lr x sign(gradient): rounding flips the sign of tiny gradients
    ]
    eager = fitted_weights([*overrides, "compile=false"], tmp_path / "eager")
    torch._dynamo.reset()
    compiled = fitted_weights([*overrides, "compile=true"], tmp_path / "compiled")
    for run in ("eager", "compiled"):  # the compiled net's gates come from an eager pass (no hooks in its graphs)
        events = EventAccumulator(str(tmp_path / run))
        events.Reload()
        assert {"weights/block0/branch0", "weights/block1/branch2"} <= set(events.Tags()["scalars"]), run
    assert eager.keys() == compiled.keys()
    moved = [name for name, w in eager.items() if w.is_floating_point() and "weight" in name]
    assert moved  # the comparison below covers the filters, gates, BatchNorm and head
    # fused kernels round differently; 18 steps grow that to ~1e-4 in the weights and ~1e-3 in BatchNorm's running
    # statistics (a wrong gate, branch or statistic moves them by 1e-1 and more)
    for name, weight in eager.items():
        torch.testing.assert_close(compiled[name], weight, rtol=1e-2, atol=3e-3, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("drop_last, sizes", [(False, [4, 4, 2]), (True, [4, 4])])
def test_drop_last_serves_only_full_batches(drop_last, sizes):
    images = torch.zeros(10, 32, 32, 3, dtype=torch.uint8)
    loader = ResidentLoader(
        images, torch.arange(10), torch.zeros(3), torch.ones(3), 4, shuffle=True, drop_last=drop_last
    )
    assert [len(labels) for _, labels in loader] == sizes
    assert len(loader) == len(sizes)


def test_drop_last_is_for_training_batches_only(synthetic_root, tmp_path):
    cfg = compose_train([*synthetic_overrides(synthetic_root, tmp_path / "cache"), "data.drop_last=true"])
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert sum(len(y) for _, y in datamodule.train_dataloader()) == (400 - 100) // 32 * 32
    assert sum(len(y) for _, y in datamodule.val_dataloader()[0]) == 100
