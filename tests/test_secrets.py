"""Credentials in an Optuna storage URL reach no file, log or HPARAMS entry the project writes; the storage given
through $CIFAR_LIT_OPTUNA_STORAGE reaches no file of the sweep at all (Hydra's own included)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from cifar_lit.callbacks.provenance import reproduce_command
from cifar_lit.reporting.console import print_config_tree
from cifar_lit.reporting.hparams import comparable_hparams
from cifar_lit.reporting.secrets import STORAGE_ENV, mask_secrets, mask_value
from cifar_lit.training.resume import resume_hint
from tests.conftest import (
    CLI_ENV,
    SMALL_BLOCKS,
    compose_train,
    files_containing,
    job_folder,
    run_cli,
    synthetic_overrides,
)

SECRET = "S3cr3t-m4rker"
URL = f"postgresql://optuna_user:{SECRET}@db.example.org:5432/studies"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (URL, "postgresql://optuna_user:***@db.example.org:5432/studies"),
        (f"storage='{URL}' seed=1", "storage='postgresql://optuna_user:***@db.example.org:5432/studies' seed=1"),
        ("redis://:pa%40ss@cache:6379/0", "redis://:***@cache:6379/0"),
        ("mysql+pymysql://u:p@h/db and https://x:y@z", "mysql+pymysql://u:***@h/db and https://x:***@z"),
        # no password: unchanged (a port, a user alone, an "@" in a path, a file path, sqlite)
        ("postgresql://db.example.org:5432/studies", None),
        ("postgresql://user@host/db", None),
        ("https://host:8080/a@b", None),
        ("/runs/multirun/optuna.journal", None),
        ("sqlite:////tmp/study.db", None),
    ],
)
def test_mask_secrets_hides_the_password_of_every_url_and_nothing_else(text, masked):
    assert mask_secrets(text) == (text if masked is None else masked)


def test_mask_value_reaches_into_dicts_and_lists():
    value = {"storage": URL, "n": 3, "items": [URL, ("x", URL)]}
    assert SECRET not in repr(mask_value(value)) and mask_value(value)["n"] == 3


def test_the_project_writers_mask_a_storage_password(tmp_path, capsys):
    """A job of a search with a password-bearing RDB storage: the password is in its overrides (Hydra's), not in
    what the project derives from them: run.json's command, the resume hint, the HPARAMS columns, the config printed
    at start."""
    overrides = [
        "+callbacks.optuna_pruning._target_=cifar_lit.callbacks.optuna_pruning.OptunaPruning",
        f"+callbacks.optuna_pruning.storage='{URL}'",
        "+callbacks.optuna_pruning.trial_number=0",
        f"+note={URL}",  # any override: the HPARAMS columns take the command line's
    ]
    cfg = compose_train(overrides, output_dir=tmp_path)
    assert SECRET in str(cfg.hydra.overrides.task)
    print_config_tree(cfg)
    for written in (
        reproduce_command(),
        resume_hint(cfg),
        json.dumps(comparable_hparams(cfg)),
        capsys.readouterr().out,
    ):
        assert SECRET not in written
    assert "optuna_user:***@db.example.org" in reproduce_command()


def test_the_sweeper_logs_no_storage_password(tmp_path, caplog, monkeypatch):
    """The search logs its storage masked (the URL itself goes to the jobs, which need it)."""
    import optuna

    from cifar_lit.hydra_ext.optuna_sweeper import OptunaSearch

    class OneJobLauncher:
        def launch(self, batch, initial_job_idx):
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=0.5) for _ in batch]

    search = OptunaSearch("maximize", "study", URL, 1, 1, None, None, {"optimizer.lr": "interval(0.001, 0.1)"})
    search.launcher, search.config = OneJobLauncher(), OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    monkeypatch.setattr(search, "create_study", lambda space: optuna.create_study(direction="maximize"))
    with caplog.at_level(logging.INFO):
        search.sweep([])
    assert "optuna_user:***@db.example.org" in caplog.text and SECRET not in caplog.text


@pytest.mark.slow
def test_a_storage_from_the_environment_reaches_no_file_of_the_sweep(synthetic_root, tmp_path):
    """$CIFAR_LIT_OPTUNA_STORAGE is the search's storage, and its value (here a database whose path holds a marker:
    SQLite takes no password) is in no file of the sweep folder, Hydra's own included; a job's run.json command
    names the variable instead."""

    import optuna

    database = tmp_path / SECRET / "study.db"
    database.parent.mkdir()
    storage = f"sqlite:///{database}"
    sweep = tmp_path / "sweep"
    overrides = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=1",
        "hydra/sweeper/pruner=none",
        "trainer.max_epochs=1",
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**CLI_ENV, STORAGE_ENV: storage}
    result = run_cli("train", *overrides, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="cifar_lit_block_net", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert not (sweep / "optuna.journal").exists()
    assert files_containing(sweep, SECRET) == []
    command = json.loads((job_folder(sweep, 0) / "run.json").read_text())["command"]
    assert f"${{oc.env:{STORAGE_ENV}}}" in command


def test_files_containing_finds_names_and_contents(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("no")
    (tmp_path / "a" / "y.bin").write_bytes(b"\x00marker\x01")
    (tmp_path / "marker.txt").write_text("")
    assert files_containing(tmp_path, "marker") == [Path("a/y.bin"), Path("marker.txt")]


def test_a_job_names_the_storage_variable_not_its_value(tmp_path, monkeypatch):
    """The sweeper's ``storage=${oc.env:...}`` stays unresolved in what a job derives from its overrides: run.json's
    command, the resume hint, and the command line of a DDP job's other ranks (visible in ``ps``, and in the
    overrides file each rank's Hydra writes)."""
    from cifar_lit.hydra_ext.distributed import single_run_argv

    monkeypatch.setenv(STORAGE_ENV, URL)
    cfg = compose_train([f"+callbacks.optuna_pruning.storage=${{oc.env:{STORAGE_ENV}}}"], output_dir=tmp_path)
    for written in (reproduce_command(), resume_hint(cfg), " ".join(single_run_argv())):
        assert SECRET not in written and f"${{oc.env:{STORAGE_ENV}}}" in written
