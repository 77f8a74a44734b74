"""Sweeps beyond Hydra's basic ones: the Optuna search (SQLite study, failed trials), the joblib launcher (Optuna
trials on its workers; a grid's parallel jobs with their threads, killed and resumed: tests/test_sweep_resume.py)
and the SLURM launcher's config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import metadata as hparams_metadata

from hydra_plugins.cifar_lit_optuna_sweeper import PRUNERS, SAMPLERS
from tests.conftest import (
    CLI_ENV,
    SMALL_BLOCKS,
    TINY_BLOCKS,
    cli_command,
    compose_train,
    hparam_value,
    hparams_summaries,
    job_folder,
    load_optuna_study,
    load_script,
    optuna_search,
    read_csv,
    run_cli,
    scalars,
    synthetic_overrides,
)


def quick_overrides(synthetic_root: Path, cache: Path) -> list[str]:
    return [
        "trainer.max_epochs=1",
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        *synthetic_overrides(synthetic_root, cache),
    ]


def test_slurm_launcher_takes_its_tasks_and_nodes_from_the_trainer():
    """SLURM cannot run here: at least the job shape it would request follows trainer.devices and num_nodes."""
    slurm = compose_train(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = OmegaConf.to_container(slurm.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["nodes"]) == (4, 4, 2)
    assert launcher["timeout_min"] >= 60 and launcher["submitit_folder"].startswith(slurm.hydra.sweep.dir)


SAMPLER_AND_PRUNER = [(sampler, "median") for sampler in SAMPLERS] + [("tpe", pruner) for pruner in [*PRUNERS, "none"]]


@pytest.mark.parametrize(("sampler", "pruner"), SAMPLER_AND_PRUNER)
def test_every_optuna_sampler_and_pruner_option_builds_its_study(sampler, pruner, tmp_path):
    """Each option's settings are ones its Optuna class takes: the study is created and a trial drawn from the
    search space (hparams_search=optuna's; choices only for the grid)."""
    pytest.importorskip("optuna")
    from cifar_lit.hydra_ext.optuna_space import search_space

    overrides = [
        "hparams_search=optuna",
        f"hydra/sweeper/sampler={sampler}",
        f"hydra/sweeper/pruner={pruner}",
    ]
    search = optuna_search(compose_train([*overrides, f"hydra.sweep.dir={tmp_path}"], output_dir=tmp_path))
    grid_only = ["optimizer.lr=choice(0.01,0.001)", "model.classifier.dropout=0"] if sampler == "grid" else []
    space, _ = search_space(search.params, grid_only)
    study = search.create_study(space)
    assert set(study.ask(space).params) == set(space)
    assert sampler in type(study.sampler).__name__.lower()  # grid: the project's InOrderGridSampler
    assert type(study.pruner).__name__.lower().startswith(pruner.replace("_", "").replace("none", "nop"))
    assert (tmp_path / "optuna.journal").is_file()


@pytest.mark.slow
def test_optuna_sweep_prunes_a_trial_that_does_not_learn(synthetic_root, tmp_path):
    """lr=1e-7 leaves the network at chance: the pruner stops it after its second epoch (PRUNED in the study,
    "pruned" in the summary, its checkpoints kept, no failure: exit status 0); lr=0.01 runs its 3 epochs and
    completes with its val/acc_best."""
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    overrides = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "optimizer.lr=choice(0.01,1e-7)",
        "hydra/sweeper/sampler=grid",  # each lr once
        # prunes, from the second epoch on (steps are epochs trained), a trial whose val/acc is below 0.3 (chance: 0.1;
        # lr=0.01 has 0.6 after one)
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.3,n_warmup_steps:2}",
        "trainer.max_epochs=3",
        "data.batch_size=64",  # fixed on the command line: no longer searched
        "model.classifier.dropout=0",
        "model.num_branches=1",
        f"hydra.sweep.dir={sweep}",
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    ]
    result = run_cli("train", *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = {t.params["optimizer.lr"]: t for t in load_optuna_study(sweep).trials}
    assert {lr: t.state for lr, t in trials.items()} == {0.01: TrialState.COMPLETE, 1e-7: TrialState.PRUNED}
    rows = {row["job"]: row for row in read_csv(sweep / "summary.csv")}
    good, pruned = job_folder(sweep, trials[0.01].number), job_folder(sweep, trials[1e-7].number)  # trial n: job n
    assert trials[0.01].value == pytest.approx(max(scalars(good)["val/acc"]))  # the job's val/acc_best
    good_row, pruned_row = rows[str(trials[0.01].number)], rows[str(trials[1e-7].number)]
    assert (good_row["status"], good_row["epochs"]) == ("ok", "3")
    assert (pruned / "PRUNED.txt").read_text().startswith("pruned after 2 epochs")
    assert (pruned_row["status"], pruned_row["epochs"]) == ("pruned", "2")
    assert len(scalars(pruned)["val/acc"]) == 2 and (pruned / "checkpoints" / "last.ckpt").is_file()
    assert OmegaConf.load(sweep / "optimization_results.yaml").best_value == pytest.approx(trials[0.01].value)


@pytest.mark.slow
def test_pruned_grid_runs_every_cell_of_the_plain_sweep_and_stops_the_bad_ones_early(synthetic_root, tmp_path):
    """``hparams_search=pruned_grid`` with the plain sweep's comma lists: each of the 2 x 2 cells runs once (grid
    sampler); successive halving stops after one epoch the cells whose val/acc is behind the first cell's (lr=1e-7:
    chance), and the summary shows the whole grid with the pruned cells marked. A pruned cell is in TensorBoard's
    HPARAMS like any run: its lr and batch size (the swept columns, shown first) and its metrics."""
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    overrides = [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),  # first: a later fixed batch size ends its sweep
        "hparams_search=pruned_grid",
        "optimizer.lr=0.01,1e-7",
        "data.batch_size=32,64",
        "trainer.max_epochs=3",
        "model.num_branches=1",
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        "seed=0",  # the grid's order: a learning cell first (with seed=1, a cell at chance would go first and on)
    ]
    result = run_cli("train", *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(load_optuna_study(sweep).trials, key=lambda t: t.number)
    cells = {(t.params["optimizer.lr"], t.params["data.batch_size"]): t for t in trials}
    assert sorted(cells) == [(1e-7, 32), (1e-7, 64), (0.01, 32), (0.01, 64)]  # the whole grid, each cell once
    # every cell at chance after the learning first cell is behind it after one epoch
    assert trials[0].params["optimizer.lr"] == 0.01 and trials[0].state == TrialState.COMPLETE
    rows = {row["job"]: row for row in read_csv(sweep / "summary.csv")}
    for batch_size in (32, 64):
        trial = cells[1e-7, batch_size]
        assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [1]
        assert (rows[str(trial.number)]["status"], rows[str(trial.number)]["epochs"]) == ("pruned", "1")
    grid = (sweep / "summary.md").read_text().split("Best val acc of each cell")[1]
    lines = {line.split("|")[1].strip(): line for line in grid.splitlines() if line.startswith("| ")}
    assert lines["1e-07"].count("(pruned, 1 ep)") == 2  # a row per lr, a column per batch size
    assert grid.count("(pruned, ") == sum(t.state == TrialState.PRUNED for t in trials)

    # the same grid resumed from its storage: every cell is done, nothing runs again
    storage = f"hydra.sweeper.storage={sweep / 'optuna.journal'}"
    again = run_cli("train", *overrides, storage, f"hydra.sweep.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "every cell of the grid has a trial" in again.stdout + again.stderr
    assert len(load_optuna_study(sweep).trials) == 4

    # the plain sweep of the same cells, replayed through the same pruner (scripts/replay_pruner.py, which
    # docs/sweeps.md's replays come from): the cells in the same order, each stopped after the same epochs
    full = tmp_path / "full"
    plain = [o for o in overrides if o != "hparams_search=pruned_grid"]
    assert run_cli("train", "-m", *plain, f"hydra.sweep.dir={full}").returncode == 0
    replay = load_script("replay_pruner")
    grid, curves, seed = replay.recorded_grid(full)
    ran = replay.replay(grid, curves, replay.configured_pruner([]), seed)
    assert ran == [
        (
            (t.params["optimizer.lr"], t.params["data.batch_size"]),
            len(t.intermediate_values),
            t.state == TrialState.COMPLETE,
        )
        for t in trials
    ]

    pruned = job_folder(sweep, cells[1e-7, 32].number)
    entry = hparams_summaries(pruned)
    experiment = hparams_metadata.parse_experiment_plugin_data(entry[hparams_metadata.EXPERIMENT_TAG][0])
    assert {info.name for info in experiment.hparam_infos if info.differs} == {"lr", "batch_size"}
    start = hparams_metadata.parse_session_start_info_plugin_data(entry[hparams_metadata.SESSION_START_INFO_TAG][0])
    params = {name: hparam_value(value) for name, value in start.hparams.items()}
    assert (params["lr"], params["batch_size"]) == (pytest.approx(1e-7), 32)
    logged = scalars(pruned)
    assert logged["train/trained_epochs"] == [1] and logged["val/acc_best"][-1] == max(logged["val/acc"])


def test_the_project_sweeper_is_found_from_any_folder(tmp_path):
    """Run from a folder that is not the checkout's root, Hydra still finds hydra/sweeper=cifar_lit_optuna: an
    editable install (CI's) reaches the plugin through an import hook that Hydra's plugin scan cannot list."""
    command = cli_command("train", "hparams_search=optuna", "--cfg", "hydra", "-p", "hydra.sweeper._target_")
    result = subprocess.run(command, cwd=tmp_path, env=CLI_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hydra_plugins.cifar_lit_optuna_sweeper.CifarLitOptunaSweeper" in result.stdout


def test_the_whole_grid_needs_the_grid_sampler_and_a_search_needs_a_space(tmp_path):
    whole_grid_tpe = ["hparams_search=pruned_grid", "hydra/sweeper/sampler=tpe", "optimizer.lr=0.01,0.001"]
    result = run_cli("train", *whole_grid_tpe, f"hydra.sweep.dir={tmp_path / 'tpe'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.n_trials=null (the whole grid) takes the grid sampler only"
    )
    result = run_cli("train", "hparams_search=pruned_grid", f"hydra.sweep.dir={tmp_path / 'none'}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: nothing to search: set hydra.sweeper.params or sweep, e.g. optimizer.lr=0.01,0.001"
    )
    assert not (tmp_path / "tpe" / "optuna.journal").exists()


@pytest.mark.slow
def test_optuna_trials_on_joblib_workers_are_pruned_through_the_storage_and_a_search_resumes(synthetic_root, tmp_path):
    """Two trials at once in joblib's worker processes reach their trials through the journal file (a pruner that
    prunes everything stops both after one epoch); a second search on that storage adds its trials to the study,
    with parameters of its own (the seeded sampler does not replay the first search's draws)."""
    from optuna.trial import TrialState

    from cifar_lit.callbacks.optuna_pruning import OptunaPruning

    first, second = tmp_path / "first", tmp_path / "second"
    common = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2",
        "hydra/sweeper/pruner=none",
        f"model.blocks={TINY_BLOCKS}",
        "test=false",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    ]
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2", "threads=1"]
    prune_all = "hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.01}"
    result = run_cli("train", *common, *parallel, prune_all, f"hydra.sweep.dir={first}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    assert [t.state for t in load_optuna_study(first).trials] == [TrialState.PRUNED] * 2
    assert [row["status"] for row in read_csv(first / "summary.csv")] == ["pruned"] * 2

    storage = f"hydra.sweeper.storage={first / 'optuna.journal'}"
    result = run_cli("train", *common, storage, f"hydra.sweep.dir={second}")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(load_optuna_study(first).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2 + [TrialState.COMPLETE] * 2
    assert not {str(t.params) for t in trials[:2]} & {str(t.params) for t in trials[2:]}
    assert not (second / "optuna.journal").exists()
    # a job rerun after its search (its run.json command) finds its trial finished, and reports nothing to it
    assert OptunaPruning("cifar_lit_block_net", str(first / "optuna.journal"), trial_number=0).trial() is None


@pytest.mark.slow
def test_optuna_sweep_whose_trials_all_fail_says_so_in_one_line(synthetic_root, tmp_path):
    """Every trial fails (lr=-1): one line and exit status 1, not the traceback of an empty study's best trial."""
    sweep = tmp_path / "sweep"
    overrides = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "optimizer.lr=-1", f"hydra.sweep.dir={sweep}"]
    result = run_cli("train", *overrides, *quick_overrides(synthetic_root, tmp_path / "cache"))
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]  # the jobs' folders: their numbers and sampled values
    assert re.fullmatch(r"2 of 2 jobs failed \(0_dropout=\S+, 1_dropout=\S+\): see their FAILED.txt", last_line)
    assert "Traceback" not in result.stderr
    assert {t.state.name for t in load_optuna_study(sweep).trials} == {"FAIL"}


@pytest.mark.slow
def test_a_search_whose_trials_never_validate_fails(synthetic_root, tmp_path):
    """trainer.max_steps=3 of an epoch's 10 batches: no trial would ever validate, so each is refused before training
    (its FAILED.txt names the setting), told FAIL, and the search exits 1. It used to log "no trial completed" and
    exit 0, its jobs "ok" without a best val acc."""
    sweep = tmp_path / "sweep"
    overrides = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "experiment=smoke", "trainer.max_steps=3"]
    cli = [*overrides, f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, tmp_path / "cache")]
    result = run_cli("train", *cli, f"hydra.sweep.dir={sweep}")  # data.batch_size=32 fixed: 300 images, 10 batches
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [t.state.name for t in load_optuna_study(sweep).trials] == ["FAIL", "FAIL"]
    assert [row["status"] for row in read_csv(sweep / "summary.csv")] == ["failed", "failed"]
    failure = (job_folder(sweep, 0) / "FAILED.txt").read_text()
    assert "trainer.max_steps=3 ends training before the first validation" in failure


