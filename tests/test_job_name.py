"""A sweep's job folders say what each job varies (cifar_lit.hydra_ext.job_name), in names every file system takes."""

from __future__ import annotations

import pytest

from cifar_lit.hydra_ext.job_name import MAX_NAME, job_name
from tests.conftest import compose_train


def test_a_name_holds_the_job_number_and_the_swept_keys_shortened():
    overrides = ["experiment=smoke", "optimizer.lr=0.0012341234567", "data.batch_size=32", "seed=3"]
    assert job_name(4, overrides, exclude={"experiment", "seed"}) == "4_lr=0.001234,batch_size=32"


def test_keys_sharing_their_last_part_keep_their_whole_name():
    overrides = ["model.classifier.dropout=0.1", "model.stem.dropout=0.2", "optimizer.lr=0.1"]
    assert job_name(0, overrides, set()) == "0_model.classifier.dropout=0.1,model.stem.dropout=0.2,lr=0.1"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("[16,32]", "_16_32_"),  # brackets and commas: not in a folder name
        ('"a b/c"', "_a_b_c_"),  # quotes, a space, a path separator
        ("1e-05", "1e-05"),  # short floats as written
        ("x" * 40, "x" * 16 + "-"),  # long values: their start and a hash of the whole
    ],
)
def test_values_keep_to_safe_characters(value, shown):
    name = job_name(1, [f"model.blocks={value}", "optimizer.lr=0.1"], set())
    assert name.startswith(f"1_blocks={shown}") and name.endswith(",lr=0.1")


def test_long_values_stay_distinct_and_a_name_stays_short():
    first, second = (job_name(0, [f"tag={'y' * 40}{end}"], set()) for end in "ab")
    assert first != second
    many = [f"key{i}=value_{i}_{'z' * 20}" for i in range(20)]
    assert len(job_name(12, many, set())) <= MAX_NAME


def test_the_sweepers_trial_callback_and_fixed_keys_are_not_in_the_name():
    overrides = ["optimizer.lr=0.1", "+callbacks.optuna_pruning.trial_number=3", "experiment=smoke"]
    assert job_name(3, overrides, {"experiment"}) == "3_lr=0.1"
    assert job_name(3, ["experiment=smoke"], {"experiment"}) == "3"


def test_the_sweep_config_names_its_jobs_by_the_swept_keys(tmp_path):
    """The composed config's hydra.sweep.subdir: the job's overrides less the excluded keys (which the
    SweptKeysOnly callback fills with the command's fixed ones at the start of a multirun)."""
    exclude = "hydra.job.config.override_dirname.exclude_keys=[experiment]"
    cfg = compose_train(["experiment=smoke", "optimizer.lr=0.01", exclude, f"hydra.sweep.dir={tmp_path}"])
    cfg.hydra.job.num = 2
    assert cfg.hydra.sweep.subdir == "2_lr=0.01"


def test_a_key_fixed_then_swept_on_one_command_line_is_named(tmp_path):
    """``data.batch_size=32 ... data.batch_size=8,16``: the later sweep wins, so the key is in the jobs' names."""
    from omegaconf import read_write

    from cifar_lit.hydra_ext.job_name import EXCLUDE_KEYS, SweptKeysOnly

    cfg = compose_train(["data.batch_size=32", "optimizer.lr=0.1"], output_dir=tmp_path)
    with read_write(cfg.hydra.overrides):
        cfg.hydra.overrides.task = ["data.batch_size=32", "optimizer.lr=0.1", "data.batch_size=8,16"]
    SweptKeysOnly().on_multirun_start(cfg)
    assert cfg.hydra.overrides.hydra[-1] == f"{EXCLUDE_KEYS}=['optimizer.lr']"
