"""Every run explains itself: run.json, the command that reruns it, its TensorBoard HPARAMS entry, the debug configs."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cifar_lit.callbacks import provenance
from cifar_lit.callbacks.provenance import RUN_FILE
from cifar_lit.data.cache import cache_file, source_fingerprint
from cifar_lit.hydra_ext.instantiate import build_module
from cifar_lit.train import train
from cifar_lit.training.precision import resolve_precision
from tests.conftest import (
    CLI_ENV,
    ROOT,
    TINY_BLOCKS,
    compose_train,
    hparam_value,
    hparams_summaries,
    run_training,
    scalars,
    synthetic_overrides,
)

# spaces inside an override: the reproduce command must quote it
BLOCKS = "[{in_channels: 3, out_channels: 16, pool: true}, {in_channels: 16, out_channels: 16, pool: true}]"
TAGS = ["provenance", "check"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("provenance_cache")


@pytest.fixture(scope="module")
def run_overrides(synthetic_root, cache_dir) -> list[str]:
    return [
        "experiment=smoke",
        f"model.blocks={BLOCKS}",
        "trainer.max_epochs=2",
        f"tags=[{','.join(TAGS)}]",
        "seed=7",
        "callbacks.progress_bar=null",
        *synthetic_overrides(synthetic_root, cache_dir),
    ]


@pytest.fixture(scope="module")
def run_dir(run_overrides, tmp_path_factory) -> Path:
    """A real two-epoch run (python -m cifar_lit.train), tested at the end."""
    return run_training(tmp_path_factory.mktemp("provenance_run"), *run_overrides)


@pytest.fixture(scope="module")
def record(run_dir) -> dict:
    return json.loads((run_dir / RUN_FILE).read_text())


def git_head() -> str | None:
    """The repository's HEAD commit, None without git."""
    try:
        command = ["git", "rev-parse", "HEAD"]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@pytest.mark.slow
def test_run_json_records_what_ran_on_what_with_which_data(run_dir, record, run_overrides, synthetic_root, cache_dir):
    commit = git_head()
    assert record["git"]["commit"] == commit
    assert isinstance(record["git"]["dirty"], bool) if commit else record["git"]["dirty"] is None
    versions = {name: importlib.metadata.version(name) for name in ("cifar_lit", "torch", "torchvision", "lightning")}
    versions |= {name: importlib.metadata.version(name) for name in ("hydra-core", "torchmetrics")}
    assert record["versions"] == {"python": platform.python_version(), **versions}
    device = record["device"]
    assert (device["accelerator"], device["devices"], device["nodes"], device["precision"]) == (
        "cpu",
        1,
        1,
        resolve_precision("auto", "cpu"),  # the default, chosen for this machine's CPU (tests/test_precision.py)
    )
    assert isinstance(device["name"], str) and device["name"]
    assert record["seed"] == 7 and record["tags"] == TAGS
    data = record["data"]
    assert (data["root"], data["layout"]) == (str(synthetic_root.resolve()), "folder")
    for split in ("train", "test"):  # what the cache stores, not a second hash
        with np.load(cache_file(cache_dir, synthetic_root, split)) as cache:
            assert data[split]["sha256"] == str(cache["sha256"])
        assert data[split]["fingerprint"] == source_fingerprint(synthetic_root, split, "folder")
    module = build_module(compose_train(run_overrides))
    assert record["parameters"] == sum(p.numel() for p in module.parameters())
    assert record["status"] == "finished" and record["wall_time_s"] > 0
    logged = scalars(run_dir)
    assert record["metrics"] == {"val/acc_best": max(logged["val/acc"]), "test/acc": logged["test/acc"][-1]}


@pytest.mark.slow
def test_reproduce_command_composes_the_same_config(run_dir, record):
    words = shlex.split(record["command"])
    assert words[:3] == ["python", "-m", "cifar_lit.train"]
    overrides = words[3:]
    assert overrides == OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    assert f"model.blocks={BLOCKS}" in overrides  # spaces survived the quoting
    cfg = OmegaConf.to_container(compose_train(overrides), resolve=False)
    del cfg["hydra"]  # Hydra's own node (run dir, time stamps) is not part of the run's config
    assert cfg == OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=False)


