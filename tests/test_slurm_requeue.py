"""The SLURM time-limit warning's handler (cifar_lit.callbacks.slurm_requeue) never breaks the training it
interrupts: without ``scontrol`` (a container without the SLURM commands) or with one that hangs, it warns and the
run goes on, so the SIGTERM that follows at the limit still saves ``last.ckpt``. No SLURM cluster needed."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pytest
import torch

from cifar_lit.callbacks.slurm_requeue import SlurmRequeue
from tests.conftest import CLI_ENV, TINY_BLOCKS, resume_overrides, run_cli, synthetic_overrides
from tests.interrupt_helper import InterruptAtStep

SLURM_ENV = {"SLURM_JOB_ID": "424242", "SLURM_PROCID": "0"}


def bin_dir(path: Path, scontrol: str | None = None) -> Path:
    """A folder to be the whole PATH: empty, or with a fake ``scontrol`` running the shell code ``scontrol``."""
    path.mkdir()
    if scontrol is not None:
        (path / "scontrol").write_text(f"#!/bin/sh\n{scontrol}\n")
        (path / "scontrol").chmod(0o755)
    return path


def test_the_handler_warns_when_scontrol_is_not_on_path(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", str(bin_dir(tmp_path / "bin")))
    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING):
        SlurmRequeue()._requeue(signal.SIGUSR1, None)  # raised FileNotFoundError into the training step
    assert "scontrol" in caplog.text and "not requeued" in caplog.text


def test_the_handler_gives_up_on_an_scontrol_that_hangs(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", f"{bin_dir(tmp_path / 'bin', scontrol='exec sleep 30')}:/usr/bin:/bin")
    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        SlurmRequeue(scontrol_timeout_s=0.5)._requeue(signal.SIGUSR1, None)
    assert time.monotonic() - started < 10
    assert "did not answer within 0.5 s" in caplog.text and "not requeued" in caplog.text


def signal_at(name: str, step: int, how: str) -> list[str]:
    target = f"{InterruptAtStep.__module__}.{InterruptAtStep.__name__}"
    return [f"+callbacks.{name}._target_={target}", f"+callbacks.{name}.step={step}", f"+callbacks.{name}.how={how}"]


@pytest.mark.slow
def test_a_run_warned_by_slurm_without_scontrol_goes_on_and_saves_at_the_sigterm(synthetic_root, tmp_path):
    """A SLURM job in a container without the SLURM commands: SIGUSR1 at step 3 (the time-limit warning) logs a
    warning and training goes on; SIGTERM at step 6 (the limit) saves last.ckpt at that step, as without SLURM."""
    run_dir = tmp_path / "run"
    overrides = resume_overrides(synthetic_root, tmp_path / "cache", run_dir)
    overrides += [*signal_at("warn_at", 3, "sigusr1"), *signal_at("interrupt_at", 6, "sigterm")]
    env = {**CLI_ENV, **SLURM_ENV, "PATH": str(bin_dir(tmp_path / "bin"))}
    stopped = run_cli("train", *overrides, env=env)
    output = stopped.stdout + stopped.stderr
    assert stopped.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "SIGUSR1: scontrol is not on PATH" in output, output[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@pytest.mark.slow
def test_the_warning_during_the_final_test_does_not_kill_the_run(synthetic_root, tmp_path):
    """The handler is there for the whole run, not only while fitting: SIGUSR1 during the final test (whose default
    action ends the process) logs the warning and the run finishes with its test metrics."""
    overrides = [
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        f"model.blocks={TINY_BLOCKS}",
        "trainer.max_epochs=1",
        "test=true",
        "~callbacks.progress_bar",
        f"hydra.run.dir={tmp_path / 'run'}",
        *signal_at("warn_at", 0, "sigusr1_in_test"),
    ]
    env = {**CLI_ENV, **SLURM_ENV, "PATH": str(bin_dir(tmp_path / "bin"))}
    result = run_cli("train", *overrides, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "SIGUSR1: scontrol is not on PATH" in output and "test/acc" in output, output[-3000:]


def test_a_job_requeued_before_it_saved_anything_starts_from_the_beginning(monkeypatch, tmp_path, caplog):
    """The warning during data preparation requeues the job; the SIGTERM that follows finds nothing to save, so the
    requeued job's ckpt_path=last (${SLURM_RESTART_COUNT:+ckpt_path=last}) has no last.ckpt: it starts over with a
    warning instead of failing. Outside a requeued job a missing last.ckpt is still an error."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from cifar_lit.errors import CheckpointError
    from cifar_lit.training.resume import resolve_ckpt_path

    callbacks = [ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="last", monitor=None)]
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    with pytest.raises(CheckpointError, match="there is no"):
        resolve_ckpt_path("last", callbacks)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with caplog.at_level(logging.WARNING):
        assert resolve_ckpt_path("last", callbacks) is None
    assert "starting from the beginning" in caplog.text
