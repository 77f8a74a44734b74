"""A finished search opens in optuna-dashboard as what it is: its objective named ``val/acc_best`` (not "Objective
0"), each trial's job folder and epochs as user attrs, a pruned cell with the epochs it reported. Read over the
dashboard's own HTTP API (what its pages draw), from the command a user types, on loopback."""

from __future__ import annotations

import pytest

from tests.conftest import SMALL_BLOCKS, job_folder, load_optuna_study, load_script, run_cli, synthetic_overrides


@pytest.mark.slow
def test_optuna_dashboard_shows_a_pruned_grid_with_its_metric_name_and_job_folders(synthetic_root, tmp_path):
    """A 2-cell pruned grid (lr=0.01 learns; lr=1e-7 stays at chance and successive halving stops it after its
    first epoch, behind the first cell's) served by ``optuna-dashboard <sweep>/optuna.journal``."""
    sweep = tmp_path / "sweep"
    overrides = [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "hparams_search=pruned_grid",
        "optimizer.lr=0.01,1e-7",
        "trainer.max_epochs=2",
        "model.num_branches=1",
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        "seed=1",  # the grid's order: the learning cell first (the first cell always goes on)
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t.number: t for t in load_optuna_study(sweep).trials}
    assert sorted(t.state.name for t in trials.values()) == ["COMPLETE", "PRUNED"]

    dashboard = load_script("optuna_dashboard_screenshots")
    with dashboard.serve(sweep / "optuna.journal") as base:
        (summary,) = dashboard.get_json(f"{base}/api/studies")["study_summaries"]
        study = dashboard.get_json(f"{base}/api/studies/{summary['study_id']}")
    assert summary["study_name"] == study["name"] == "cifar_lit_block_net"
    assert (study["directions"], study.get("objective_names")) == (["maximize"], ["val/acc_best"])

    shown = {t["number"]: t for t in study["trials"]}
    assert sorted(shown) == sorted(trials)
    (pruned,) = [t for t in shown.values() if t["state"] == "Pruned"]
    stored = trials[pruned["number"]]
    assert stored.params["optimizer.lr"] == 1e-7
    assert [(v["step"], v["value"]) for v in pruned["intermediate_values"]] == [
        (1, pytest.approx(stored.intermediate_values[1]))
    ]
    for number, trial in shown.items():
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        folder = job_folder(sweep, number)
        assert attrs["job_dir"] == folder.name and (sweep / attrs["job_dir"] / "run.json").is_file()
        assert attrs["epochs"] == str(max(trials[number].intermediate_values))  # the dashboard shows str(int)
    assert [attrs["value"] for attrs in pruned["user_attrs"] if attrs["key"] == "epochs"] == ["1"]
    (complete,) = [t for t in shown.values() if t["state"] == "Complete"]
    assert [a["value"] for a in complete["user_attrs"] if a["key"] == "epochs"] == ["2"]


def test_a_resumed_study_keeps_its_objective_names_and_a_finished_trial_is_left_alone(tmp_path, caplog):
    """Names are written once (a resumed search or a second worker adds nothing to the storage); a study resumed
    with another monitor keeps the names its trials were told under, with a warning. A trial another worker has
    finished already (failed as stale) gets no job attrs: a finished trial takes none."""
    import optuna

    from cifar_lit.hydra_ext import optuna_attrs
    from cifar_lit.hydra_ext.optuna_attrs import name_objectives, record_job

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == optuna_attrs.__name__]

    journal = tmp_path / "optuna.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    name_objectives(study, ["val/acc_best"])
    written = journal.stat().st_size
    name_objectives(study, ["val/acc_best"])
    assert study.metric_names == ["val/acc_best"] and journal.stat().st_size == written  # no log record added
    assert warned() == []
    name_objectives(study, ["val/acc_tta_best"])
    assert study.metric_names == ["val/acc_best"] and "val/acc_tta_best" in " ".join(warned())

    running, failed = study.ask(), study.ask()
    running.report(0.5, 1)
    failed.report(0.4, 1)
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert record_job(study, running.number, tmp_path / "0_lr=0.01") == {"job_dir": "0_lr=0.01", "epochs": 1}
    assert record_job(study, failed.number, tmp_path / "1_lr=0.1") == {}
    assert study.trials[failed.number].user_attrs == {}