class NoValueLauncher:
    """Jobs that end without a value and without a FAILED.txt: what a job that never logged its monitor returned
    before it counted as failed (and what any job whose value is not a finite number still returns)."""

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list:
        from hydra.core.utils import JobReturn, JobStatus

        returns = [JobReturn() for _ in batch]
        for job_return in returns:
            job_return.status, job_return.return_value = JobStatus.COMPLETED, None
        return returns


def test_a_search_in_which_no_trial_completed_exits_1(tmp_path):
    """Its trials are told FAIL and there is no best value: status 1 from the search itself, whatever the jobs' folders
    say (it logged "no trial completed" and returned, and the command exited 0)."""
    cfg = compose_train(["hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={tmp_path}"], tmp_path)
    search = optuna_search(cfg)
    search.launcher = NoValueLauncher()
    with pytest.raises(SystemExit, match="no trial of study cifar_lit_block_net completed: 3 of 3 failed"):
        search.sweep([])
    assert [t.state.name for t in load_optuna_study(tmp_path).trials] == ["FAIL"] * 3


@pytest.mark.slow
def test_max_failure_rate_stops_a_search_whose_trials_fail(synthetic_root, tmp_path):
    """Every lr of the search space is negative: with hydra.sweeper.max_failure_rate=0.5 the search stops after its
    first failed trial (1 of 1 > 0.5) instead of running all four, with status 1 and the reason in its log."""
    sweep = tmp_path / "sweep"
    overrides = ["hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0.5"]
    bad_space = "optimizer.lr=choice(-1.0,-0.5)"
    result = run_cli(
        "train", *overrides, bad_space, *quick_overrides(synthetic_root, tmp_path), f"hydra.sweep.dir={sweep}"
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [t.state.name for t in load_optuna_study(sweep).trials] == ["FAIL"]
    assert "1 of the 1 trials run failed, more than hydra.sweeper.max_failure_rate=0.5" in result.stdout + result.stderr
    assert [row["job"] for row in read_csv(sweep / "summary.csv")] == ["0"]


def test_a_search_space_the_sampler_cannot_take_is_one_line(tmp_path):
    result = run_cli("train", "hparams_search=optuna", "hydra/sweeper/sampler=grid", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: the grid sampler takes choice and range sweeps only, not interval"
    )
