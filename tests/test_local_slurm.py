"""scripts/local_slurm.sh touches only a SLURM cluster it set up itself: another slurm.conf, or daemons running from
the pid files it would use, make it stop with a message instead of rewriting the config and killing them. Run on
a folder of the test's (CIFAR_LIT_SLURM_CONF_DIR, CIFAR_LIT_SLURM_PID_DIR) and a PATH without the SLURM, munge or
package tools, so that whatever goes wrong here cannot reach the machine's own cluster."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "local_slurm.sh"
FOREIGN_CONF = "ClusterName=theirs\nSlurmctldHost=head\n"


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The script on ``tmp_path/etc`` and ``tmp_path/run``, with only a few harmless tools on its PATH."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for tool in ("head", "cat", "id", "seq", "sleep", "rm"):
        if not (tools / tool).exists():
            (tools / tool).symlink_to(shutil.which(tool))
    env = {
        "PATH": str(tools),
        "CIFAR_LIT_SLURM_CONF_DIR": str(tmp_path / "etc"),
        "CIFAR_LIT_SLURM_PID_DIR": str(tmp_path / "run"),
    }
    return subprocess.run(
        [shutil.which("bash"), str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def foreign_daemon(tmp_path):
    """A process that a pid file of the test's run dir names as slurmd (the script would kill it)."""
    process = subprocess.Popen(["sleep", "60"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "slurmd.pid").write_text(f"{process.pid}\n")
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("args", [(), ("stop",)])
def test_another_slurm_conf_is_left_alone(tmp_path, args):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "slurm.conf").write_text(FOREIGN_CONF)
    result = run_script(tmp_path, *args)
    assert result.returncode == 1 and "not this script's" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "etc" / "slurm.conf").read_text() == FOREIGN_CONF
    assert not (tmp_path / "etc" / ".cifar_lit_local").exists()


@pytest.mark.parametrize("args", [(), ("stop",)])
def test_running_daemons_of_another_cluster_are_left_alone(tmp_path, args, foreign_daemon):
    result = run_script(tmp_path, *args)
    assert result.returncode == 1 and "--force" in result.stderr
    assert foreign_daemon.poll() is None, "the script stopped a daemon it did not start"


def test_stop_stops_the_daemons_of_a_cluster_it_set_up(tmp_path, foreign_daemon):
    """With its marker (or --force), the same pid file is the script's own: stop stops that process."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / ".cifar_lit_local").touch()
    assert run_script(tmp_path, "stop").returncode == 0
    assert foreign_daemon.wait(timeout=15) is not None and not (tmp_path / "run" / "slurmd.pid").exists()


def test_unknown_arguments_are_refused(tmp_path):
    result = run_script(tmp_path, "--frce")
    assert result.returncode == 1 and "unknown argument --frce" in result.stderr


def test_a_fresh_machine_is_not_refused(tmp_path):
    """No slurm.conf, no daemons (.ci/run's case): the script goes on to set up; here it then stops, without id or
    apt-get on its PATH, at the root check or the missing packages."""
    result = run_script(tmp_path)
    assert "not this script's" not in result.stderr
    assert "needs root" in result.stderr or "are missing" in result.stderr, result.stderr
