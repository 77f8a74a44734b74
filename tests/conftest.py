"""The tests' shared toolbox, so each test file says only what it checks.

- data: ``synthetic_root`` (a small synthetic CIFAR-10 image folder), ``write_image_folder``, ``broken_copy`` and the
  ways of breaking an image folder (``IMAGE_DAMAGE``, ``empty_ship_folder``), ``REAL_DATA`` when present;
- configs: ``compose_train``, the tiny networks ``TINY_BLOCKS``/``SMALL_BLOCKS``, ``synthetic_overrides``, a fitted
  ``tiny_checkpoint``, and ``block_param_count``, the block's parameter count written out; ``ddp_overrides`` (two
  gloo processes) with ``single_process_val_acc`` to check them, ``resume_overrides`` (a run a signal can interrupt
  mid-epoch) with ``checkpoint_epoch`` and ``per_epoch``;
- the real command line: ``run_cli("train", *overrides)``, ``run_training(run_dir, *overrides)`` for a run that must
  succeed (``cli_command``/``CLI_ENV`` for a process to signal); ``load_script`` (a tool of scripts/ as a module);
- crashes: ``crash_when`` (SIGKILL a run's process group once a condition holds), ``chaos_overrides`` (a run that
  SIGKILLs itself where a fuse file says: tests/chaos_helper.py), ``killed`` (whether a run died so);
- what a run leaves: ``scalars``/``scalar_events``/``load_events`` (its TensorBoard events), ``hparams_summaries``/
  ``hparam_value`` (its HPARAMS entry), ``load_optuna_study`` (a search's study), ``read_csv``/``read_rows``,
  ``files_containing`` (which files of a folder hold a text, e.g. a secret that must be nowhere), ``job_folder``/
  ``job_folders`` (a sweep's job folders by number, whatever their names), ``checkpoint_files``,
  ``one_done_one_saved`` (when to kill a two-job sweep);
- the Optuna sweeper without a sweep: ``optuna_search`` (the search a composed config would run).
"""

from __future__ import annotations

import atexit
import csv
import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from google.protobuf import struct_pb2
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cifar_lit.data.source import CLASSES

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
REAL_DATA = Path(os.environ.get("CIFAR10_REAL_ROOT", ROOT.parent / "shared" / "data" / "cifar10"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``-n auto --dist loadgroup``) the tests of the one-node SLURM cluster run
    on one worker, one after another: two workers' jobs would queue behind each other on its few CPUs and time out."""
    for item in items:
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


# ------------------------------------------------------------------------------------------------------- data
def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """train/ and test/ folders of 32x32 PNGs whose colour depends on the class (so a model can learn them)."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(label * 25) % 256, (label * 70) % 256, 255 - label * 25], dtype=np.float64)
            for i in range(count):
                pixels = np.clip(base + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """40 train and 10 test images per class."""
    return write_image_folder(tmp_path_factory.mktemp("cifar_synthetic"), {"train": 40, "test": 10})


def broken_copy(source: Path, tmp_path: Path, damage: Callable[[Path], None]) -> Path:
    """A copy of the image folder ``source`` (the session's ``synthetic_root`` stays intact), with ``damage`` done."""
    root = tmp_path / "broken"
    shutil.copytree(source, root)
    damage(root)
    return root


BAD_IMAGE = Path("test") / "cat" / "cat_0003.png"  # the file each IMAGE_DAMAGE breaks, relative to the root


def empty_ship_folder(root: Path) -> None:
    for file in (root / "test" / "ship").iterdir():
        file.unlink()


def truncate_bad_image(root: Path) -> None:
    (root / BAD_IMAGE).write_bytes((root / BAD_IMAGE).read_bytes()[:40])


def text_as_bad_image(root: Path) -> None:
    (root / BAD_IMAGE).write_text("not an image")


def bad_image_64x64(root: Path) -> None:
    Image.new("RGB", (64, 64)).save(root / BAD_IMAGE)


IMAGE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated png": truncate_bad_image,
    "text file named .png": text_as_bad_image,
    "64x64 image": bad_image_64x64,
}


# ----------------------------------------------------------------------------------------------------- configs
def compose_train(overrides: list[str], output_dir: Path | None = None, config_name: str = "train") -> DictConfig:
    """The composed train config, with Hydra's runtime set so `${hydra:...}` interpolations resolve."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
        HydraConfig.instance().set_config(cfg)
    return cfg


def synthetic_overrides(root: Path, cache: Path) -> list[str]:
    """Train on the image folder ``root`` (its decoded arrays cached in ``cache``), 100 of its images held out for
    validation, small batches, on the CPU. Later overrides of the same keys win."""
    return [
        f"data.root={root}",
        f"data.cache_dir={cache}",
        "data.val_size=100",
        "data.batch_size=32",
        "data.eval_batch_size=100",
        "trainer.accelerator=cpu",
    ]


# `model.blocks=...`: two blocks, each pooling. TINY_BLOCKS (8 channels) where only the plumbing matters; SMALL_BLOCKS
# (16 channels) where the network must learn the synthetic images or runs are compared number for number.
TINY_BLOCKS = "[{in_channels:3,out_channels:8,pool:true},{in_channels:8,out_channels:8,pool:true}]"
SMALL_BLOCKS = "[{in_channels:3,out_channels:16,pool:true},{in_channels:16,out_channels:16,pool:true}]"


def block_param_count(c_in: int, c_out: int, k: int) -> int:
    """A block's parameters written out (DEVELOPERS.md): the gate, K 3x3 convolutions, the 1x1 skip projection when
    the channels change, and the block's BatchNorm."""
    gate = c_in * k + k
    convs = k * (c_out * c_in * 9 + c_out)
    skip = 0 if c_in == c_out else c_in * c_out + 2 * c_out
    return gate + convs + skip + 2 * c_out


@pytest.fixture(scope="session")
def tiny_checkpoint(synthetic_root, tmp_path_factory) -> Path:
    """A real checkpoint to use (eval, predict, export): two 8-channel blocks fitted for one epoch on the synthetic
    images and saved by the Trainer with the datamodule attached, so it holds the normalisation as training's do."""
    import lightning as L

    from cifar_lit.hydra_ext.instantiate import build_module, instantiate

    out_dir = tmp_path_factory.mktemp("tiny_checkpoint")
    cfg = compose_train([f"model.blocks={TINY_BLOCKS}", *synthetic_overrides(synthetic_root, out_dir / "cache")])
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(build_module(cfg), datamodule=instantiate(cfg.data))
    path = out_dir / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


# -------------------------------------------------------------------------------------------- the command line
# No GPU, whatever the machine has (the tests compare CPU runs); one thread each: the runs are tiny, several may run
# at once (DDP ranks, sweeps) and the machine may be shared.
# CIFAR_LIT_EXECUTION_WHITELIST: the test-only targets (tests/interrupt_helper.py, ...) that runs name under Hydra 1.4
CLI_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "CIFAR_LIT_EXECUTION_WHITELIST": "tests.*"}


