"""The benchmark's modes on tiny models: evaluation batches, block forms, one run of each training path."""

from __future__ import annotations

import re

from cifar_lit.bench import time_eval_batches, time_forms, worker
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
    from cifar_lit.block import BLOCK_FORMS

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


def test_both_paths_train_on_synthetic_data(synthetic_root, tmp_path):
    overrides = [*synthetic_overrides(synthetic_root, tmp_path / "cache"), f"model.blocks={TINY_BLOCKS}"]
    for path in ("reference", "project"):
        result = worker(path, overrides, warmup=1, steps=2)
        assert result["path"] == path and result["images_per_s"] > 0 and result["peak_memory_mb"] > 0