@pytest.mark.slow
def test_hparams_entry_holds_config_provenance_and_real_metrics(run_dir, record):
    summaries = hparams_summaries(run_dir)
    # written once: TensorBoard keeps the first hparams summary of a run and ignores the others
    assert {tag: len(contents) for tag, contents in summaries.items()} == {
        hparams_metadata.EXPERIMENT_TAG: 1,
        hparams_metadata.SESSION_START_INFO_TAG: 1,
        hparams_metadata.SESSION_END_INFO_TAG: 1,
    }
    experiment = hparams_metadata.parse_experiment_plugin_data(summaries[hparams_metadata.EXPERIMENT_TAG][0])
    metric_tags = [info.name.tag for info in experiment.metric_infos]
    assert sorted(metric_tags) == ["test/acc", "train/trained_epochs", "train/wall_time_s", "val/acc", "val/acc_best"]
    logged = scalars(run_dir)
    assert "hp_metric" not in logged
    for tag in ("test/acc", "val/acc_best"):  # TensorBoard shows a metric's last scalar in the run: the real value
        assert logged[tag][-1] == record["metrics"][tag]
    assert logged["val/acc_best"][-1] == max(logged["val/acc"])
    assert logged["train/trained_epochs"] == [2] and logged["train/wall_time_s"] == pytest.approx(
        [record["wall_time_s"]]
    )

    start = hparams_metadata.parse_session_start_info_plugin_data(summaries[hparams_metadata.SESSION_START_INFO_TAG][0])
    params = {name: hparam_value(value) for name, value in start.hparams.items()}
    assert params["optimizer"] == "RMSprop" and params["lr"] == pytest.approx(0.001)
    assert params["seed"] == 7 and params["blocks"] == 2 and params["precision"] == resolve_precision("auto", "cpu")
    assert not [name for name in params if "_target_" in name or name.startswith(("run/", "callbacks", "hydra"))]
    assert not [value for value in params.values() if isinstance(value, str) and "/" in value]  # no paths
    assert {info.name for info in experiment.hparam_infos} == set(params)


# ---------------------------------------------------------------------------------------------- debug configs
@pytest.mark.parametrize("debug", ["fdr", "limit", "overfit", "profiler"])
def test_debug_config_runs(debug, synthetic_root, tmp_path):
    overrides = [
        f"debug={debug}",
        f"model.blocks={TINY_BLOCKS}",
        "callbacks.progress_bar=null",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    ]
    if debug == "overfit":  # early stopping is dropped (tests/test_config.py); the run must not need it
        overrides += ["callbacks=early_stopping", "trainer.max_epochs=3"]
    metrics = train(compose_train(overrides, output_dir=tmp_path))
    assert np.isfinite(metrics["train/loss"])
    record = json.loads((tmp_path / RUN_FILE).read_text())
    assert record["status"] == "finished"
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    if debug == "fdr":  # one batch of train, val and test
        assert record["metrics"].keys() == {"val/acc_best", "test/acc"}
    if debug == "overfit":  # validated on a few batches, but no best-val/acc checkpoint and no test
        assert checkpoints == ["last.ckpt"]
        assert hparams_metadata.EXPERIMENT_TAG in hparams_summaries(tmp_path)  # after fit: no test follows
        assert "val/acc" in metrics and not any(name.startswith("test/") for name in metrics)
    if debug in ("limit", "profiler"):
        assert record["metrics"].keys() == {"val/acc_best", "test/acc"}
        assert "last.ckpt" in checkpoints and len(checkpoints) == 2
    if debug == "profiler":
        fit_report = (tmp_path / "profiler" / "fit-profile.txt").read_text()
        assert "FIT Profiler Report" in fit_report and "run_training_epoch" in fit_report
        assert "TEST Profiler Report" in (tmp_path / "profiler" / "test-profile.txt").read_text()


@pytest.fixture
def fresh_code_state():
    """``provenance.code_state`` forgetting what it took (before and after the test: other tests see the real one)."""
    provenance.code_state.cache_clear()
    yield provenance.code_state
    provenance.code_state.cache_clear()


