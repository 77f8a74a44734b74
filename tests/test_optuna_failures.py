"""An Optuna search that cannot do what the command asks says so before its first trial, not in a traceback at its
second (a sampler whose package is missing), and one whose command fixes a key runs every job with it (``++key=v``
as ``key=v``): nothing is recorded that did not run."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import (
    CLI_ENV,
    CONF_DIR,
    ROOT,
    TINY_BLOCKS,
    cli_command,
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
def test_cmaes_runs_a_search_of_several_trials(synthetic_root, tmp_path):
    """CMA-ES draws its first trial at random and needs the cmaes package only from the second on: three trials
    complete, the later two sampled by CMA-ES itself (its generation recorded in the trial)."""
    from optuna.trial import TrialState

    search = tiny_search(synthetic_root, tmp_path, "hydra/sweeper/optuna_sampler=cmaes", "hydra.sweeper.n_trials=3")
    result = run_cli("train", *search, "data.batch_size=64", "model.num_branches=1")  # CMA-ES: lr and dropout
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_optuna_study(tmp_path / "sweep").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all("cma:generation" in t.system_attrs for t in trials[1:])


def test_every_sampler_option_needs_only_what_the_sweeps_extra_installs():
    """What each option of conf/hydra/sweeper/optuna_sampler/ imports once it samples is in the ``sweeps`` extra, so
    ``pip install 'cifar_lit[sweeps]'`` runs them all (and the check before the first trial passes here)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from packaging.requirements import Requirement

    from cifar_lit.hydra_ext.optuna_sampler import SAMPLER_NEEDS, check_sampler

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    sweeps = {Requirement(requirement).name for requirement in extras["sweeps"]}
    folder = CONF_DIR / "hydra" / "sweeper" / "optuna_sampler"
    options = {path.stem: OmegaConf.load(path)._target_ for path in folder.glob("*.yaml")}
    assert set(options) == {"tpe", "random", "grid", "cmaes"}
    for option, target in options.items():
        check_sampler({"_target_": target})
        module, _, name = target.rpartition(".")
        sampler = getattr(importlib.import_module(module), name)
        needs = {module for cls, modules in SAMPLER_NEEDS.items() if issubclass(sampler, cls) for module in modules}
        assert needs <= sweeps, f"{option} needs {needs - sweeps}, which the sweeps extra does not install"


def test_a_sampler_whose_package_is_missing_is_refused_before_the_first_trial(synthetic_root, tmp_path):
    """Without cmaes (a module of that name that cannot be imported, first on the path) the cmaes option stops the
    search in one line naming what to install, before any job ran."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "cmaes.py").write_text("raise ModuleNotFoundError(\"No module named 'cmaes'\", name='cmaes')\n")
    env = {**CLI_ENV, "PYTHONPATH": f"{shadow}:{CLI_ENV.get('PYTHONPATH', '')}"}
    sweep = tmp_path / "sweep"
    command = cli_command("train", *tiny_search(synthetic_root, tmp_path, "hydra/sweeper/optuna_sampler=cmaes"))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.sampler optuna.samplers.CmaEsSampler needs the cmaes package: "
        "pip install 'cifar_lit[sweeps]'"
    )
    assert not sweep.exists() or not job_folders(sweep)


def test_a_sampler_that_cannot_be_imported_is_one_line(synthetic_root, tmp_path):
    result = run_cli("train", *tiny_search(synthetic_root, tmp_path, "hydra.sweeper.sampler._target_=no_such.Sampler"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hydra.sweeper.sampler no_such.Sampler cannot be imported"), last


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
