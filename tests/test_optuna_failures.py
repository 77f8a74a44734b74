"""An Optuna search that cannot do what the command asks says so before its first trial, not in a traceback at its
second (a sampler whose package is missing), and one whose command fixes a key runs every job with it (``++key=v``
as ``key=v``): nothing is recorded that did not run."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import (
    TINY_BLOCKS,
    job_folders,
    load_optuna_study,
    run_cli,
    synthetic_overrides,
)

pytest.importorskip("optuna")


def tiny_search(synthetic_root: Path, tmp_path: Path, *extra: str) -> list[str]:
    """hparams_search=optuna over 1-epoch trials of the tiny network, into ``tmp_path/sweep``."""
    return [
        "hparams_search=optuna",
        "trainer.max_epochs=1",
        "test=false",
        f"model.blocks={TINY_BLOCKS}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        *extra,
    ]


@pytest.mark.slow
def test_a_forced_key_leaves_the_search_space(synthetic_root, tmp_path):
    """``++optimizer.lr=0.003`` fixes the lr as ``optimizer.lr=0.003`` would: the trials do not sample it (Optuna
    would record an lr that did not run), every job runs 0.003."""
    search = tiny_search(synthetic_root, tmp_path, "hydra.sweeper.n_trials=2", "++optimizer.lr=0.003")
    result = run_cli("train", *search)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    trials = load_optuna_study(sweep).trials
    assert len(trials) == 2 and all(t.params and not any(k.endswith("optimizer.lr") for k in t.params) for t in trials)
    jobs = job_folders(sweep)
    assert sorted(jobs) == [0, 1]
    for job in jobs.values():
        assert OmegaConf.load(job / ".hydra" / "config.yaml").optimizer.lr == 0.003
        assert "lr=" not in job.name  # the job's name shows what it varies
