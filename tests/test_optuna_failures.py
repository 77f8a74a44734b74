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

    search = tiny_search(synthetic_root, tmp_path, "hydra/sweeper/sampler=cmaes", "hydra.sweeper.n_trials=3")
    result = run_cli("train", *search, "data.batch_size=64", "model.num_branches=1")  # CMA-ES: lr and dropout
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_optuna_study(tmp_path / "sweep").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert all("cma:generation" in t.system_attrs for t in trials[1:])


def test_every_sampler_option_needs_only_what_the_sweeps_extra_installs():
    """What each option of hydra/sweeper/sampler imports once it samples is in the ``sweeps`` extra, so
    ``pip install 'cifar_lit[sweeps]'`` runs them all (and the check before the first trial passes here)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from packaging.requirements import Requirement

    from cifar_lit.hydra_ext.optuna_sampler import SAMPLER_NEEDS, check_sampler

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    sweeps = {Requirement(requirement).name for requirement in [*extras["sweeps"], *base]}  # torch: the project's
    from hydra_plugins.cifar_lit_optuna_sweeper import SAMPLERS

    options = {name: node["_target_"] for name, node in SAMPLERS.items()}
    assert set(options) >= {"tpe", "random", "grid", "cmaes", "gp", "qmc", "nsgaii"}  # upstream's, Optuna 5's
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
    command = cli_command("train", *tiny_search(synthetic_root, tmp_path, "hydra/sweeper/sampler=cmaes"))
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


@pytest.mark.slow
def test_a_multi_objective_search_shows_its_pareto_front(synthetic_root, tmp_path):
    """Maximise val/acc_best and minimise the parameter count over K (model.num_branches: K convolutions a block)
    on a grid: the study has both directions, each trial the two values its job returned, and summary.md lists the
    Pareto front: the jobs no other beats in both, the one-branch network among them (the fewest parameters)."""
    search = tiny_search(
        synthetic_root,
        tmp_path,
        "objectives=[val/acc_best,model/params]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=null",
        "hydra.sweeper.params=null",
        "model.num_branches=1,2,3",
    )
    result = run_cli("train", *search, "data.batch_size=64")
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_optuna_study(tmp_path / "sweep")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val/acc_best", "model/params"]  # as optuna-dashboard shows them
    values = {t.params["model.num_branches"]: t.values for t in study.trials}
    assert sorted(values) == [1, 2, 3] and values[1][1] < values[2][1] < values[3][1]
    front = {t.params["model.num_branches"] for t in study.best_trials}
    assert 1 in front and front == {
        k
        for k in values
        if not any(
            values[o][0] >= values[k][0] and values[o][1] <= values[k][1] and values[o] != values[k] for o in values
        )
    }
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    section = summary.split("## Pareto front", 1)[1]
    assert "| job | overrides | val/acc_best | model/params |" in section
    assert all(f"model.num_branches={k}" in section for k in front)
    assert all(f"model.num_branches={k}" not in section for k in set(values) - front)


def test_a_search_in_memory_runs_without_a_storage_and_refuses_a_pruner(synthetic_root, tmp_path):
    """hydra.sweeper.storage=null (upstream's examples write it): the study lives in the search's memory, its jobs
    report nothing to it, so a pruner is refused in one line; without one the trials complete."""
    search = tiny_search(synthetic_root, tmp_path, "hydra.sweeper.storage=null", "hydra.sweeper.n_trials=2")
    refused = run_cli("train", *search)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("error: hydra.sweeper.pruner needs jobs that report")
    result = run_cli("train", *search, "hydra/sweeper/pruner=none", "data.batch_size=64")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "sweep"
    assert not (sweep / "optuna.journal").exists() and len(job_folders(sweep)) == 2
    overrides = [(job / ".hydra" / "overrides.yaml").read_text() for job in job_folders(sweep).values()]
    assert not any("optuna_pruning" in text for text in overrides)  # no callback: nothing to report to
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value > 0
