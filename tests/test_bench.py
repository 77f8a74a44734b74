"""The benchmark's evaluation-batch mode: one line per batch size, each evaluating every image."""

from __future__ import annotations

import re

from cifar_lit.bench import time_eval_batches
from tests.conftest import compose_train


def test_eval_batches_prints_one_timing_per_batch_size(capsys):
    cfg = compose_train(["model=two_blocks"])
    time_eval_batches(cfg, [32, 100], rounds=2, images=200)
    lines = capsys.readouterr().out.splitlines()
    assert [int(re.search(r"eval batch\s+(\d+)", line).group(1)) for line in lines] == [32, 100]
    for line in lines:
        assert "for 200 images (median of 2:" in line
        assert len(re.findall(r"\d+\.\d\d", line.split("median of 2:")[1])) == 2