def cli_command(entry: str, *args: str) -> list[str]:
    """``python -m cifar_lit.<entry> <args>``, as a user types it."""
    return [sys.executable, "-m", f"cifar_lit.{entry}", *args]


class WarmCli:
    """``python -m tests.warm_cli``: an interpreter that has imported the entry points once and forks one child per
    command (tests/warm_cli.py says why and how); started at the first command, one per test process."""

    def __init__(self) -> None:
        self.server: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        if self.server is None or self.server.poll() is not None:
            command = [sys.executable, "-m", "tests.warm_cli"]
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}
            self.server = subprocess.Popen(command, cwd=ROOT, env=CLI_ENV, bufsize=0, **pipes)
        return self.server

    def run(self, entry: str, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        server = self.start()
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {
                "entry": entry,
                "args": args,
                "env": env,
                "cwd": str(ROOT),
                "stdout": str(out),
                "stderr": str(err),
            }
            server.stdin.write(json.dumps(request).encode() + b"\n")
            pid = int(server.stdout.readline())  # once the server has imported the entry points: not timed
            if not select.select([server.stdout], [], [], timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                server.stdout.readline()
                raise subprocess.TimeoutExpired(cli_command(entry, *args), timeout)
            code = int(server.stdout.readline())
            return subprocess.CompletedProcess(cli_command(entry, *args), code, out.read_text(), err.read_text())

    def stop(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait(timeout=30)


WARM_CLI = WarmCli()
atexit.register(WARM_CLI.stop)


def run_cli(
    entry: str, *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs ``python -m cifar_lit.<entry> <args>`` from the repository root in CLI_ENV (or ``env``) and returns what
    it did (exit status, stdout and stderr as text): the real entry point, Hydra's command line and error handling
    included. The command runs in a child forked from a warm interpreter (WarmCli) unless
    $CIFAR_LIT_TESTS_FRESH_PROCESS is 1: then in a fresh one, as a user's shell starts it."""
    env = CLI_ENV if env is None else env
    if os.environ.get("CIFAR_LIT_TESTS_FRESH_PROCESS") == "1":
        command = cli_command(entry, *args)
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return WARM_CLI.run(entry, list(args), env, timeout)


def start_cli(command: list[str], **popen: Any) -> subprocess.Popen:
    """``command`` started in the background from the repository root in CLI_ENV (or ``env=``), its output discarded
    unless ``popen`` says otherwise (``start_new_session=True``: its own process group, as a terminal's job)."""
    options = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "text": True, "env": CLI_ENV, **popen}
    return subprocess.Popen(command, cwd=ROOT, **options)


def wait_for(
    condition: Callable[[], bool], what: str, timeout: float = 240, process: subprocess.Popen | None = None
) -> None:
    """Polls ``condition`` until it holds; fails the test naming ``what`` after ``timeout`` s, or at once when
    ``process`` (what should make it hold) has ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def crash_when(args: list[str], condition: Callable[[], bool], what: str, env: dict[str, str] | None = None) -> None:
    """``python -m cifar_lit.train <args>`` started in its own process group and, once ``condition`` holds, killed
    with all it started by SIGKILL: a crash, in which nothing gets to save or clean up."""
    process = start_cli(cli_command("train", *args), env=env or CLI_ENV, start_new_session=True)
    try:
        wait_for(condition, what, timeout=300, process=process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()


def chaos_overrides(fuse: Path) -> list[str]:
    """A run's command-line additions that SIGKILL it where the fuse file ``fuse`` says, if the test laid one
    (tests/chaos_helper.py: in a job's training, or once a job has returned); the command stays the same."""
    return [
        "+callbacks.chaos._target_=tests.chaos_helper.KillFromFuse",
        f"+callbacks.chaos.fuse={fuse}",
        "+hydra.callbacks.chaos._target_=tests.chaos_helper.KillAtJobEnd",
        f"+hydra.callbacks.chaos.fuse={fuse}",
    ]


def killed(result: subprocess.CompletedProcess) -> bool:
    """Whether the command died of SIGKILL (a fresh process's status, or the warm interpreter's child's)."""
    return result.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL)


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` as a module (registered under ``name``: a process pool pickles its functions by it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_training(run_dir: Path, *overrides: str) -> Path:
    """Trains through the real CLI (``python -m cifar_lit.train <overrides> hydra.run.dir=<run_dir>``), fails the
    test with the end of stderr unless it succeeds, and returns ``run_dir``: what a fixture of a real run does."""
    result = run_cli("train", *overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


# ---------------------------------------------------------------------------------------- what a run leaves
class Scalar(NamedTuple):
    step: int
    value: float


# ---------------------------------------------------------------- DDP and resumed runs (several test files)
def ddp_data_overrides(synthetic_root: Path, cache: Path) -> list[str]:
    # 101 validation images in batches of 25: the ranks get 51 and 50 images, 3 and 2 batches. A padding sampler
    # would count one image twice and the synced accuracy would not be the single-process one.
    return [*synthetic_overrides(synthetic_root, cache), "data.val_size=101", "data.eval_batch_size=25"]


def ddp_overrides(synthetic_root: Path, cache: Path) -> list[str]:
    return [
        "trainer=ddp_cpu",
        "trainer.max_epochs=2",
        "trainer.precision=32",  # the single-process check below evaluates in fp32 too
        "test=false",
        f"model.blocks={SMALL_BLOCKS}",
        *ddp_data_overrides(synthetic_root, cache),
    ]


def files_by_folder(root: Path, pattern: str) -> set[Path]:
    return {p.parent for p in root.rglob(pattern)}


def single_process_val_acc(run_dir: Path, synthetic_root: Path, tmp_path: Path, *overrides: str) -> float:
    """The validation accuracy of the run's last checkpoint (saved at the end of the last epoch) in one process:
    what the ranks' synced accuracy must equal (1/101 apart would be one image counted twice)."""
    import lightning as L

    from cifar_lit.hydra_ext.instantiate import instantiate
    from cifar_lit.training.checkpoint import load_module

    data = ddp_data_overrides(synthetic_root, tmp_path / "cache")
    cfg = compose_train([f"model.blocks={SMALL_BLOCKS}", *data, *overrides], tmp_path)
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=32, logger=False, enable_progress_bar=False)
    return trainer.validate(module, datamodule=instantiate(cfg.data), verbose=False)[0]["val/acc"]


RESUME_EPOCHS = 3


def resume_overrides(synthetic_root: Path, cache: Path, run_dir: Path, *extra: str) -> list[str]:
    """A tiny deterministic run of ``RESUME_EPOCHS`` epochs (test_resume, test_slurm): small batches make an epoch
    ~36 steps, so a signal can land mid-epoch."""
    return [
        "experiment=smoke",
        f"trainer.max_epochs={RESUME_EPOCHS}",
        "trainer.deterministic=true",
        "seed=7",
        f"model.blocks={SMALL_BLOCKS}",
        "test=false",
        "~callbacks.progress_bar",
        f"hydra.run.dir={run_dir}",
        *synthetic_overrides(synthetic_root, cache),
        "data.batch_size=8",
        "data.augment.crop_padding=2",  # augmented: a resume must also reproduce the crops and flips
        "data.augment.flip=true",
        *extra,
    ]


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint was saved in (None while absent; files are replaced atomically)."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)["epoch"]
    except FileNotFoundError:
        return None


def per_epoch(logged: dict[str, list[Scalar]], tag: str) -> list[float]:
    """A tag's values, one an epoch (checked: no step logged twice, none out of order)."""
    steps = [step for step, _ in logged[tag]]
    assert steps == sorted(set(steps)), f"{tag}: duplicated or out-of-order steps {steps}"
    return [value for _, value in logged[tag]]


def load_events(run_dir: Path) -> EventAccumulator:
    """Every event in ``<run_dir>/tensorboard`` (no sampling: scalars, histograms and images all kept), read by
    TensorBoard's own loader, as TensorBoard shows them (events orphaned by a resume purged)."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    events.Reload()
    return events


def scalar_events(run_dir: Path) -> dict[str, list[Scalar]]:
    """Tag -> the run's logged (step, value) pairs, in order."""
    events = load_events(run_dir)
    return {tag: [Scalar(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Tag -> the run's logged values, in order: what the report, run.json or a sweep must agree with."""
    return {tag: [value for _, value in logged] for tag, logged in scalar_events(run_dir).items()}


def hparams_summaries(run_dir: Path) -> dict[str, list[bytes]]:
    """Tag -> plugin contents of every hparams-plugin summary value in the run's event files, in file order."""
    found: dict[str, list[bytes]] = {}
    for path in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME:
                    found.setdefault(value.tag, []).append(value.metadata.plugin_data.content)
    return found


def hparam_value(value: struct_pb2.Value) -> Any:
    """A session's hparam value (number, string or bool) as Python."""
    return getattr(value, value.WhichOneof("kind"))


def load_optuna_study(sweep: Path):  # noqa: ANN201  (an optuna.Study: optuna is the sweeps extra's)
    """The study of an Optuna search (hparams_search=optuna or pruned_grid) run into ``sweep``."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(sweep / "optuna.journal")))
    return optuna.load_study(study_name=None, storage=storage)  # the journal's one study


def optuna_search(cfg: DictConfig):  # noqa: ANN201  (an OptunaSearch: optuna is the sweeps extra's)
    """The search Hydra would build from ``cfg`` (composed with hparams_search=...), set up with ``cfg`` as the
    sweep config (as Hydra's ``setup`` does, without a launcher): its study can be created, its direction read."""
    from omegaconf import OmegaConf

    from cifar_lit.hydra_ext.optuna_sweeper import OptunaSearch

    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    for key in ("_target_", "_recursive_"):
        sweeper.pop(key)
    search = OptunaSearch(**sweeper)
    search.config = cfg
    return search


def job_folders(sweep: Path) -> dict[int, Path]:
    """A sweep's job folders by job number (``3_lr=0.005`` is job 3: cifar_lit.hydra_ext.job_name)."""
    from cifar_lit.reporting.sweeps import job_number

    return {job_number(p): p for p in sweep.iterdir() if p.is_dir() and job_number(p) is not None}


def job_folder(sweep: Path, number: int) -> Path:
    """Job ``number``'s folder in ``sweep`` (KeyError when the sweep has none)."""
    return job_folders(sweep)[number]


def one_done_one_saved(sweep: Path) -> bool:
    """Whether job 0 of a two-job sweep has finished (its run.json says so) and job 1 has saved a last.ckpt but not
    finished: killed now, the sweep leaves one job to read back and one to resume (jobs run at once: joblib, SLURM)."""
    from cifar_lit.hydra_ext.job_resume import read_record

    jobs = job_folders(sweep) if sweep.is_dir() else {}
    if not {0, 1} <= set(jobs) or not (jobs[1] / "checkpoints" / "last.ckpt").is_file():
        return False
    done = [(read_record(jobs[n] / "run.json") or {}).get("status") == "finished" for n in (0, 1)]
    return done == [True, False]


def checkpoint_files(job: Path) -> list[str]:
    """The names in a job's checkpoints/ folder: a crash must leave no half-written file, no second best checkpoint."""
    return sorted(p.name for p in (job / "checkpoints").iterdir())


def read_csv(path: Path) -> list[dict[str, str]]:
    """A CSV file with a header row, one dict a row."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def read_rows(path: Path) -> list[list[str]]:
    """A CSV file as its rows of cells, header included."""
    with path.open(newline="") as file:
        return list(csv.reader(file))


def files_containing(root: Path, text: str) -> list[Path]:
    """The files under ``root`` (relative, sorted) whose name or bytes hold ``text``: where a secret has leaked."""
    needle = text.encode()
    return sorted(
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and (text in str(path.relative_to(root)) or needle in path.read_bytes())
    )
