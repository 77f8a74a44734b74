"""How cifar_lit installs. A built wheel works on its own: installed (not editable) into a fresh virtual environment
and started from an empty folder, ``python -m cifar_lit.train`` trains with the configs the wheel carries, not with
the checkout's. A feature whose extra is not installed says, in one line, which extra to install."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from cifar_lit.hydra_ext.entry import missing_extra
from tests.conftest import ROOT, TINY_BLOCKS, synthetic_overrides

SOURCES = ("pyproject.toml", "README.md", "cifar_lit", "conf", "hydra_plugins")  # what an sdist of the project holds


def run(cmd: list[str | Path], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """``cmd`` from ``cwd``, with no PYTHONPATH pointing at the checkout and no GPU."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def dependency_dirs() -> list[str]:
    """Where the running interpreter finds the dependencies (torch, lightning, hydra, ...)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"], *site.getsitepackages()]))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh venv holding the project's wheel. Its dependencies come from this interpreter's
    site-packages (a ``.pth`` file: plain paths, so the checkout's editable-install finder is not loaded): installing
    them would need the network and minutes."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # build a copy: a build in the checkout leaves build/ and *.egg-info (stale files) there
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index", "--no-build-isolation"]
    build = run([*pip_wheel, "-w", wheels, source], tmp)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-3000:]
    (wheel,) = wheels.glob("cifar_lit-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    venv_site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip()
    (Path(venv_site) / "dependencies.pth").write_text("\n".join(dependency_dirs()) + "\n")
    # --ignore-installed: never touch the cifar_lit this interpreter has (pip would see it through the .pth)
    install = run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", wheel], tmp)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def installed_package(installed, tmp_path_factory) -> Path:
    """The cifar_lit folder the venv's python imports from a folder outside the checkout: its installed copy."""
    where = run([installed, "-c", "import cifar_lit; print(cifar_lit.__file__)"], tmp_path_factory.mktemp("elsewhere"))
    package = Path(where.stdout.strip()).parent
    assert package.is_relative_to(installed.parents[1]), f"imported {package}, not the venv's copy"
    return package


@pytest.mark.slow
def test_the_installed_wheel_trains_from_an_empty_folder(installed, installed_package, synthetic_root, tmp_path):
    workdir = tmp_path / "empty"
    workdir.mkdir()

    overrides = [f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, tmp_path / "cache")]
    result = run([installed, "-m", "cifar_lit.train", "experiment=smoke", *overrides], workdir)
    assert result.returncode == 0, result.stderr[-3000:]

    (run_dir,) = (workdir / "outputs" / "runs").iterdir()  # paths.log_dir: relative to where the command runs
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert "test/acc" in result.stdout  # the final metrics table
    sources = (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert str(installed_package / "conf") in sources, "the configs did not come from the installed package"
    assert str(ROOT / "conf") not in sources


@pytest.mark.slow
def test_the_installed_wheel_has_every_module_and_takes_a_users_config_dir(installed, installed_package, tmp_path):
    package = installed_package
    shipped = {path.relative_to(package).as_posix() for path in package.rglob("*") if path.suffix in (".py", ".yaml")}
    checkout = {path.relative_to(ROOT / "cifar_lit").as_posix() for path in (ROOT / "cifar_lit").rglob("*.py")}
    configs = {"conf/" + path.relative_to(ROOT / "conf").as_posix() for path in (ROOT / "conf").rglob("*.yaml")}
    assert shipped == checkout | configs  # a subpackage missing from pyproject's list would be missing here

    mine = tmp_path / "mine" / "experiment"  # a user's own folder beside the installed configs
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("# @package _global_\noptimizer:\n  lr: 0.0321\n")
    result = run(
        [installed, "-m", "cifar_lit.train", "--config-dir", mine.parent, "experiment=mine", "--cfg", "job"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lr: 0.0321" in result.stdout

    # the Optuna sweeper is a Hydra plugin in the wheel (hydra_plugins/), found by Hydra's plugin scan
    sweeper = run([installed, "-m", "cifar_lit.train", "hparams_search=optuna", "--cfg", "hydra"], tmp_path)
    assert sweeper.returncode == 0, sweeper.stderr[-3000:]
    assert "_target_: hydra_plugins.cifar_lit_optuna_sweeper.CifarLitOptunaSweeper" in sweeper.stdout
    assert (installed_package.parent / "hydra_plugins" / "cifar_lit_optuna_sweeper" / "__init__.py").is_file()


# sitecustomize for a child process: the modules named in $BLOCK_MODULES (and their submodules) are not found on
# sys.path, as if their package were not installed (find_spec answers None, import raises ModuleNotFoundError).
BLOCKER = """
import os, sys
from importlib.machinery import PathFinder

BLOCKED = os.environ["BLOCK_MODULES"].split(",")


class HidingPathFinder(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
            return None
        return super().find_spec(name, path, target)


sys.meta_path[sys.meta_path.index(PathFinder)] = HidingPathFinder
"""


def run_without(blocked: list[str], module: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -m module args`` from the checkout with the ``blocked`` modules missing."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BLOCK_MODULES": ",".join(blocked), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", module, *args, f"hydra.run.dir={tmp_path / 'run'}"]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("override", "blocked", "extra"),
    [
        ("hparams_search=optuna", ["optuna"], "sweeps"),
        ("hydra/launcher=joblib", ["joblib", "hydra_plugins.hydra_joblib_launcher"], "joblib"),
        ("hydra/launcher=slurm", ["submitit", "hydra_plugins.hydra_submitit_launcher"], "slurm"),
    ],
)
def test_a_missing_hydra_plugin_names_its_extra(override, blocked, extra, tmp_path):
    result = run_without(blocked, "cifar_lit.train", "-m", override, tmp_path=tmp_path)
    assert result.returncode == 1
    expected = f"error: {override} needs the '{extra}' extra: pip install 'cifar_lit[{extra}]'"
    assert result.stderr.strip().splitlines() == [expected]


def test_onnx_export_without_onnx_names_the_extra(tiny_checkpoint, tmp_path):
    result = run_without(["onnx"], "cifar_lit.export", f"ckpt_path={tiny_checkpoint}", "format=onnx", tmp_path=tmp_path)
    assert result.returncode == 1
    assert "pip install 'cifar_lit[onnx]'" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_installed_plugins_and_other_arguments_pass_through():
    """Nothing to say when the plugins are installed (the dev extra) or for arguments that pick no plugin."""
    assert missing_extra(["hparams_search=optuna", "hydra/launcher=joblib", "hydra/launcher=slurm"]) is None
    assert missing_extra(["model=two_blocks", "--info", "searchpath", "--config-dir", "mine", "lr=1,2"]) is None
