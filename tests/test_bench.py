"""The benchmark's modes on tiny models: evaluation batches, block forms, the convolution floor, one run of each
training path."""

from __future__ import annotations

import re

import torch

from cifar_lit.bench import worker
from cifar_lit.benchmarks.kernels import block_conv_shapes, time_conv_floor, time_eval_batches, time_forms
from cifar_lit.hydra_ext.instantiate import plain
from cifar_lit.network.model import BlockNetwork
from cifar_lit.training.precision import resolve_precision
from tests.conftest import TINY_BLOCKS, compose_train, synthetic_overrides


def test_eval_batches_prints_one_timing_per_batch_size(capsys):
    cfg = compose_train(["model=two_blocks"])
    time_eval_batches(cfg, [32, 100], rounds=2, images=200)
    lines = capsys.readouterr().out.splitlines()
    assert [int(re.search(r"eval batch\s+(\d+)", line).group(1)) for line in lines] == [32, 100]
    for line in lines:
        assert "for 200 images (median of 2:" in line
        assert len(re.findall(r"\d+\.\d\d", line.split("median of 2:")[1])) == 2


def test_forms_times_every_form_precision_and_layout(capsys):
    from cifar_lit.network.block import BLOCK_FORMS

    cfg = compose_train(["model=two_blocks", f"model.blocks={TINY_BLOCKS}", "data.batch_size=4"])
    time_forms(cfg, steps=1, warmup=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device: cpu, batch 4"
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (form, precision, layout)
        for form in BLOCK_FORMS
        for precision in ("fp32", "bf16")
        for layout in ("NCHW", "channels_last")
    ]
    assert all(float(r[3]) > 0 for r in rows)


def test_block_conv_shapes_follow_the_branches_stem_and_pools():
    cfg = compose_train(["experiment=fast94"])
    net = BlockNetwork(**plain(cfg.model))  # stem 3 -> 24 channels, 32 -> 31 pixels; K = 2
    shapes = block_conv_shapes(net, torch.randn(2, 3, 32, 32))
    assert shapes == [
        ((2, 48, 31, 31), 64),
        ((2, 128, 15, 15), 64),
        ((2, 128, 15, 15), 256),
        ((2, 512, 7, 7), 256),
        ((2, 512, 7, 7), 256),
        ((2, 512, 3, 3), 256),
    ]


def test_conv_floor_times_the_step_and_its_convolutions(capsys):
    cfg = compose_train(["model=two_blocks", f"model.blocks={TINY_BLOCKS}", "data.batch_size=4"])
    time_conv_floor(cfg, steps=2, warmup=1, rounds=2)
    lines = capsys.readouterr().out.splitlines()
    precision = "bf16" if resolve_precision("auto", "cpu") == "bf16-mixed" else "fp32"  # the default's choice here
    assert lines[0].startswith(f"device: cpu, batch 4, {precision}, channels_last,")
    assert [line.split(" s per")[0].rsplit(" ", 1)[0].strip() for line in lines[1:3]] == [
        "network training step",
        "3x3 convolutions alone",
    ]
    assert all("(median of 2 x 2 calls)" in line for line in lines[1:3])
    assert 0.0 < float(lines[3].removeprefix("convolution share: ")) < 10.0


def test_both_paths_train_on_synthetic_data(synthetic_root, tmp_path):
    overrides = [*synthetic_overrides(synthetic_root, tmp_path / "cache"), f"model.blocks={TINY_BLOCKS}"]
    for path in ("reference", "project"):
        result = worker(path, overrides, warmup=1, steps=2)
        assert result["path"] == path and result["images_per_s"] > 0 and result["peak_memory_mb"] > 0