def test_run_json_names_the_commit_of_the_processs_first_fit(monkeypatch, tmp_path, fresh_code_state):
    """A multirun sweep runs its jobs in one process; a commit made while it runs must not be credited to later
    jobs, which run the code the process loaded."""
    heads = iter(["at-first-fit", "committed-during-the-sweep"])
    monkeypatch.setattr(provenance, "git_state", lambda repo: {"commit": next(heads), "dirty": False})
    trainer = SimpleNamespace(
        datamodule=None, strategy=SimpleNamespace(root_device=torch.device("cpu")), num_devices=1, num_nodes=1,
        precision="bf16-mixed",
    )  # fmt: skip
    for _ in range(3):  # one fit per job
        record = provenance.RunProvenance(tmp_path).describe(trainer, torch.nn.Linear(2, 2))
        assert record["git"] == {"commit": "at-first-fit", "dirty": False}


def test_importing_the_training_code_runs_no_git(tmp_path):
    """Every import of the training path (tests, eval, each DDP rank) would otherwise pay for a ``git status``."""
    calls = tmp_path / "git-calls.txt"
    fake_git = tmp_path / "bin" / "git"
    fake_git.parent.mkdir()
    fake_git.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake_git.chmod(0o755)
    env = {**CLI_ENV, "PATH": f"{fake_git.parent}{os.pathsep}{CLI_ENV['PATH']}"}
    command = [sys.executable, "-c", "import cifar_lit.train, cifar_lit.callbacks.provenance; import shutil; "
               "print(shutil.which('git'))"]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(fake_git)  # a git run would have been the fake one
    assert not calls.exists(), f"git ran at import: {calls.read_text()}"


def git_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository at ``path`` with ``files`` committed, then an uncommitted file; returns its HEAD."""
    for name, text in files.items():
        assert not Path(name).is_absolute(), name  # inside the repository
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "user's code"]):
        subprocess.run(["git", "-C", str(path), *command], env=env, check=True, capture_output=True)
    (path / "uncommitted.txt").write_text("dirty")
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


PROVENANCE_FILE = "cifar_lit/callbacks/provenance.py"  # where provenance.py sits in a checkout or an install


@pytest.mark.parametrize(
    "where",
    [
        ".venv/lib/python3.11/site-packages",  # a wheel installed in a venv inside the user's repository
        ".",  # the user's repository holds a copy of the package at its top, but is not the project
    ],
)
def test_an_installed_package_inside_another_repository_records_its_version_not_that_repositorys_commit(
    where, monkeypatch, tmp_path, fresh_code_state
):
    """git would answer with the user's commit and dirty flag: only the project's own checkout is asked."""
    pytest.importorskip("cifar_lit")
    git_repo(tmp_path, {"pyproject.toml": '[project]\nname = "users_thing"\n', f"{where}/{PROVENANCE_FILE}": ""})
    monkeypatch.setattr(provenance, "__file__", str(tmp_path / where / PROVENANCE_FILE))
    assert fresh_code_state() == {"commit": None, "dirty": None}
    assert provenance.package_versions()["cifar_lit"] == importlib.metadata.version("cifar_lit")


def test_the_projects_own_checkout_records_its_commit_and_dirty_flag(monkeypatch, tmp_path, fresh_code_state):
    pyproject = (ROOT / "pyproject.toml").read_text()
    head = git_repo(tmp_path / "checkout", {"pyproject.toml": pyproject, PROVENANCE_FILE: ""})
    monkeypatch.setattr(provenance, "__file__", str(tmp_path / "checkout" / PROVENANCE_FILE))
    assert fresh_code_state() == {"commit": head, "dirty": True}


def test_a_checkout_that_is_not_the_git_top_level_is_not_asked(monkeypatch, tmp_path, fresh_code_state):
    """The project's files copied into a folder of the user's repository (vendored): the commit would be theirs."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    git_repo(
        tmp_path, {"vendor/cifar_lit_src/pyproject.toml": pyproject, f"vendor/cifar_lit_src/{PROVENANCE_FILE}": ""}
    )
    monkeypatch.setattr(provenance, "__file__", str(tmp_path / "vendor" / "cifar_lit_src" / PROVENANCE_FILE))
    assert fresh_code_state() == {"commit": None, "dirty": None}
