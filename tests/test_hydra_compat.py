"""The project on both Hydra lines (cifar_lit/hydra_ext/hydra_compat.py): a search implies --multirun without a
config setting hydra.mode (which Hydra 1.4 refuses), a search runs its trials, and under 1.4 a config can name
only the targets of the execution whitelist. CI runs this file on Hydra 1.3 (make test) and 1.4
(scripts/hydra_next.sh)."""

from __future__ import annotations

import warnings

import hydra
import pytest

from tests.conftest import CLI_ENV, TINY_BLOCKS, load_optuna_study, run_cli, synthetic_overrides

HYDRA_14 = tuple(int(part) for part in hydra.__version__.split(".")[:2]) >= (1, 4)


def test_a_search_implies_multirun_and_runs_its_trials(synthetic_root, tmp_path):
    """``hparams_search=optuna`` without -m: two trials, each a job of the sweep, on whichever Hydra is installed;
    no deprecation warning from the project's own calls."""
    sweep = tmp_path / "sweep"
    overrides = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1", "test=false"]
    overrides += [f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, tmp_path / "cache")]
    result = run_cli("train", *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state.name for t in load_optuna_study(sweep).trials] == ["COMPLETE", "COMPLETE"]
    assert not [line for line in result.stderr.splitlines() if "Warning:" in line and "cifar_lit/" in line]


def test_the_project_registers_its_resolvers_without_deprecation_warnings():
    from cifar_lit.hydra_ext import hydra_compat

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hydra_compat.register_resolver("cifar_lit_test_resolver", lambda: 1)


@pytest.mark.skipif(not HYDRA_14, reason="Hydra 1.3 has no execution whitelist")
def test_a_target_outside_the_execution_whitelist_is_refused_unless_the_environment_adds_it(synthetic_root, tmp_path):
    overrides = [f"model.blocks={TINY_BLOCKS}", "trainer.max_epochs=1", "test=false"]
    overrides += ["+callbacks.probe._target_=tests.rank_exit_helper.ExitAtShutdown"]
    overrides += synthetic_overrides(synthetic_root, tmp_path / "cache")
    env = {k: v for k, v in CLI_ENV.items() if k != "CIFAR_LIT_EXECUTION_WHITELIST"}
    refused = run_cli("train", *overrides, f"hydra.run.dir={tmp_path / 'refused'}", env=env)
    assert refused.returncode == 1
    assert "tests.rank_exit_helper.ExitAtShutdown" in refused.stderr and "whitelist" in refused.stderr
    allowed = run_cli("train", *overrides, f"hydra.run.dir={tmp_path / 'allowed'}")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
