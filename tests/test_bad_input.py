"""Every bad input, through the real command line: exit status non-zero, no traceback, a message naming it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BAD_IMAGE, IMAGE_DAMAGE, broken_copy, empty_ship_folder, run_cli, synthetic_overrides

DATA_CASES = {
    "empty class folder": (empty_ship_folder, "ship"),
    **{case: (damage, str(BAD_IMAGE)) for case, damage in IMAGE_DAMAGE.items()},
}
# (entry point, overrides, what the message must name); {tmp} is the test's folder
VALUE_CASES = {
    "missing data dir": ("train", ["data.root={tmp}/nowhere"], "{tmp}/nowhere"),
    "negative lr": ("train", ["optimizer.lr=-1"], "optimizer.lr"),
    "unknown precision": ("train", ["trainer.precision=fp16"], "trainer.precision=fp16"),
    "zero batch size": ("train", ["data.batch_size=0"], "data.batch_size"),
    "dropout above 1": ("train", ["model.classifier.dropout=1.5"], "model.classifier.dropout"),
    "no branches (K=0)": ("train", ["model.num_branches=0"], "model.num_branches"),
    "unknown compile mode": ("train", ["compile=fastest"], "compile must be true, false or one of"),
    "unknown optimizer option": ("train", ["optimizer=nonexistent"], "nonexistent"),
    "unknown optimizer class": ("train", ["optimizer._target_=torch.optim.Nope"], "torch.optim.Nope"),
    "argument the optimizer lacks": ("train", ["optimizer=rmsprop", "+optimizer.nesterov=true"], "optimizer.nesterov"),
    "missing checkpoint to resume": ("train", ["ckpt_path={tmp}/missing.ckpt"], "{tmp}/missing.ckpt"),
    "missing last checkpoint": ("train", ["ckpt_path=last"], "{tmp}/run/checkpoints/last.ckpt"),
    "missing checkpoint to evaluate": ("eval", ["ckpt_path={tmp}/missing.ckpt"], "{tmp}/missing.ckpt"),
    "directory as checkpoint": ("eval", ["ckpt_path={tmp}"], "{tmp}"),
    "run folder under a file": ("train", ["hydra.run.dir={tmp}/file/run"], "{tmp}/file"),
}


def assert_clean_failure(result: subprocess.CompletedProcess, named: str) -> None:
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert named in result.stderr, result.stderr[-3000:]


def common(synthetic_root: Path, tmp_path: Path) -> list[str]:
    """Cheapest path: if a bad value slipped through, one batch would run, not an epoch."""
    return [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "trainer.fast_dev_run=true",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data_fails_cleanly(synthetic_root, tmp_path, case):
    damage, named = DATA_CASES[case]
    root = broken_copy(synthetic_root, tmp_path, damage)
    result = run_cli("train", *common(synthetic_root, tmp_path), f"data.root={root}")
    assert_clean_failure(result, named)


@pytest.mark.slow
@pytest.mark.parametrize("case", VALUE_CASES)
def test_bad_value_fails_cleanly(synthetic_root, tmp_path, case):
    entry, overrides, named = VALUE_CASES[case]
    (tmp_path / "file").write_text("a regular file, not a folder")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    keys = {o.split("=")[0] for o in overrides}
    result = run_cli(entry, *(o for o in common(synthetic_root, tmp_path) if o.split("=")[0] not in keys), *overrides)
    assert_clean_failure(result, named.format(tmp=tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the case above covers root")
def test_read_only_output_folder_fails_cleanly(synthetic_root, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    result = run_cli("train", *common(synthetic_root, tmp_path)[:-1], f"hydra.run.dir={locked / 'run'}")
    assert_clean_failure(result, str(locked))
