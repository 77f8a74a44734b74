"""Many workers, one study: search processes, each in its own sweep folder, sharing one Optuna study on the real
PostgreSQL of scripts/local_postgres.sh (started by .ci/run, or by hand; never by these tests). Without it they
skip, except under CI=true, where a server that is not up is a failure. The storage reaches the workers through
$CIFAR_LIT_OPTUNA_STORAGE (its password in no file of theirs); each test has a study of its own."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import (
    CLI_ENV,
    ROOT,
    TINY_BLOCKS,
    cli_command,
    crash_when,
    files_containing,
    job_folders,
    run_cli,
    start_cli,
    synthetic_overrides,
)

URL_ENV = "CIFAR_LIT_TEST_POSTGRES_URL"  # a server of one's own; else scripts/local_postgres.sh's (read as root)


def server_url() -> tuple[str | None, str | None]:
    """(the server's URL, None) or (None, why there is none)."""
    url = os.environ.get(URL_ENV)
    if not url:
        script = subprocess.run([ROOT / "scripts" / "local_postgres.sh", "url"], capture_output=True, text=True)
        if script.returncode != 0:
            return (
                None,
                f"no PostgreSQL ({script.stderr.strip()}; run scripts/local_postgres.sh as root or set {URL_ENV})",
            )
        url = script.stdout.strip()
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # the driver missing, the server down, a wrong password: all mean no server to test
        return None, f"PostgreSQL at {url.split('@')[-1]} not reachable: {type(err).__name__}"
    return url, None


@pytest.fixture
def postgres_url() -> str:
    url, problem = server_url()
    if problem is not None:
        if os.environ.get("CI") == "true":  # CI starts the server (.ci/run): its absence is a failure there
            pytest.fail(problem)
        pytest.skip(problem)
    return url


def password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).password


def worker_args(synthetic_root: Path, tmp_path: Path, study: str, sweep: Path, *extra: str) -> list[str]:
    """A worker of a 2 x 2 pruned grid (without a pruner: every cell runs its epochs) on the shared study."""
    return [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        "hparams_search=pruned_grid",
        "hydra/sweeper/pruner=none",
        "optimizer.lr=0.01,0.003",
        "optimizer.weight_decay=0.05,0",
        "hydra.sweeper.n_trials_of=study",
        f"hydra.sweeper.study_name={study}",
        f"model.blocks={TINY_BLOCKS}",
        "experiment=smoke",
        "test=false",
        "~callbacks.progress_bar",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]


def job_saved(sweep: Path) -> bool:
    """Whether job 0 of the sweep has saved a checkpoint (after its first epoch: a kill now lands mid-trial)."""
    jobs = job_folders(sweep) if sweep.is_dir() else {}
    return 0 in jobs and (jobs[0] / "checkpoints" / "last.ckpt").is_file()


def load_study(url: str, name: str):  # noqa: ANN201  (an optuna.Study)
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def cell(trial) -> tuple[float, float]:  # noqa: ANN001
    return trial.params["optimizer.lr"], trial.params["optimizer.weight_decay"]


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_one_study_each_trial_once_the_total_as_asked(postgres_url, synthetic_root, tmp_path):
    """Two workers started together on a 4-cell grid asked for 3 trials in all: the study ends with exactly 3
    finished trials, 3 distinct cells, none running; the workers' folders hold 3 jobs between them."""
    study = f"workers_{uuid.uuid4().hex[:8]}"
    env = {**CLI_ENV, "CIFAR_LIT_OPTUNA_STORAGE": postgres_url}
    sweeps = [tmp_path / "worker_0", tmp_path / "worker_1"]
    args = [worker_args(synthetic_root, tmp_path, study, s, "trainer.max_epochs=1", "hydra.sweeper.n_trials=3")
            for s in sweeps]  # fmt: skip
    workers = [start_cli(cli_command("train", *a), env=env, stderr=subprocess.PIPE) for a in args]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err[-3000:]
    trials = load_study(postgres_url, study).trials
    assert sorted(t.state.name for t in trials) == ["COMPLETE"] * 3
    assert len({cell(t) for t in trials}) == 3  # every trial a cell of its own
    assert sum(len(job_folders(s)) for s in sweeps) == 3
    for sweep in sweeps:
        assert files_containing(sweep, password(postgres_url)) == []


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_workers_trial_goes_stale_and_the_other_worker_retries_it(postgres_url, synthetic_root, tmp_path):
    """Worker A is killed (its whole process group, SIGKILL) in its first trial's second epoch; worker B, started
    then on the same 2-cell grid (heartbeat every second, stale after 3), fails A's trial as stale and runs its
    retry in its own folder, then the other cell: 2 COMPLETE trials, the cells once each, and A's trial FAIL."""
    study = f"workers_{uuid.uuid4().hex[:8]}"
    env = {**CLI_ENV, "CIFAR_LIT_OPTUNA_STORAGE": postgres_url}
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3", "optimizer.weight_decay=0"]  # 2 cells
    slow = ["trainer.max_epochs=2", "data.batch_size=8"]  # ~36 steps an epoch: the kill lands mid-epoch
    first, second = tmp_path / "worker_a", tmp_path / "worker_b"
    a_args = worker_args(synthetic_root, tmp_path, study, first, *beat, *slow)
    crash_when(a_args, lambda: job_saved(first), "worker A's first checkpoint", env=env)
    assert [t.state.name for t in load_study(postgres_url, study).trials] == ["RUNNING"]

    b_args = worker_args(synthetic_root, tmp_path, study, second, *beat, *slow)
    time.sleep(4)  # A's last heartbeat is now past the grace period (3 s): B finds its trial stale when it starts
    b = run_cli("train", *b_args, env=env)
    assert b.returncode == 0, b.stderr[-3000:]
    trials = load_study(postgres_url, study).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params  # A's, retried
    assert sorted(t.params["optimizer.lr"] for t in trials[1:]) == [0.003, 0.01]
    assert trials[1].user_attrs["sweep_dir"] == str(second) and sorted(job_folders(second)) == [0, 1]
    for sweep in (first, second):
        assert files_containing(sweep, password(postgres_url)) == []
