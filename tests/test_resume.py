"""Nothing is lost when a run is killed, pre-empted or diverges: real training subprocesses on synthetic data."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cifar_lit.callbacks.provenance import RUN_FILE
from cifar_lit.data.augment import Augment
from cifar_lit.data.loaders import ResidentLoader
from cifar_lit.training.checkpoint import load_module
from tests.conftest import (
    CLI_ENV,
    RESUME_EPOCHS,
    ROOT,
    TINY_BLOCKS,
    checkpoint_epoch,
    cli_command,
    compose_train,
    per_epoch,
    resume_overrides,
    run_cli,
    scalar_events,
    synthetic_overrides,
)
from tests.interrupt_helper import InterruptAtStep


def start_and_wait_mid_epoch(args: list[str], run_dir: Path, log: Path, into: float = 0.25) -> subprocess.Popen:
    """Start a run and return once ``last.ckpt`` holds epoch 1's end and the run is ``into`` of the way into
    epoch 2 (as a fraction of the time epoch 1 took; kept small, the CPU may be shared and epochs uneven)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            cli_command("train", *args), cwd=ROOT, env=CLI_ENV, stdout=stderr, stderr=subprocess.STDOUT
        )
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 240
    while 1 not in seen:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint of epoch 1 within 4 minutes"
        epoch = checkpoint_epoch(last)
        if epoch is not None and epoch not in seen:
            seen[epoch] = time.monotonic()
        time.sleep(0.02)
    epoch_duration = seen[1] - seen.get(0, seen[1])
    time.sleep(epoch_duration * into)
    return process


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli("train", *resume_overrides(synthetic_root, tmp_path_factory.mktemp("cache"), run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def augmented_loader(batch_size: int = 4) -> ResidentLoader:
    """21 random images in shuffled, cropped and flipped batches of 4: the last batch holds one image."""
    images = torch.randint(0, 256, (21, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    augment = Augment(crop_padding=2, flip=True)
    loader = ResidentLoader(images, torch.arange(21), torch.zeros(3), torch.ones(3), batch_size, augment, True, seed=3)
    loader.sampler.set_epoch(1)
    return loader


def test_resident_loader_resumes_an_epoch_after_the_batches_it_served(caplog):
    expected = list(augmented_loader())
    stopped = augmented_loader()
    batches = iter(stopped)
    served = [next(batches) for _ in range(2)]
    resumed = augmented_loader()
    resumed.load_state_dict(stopped.state_dict())
    for (images, labels), (expected_images, expected_labels) in zip(served + list(resumed), expected, strict=True):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    resumed.sampler.set_epoch(2)
    assert len(list(resumed)) == len(expected)  # the next epoch is whole

    other_batches = augmented_loader(batch_size=5)  # a count of batches of 4 means nothing here
    other_batches.load_state_dict(stopped.state_dict())
    assert len(list(other_batches)) == len(other_batches) and "starts again from its first batch" in caplog.text


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(uninterrupted, synthetic_root, tmp_path):
    run_dir = tmp_path / "run"
    args = resume_overrides(synthetic_root, tmp_path / "cache", run_dir)
    process = start_and_wait_mid_epoch(args, run_dir, tmp_path / "killed.log")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert checkpoint_epoch(run_dir / "checkpoints" / "last.ckpt") == 1, "killed after epoch 2 ended: not mid-epoch"
    assert not any(p.name.startswith(".partial-") for p in (run_dir / "checkpoints").iterdir())

    result = run_cli("train", *args, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ended before the epoch ended" not in result.stderr  # resumed from an epoch end, not mid-epoch

    resumed, reference = scalar_events(run_dir), scalar_events(uninterrupted)
    for tag in ("train/loss", "val/acc"):
        assert [step for step, _ in resumed[tag]] == [step for step, _ in reference[tag]], tag
        assert len(per_epoch(resumed, tag)) == RESUME_EPOCHS, tag
        assert per_epoch(resumed, tag) == pytest.approx(per_epoch(reference, tag), abs=1e-6), tag
    assert resumed["val/acc_best"][-1][1] == reference["val/acc_best"][-1][1]  # the best survives the resume
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    expected = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6, msg=name)


def mid_last_epoch(uninterrupted: Path) -> int:
    """The optimizer step half-way through the last epoch."""
    steps_per_epoch = checkpoint_step(uninterrupted) // RESUME_EPOCHS
    return (RESUME_EPOCHS - 1) * steps_per_epoch + steps_per_epoch // 2


def interrupt_at(step: int, how: str) -> list[str]:
    """Overrides adding the test callback that interrupts the run at ``step`` (importable in the subprocess)."""
    target = f"{InterruptAtStep.__module__}.{InterruptAtStep.__name__}"
    return [
        f"+callbacks.interrupt_at._target_={target}",
        f"+callbacks.interrupt_at.step={step}",
        f"+callbacks.interrupt_at.how={how}",
    ]


def checkpoint_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


@pytest.mark.slow
def test_sigterm_mid_epoch_resumes_exactly_where_it_stopped(uninterrupted, synthetic_root, tmp_path):
    """SIGTERM half-way through the last epoch: the resumed run serves that epoch's remaining batches (same images,
    same crops and flips) and ends it with the uninterrupted run's train/val metrics and weights."""
    run_dir = tmp_path / "run"
    args = resume_overrides(synthetic_root, tmp_path / "cache", run_dir)
    stop_at = mid_last_epoch(uninterrupted)
    stopped = run_cli("train", *args, *interrupt_at(stop_at, "sigterm"))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (RESUME_EPOCHS - 1, stop_at)
    output = stopped.stdout + stopped.stderr
    expected = f"SIGTERM at epoch {RESUME_EPOCHS - 1}, step {stop_at}: saved {run_dir / 'checkpoints'}"
    assert expected in output, output[-5000:]
    assert "stopped by SIGTERM; to resume: python -m cifar_lit.train" in output and "ckpt_path=last" in output
    first = json.loads((run_dir / RUN_FILE).read_text())
    assert first["status"] == "failed" and first["wall_time_s"] > 0

    result = run_cli("train", *args, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ended before the epoch ended" not in result.stderr  # Lightning found the loader resumable
    resumed, reference = scalar_events(run_dir), scalar_events(uninterrupted)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [step for step, _ in resumed[tag]] == [step for step, _ in reference[tag]], tag
        assert per_epoch(resumed, tag) == per_epoch(reference, tag), tag
    weights = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    expected = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=0, msg=name)
    record = json.loads((run_dir / RUN_FILE).read_text())  # the resumed fit continues the first one's record
    assert record["status"] == "finished" and record["started_at"] == first["started_at"]
    assert len(record["resumed_at"]) == 1 and record["earlier_wall_time_s"] == first["wall_time_s"]


@pytest.mark.slow
def test_ctrl_c_mid_step_serves_the_interrupted_batch_again(uninterrupted, synthetic_root, tmp_path):
    """Ctrl+C lands inside a step (here after its forward pass): Lightning resumes after the batches it completed,
    so the loader must serve the batch in flight again. Every batch is then trained once and the epoch ends at
    its last batch, as in the uninterrupted run. (Not exactly the same numbers: the redone forward pass draws
    other dropout masks and updates the BatchNorm statistics a second time.)"""
    run_dir = tmp_path / "run"
    args = resume_overrides(synthetic_root, tmp_path / "cache", run_dir)
    stop_at = mid_last_epoch(uninterrupted)
    stopped = run_cli("train", *args, *interrupt_at(stop_at, "ctrl_c"))
    assert stopped.returncode == 1, stopped.stderr[-3000:]
    assert checkpoint_step(run_dir) == stop_at

    result = run_cli("train", *args, "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint_step(run_dir) == checkpoint_step(uninterrupted)  # not one batch fewer
    resumed, reference = scalar_events(run_dir), scalar_events(uninterrupted)
    for tag in ("train/loss", "val/acc"):
        assert [step for step, _ in resumed[tag]] == [step for step, _ in reference[tag]], tag


@pytest.mark.slow
def test_a_run_validating_twice_an_epoch_resumes_in_hundredths_of_an_epoch(synthetic_root, tmp_path):
    """val_check_interval=0.5, 10 batches an epoch: steps are hundredths of an epoch. SIGTERM at step 17 (after
    the second epoch's half-way validation) saves last.ckpt at 1.7 epochs; a resume from it keeps what the stopped
    run logged (50, 100, 150), which it does not log again, and logs the rest. Resumed from that checkpoint once
    more, the first resume's later events (at 200) are hidden and logged again: each validation shows once."""
    run_dir = tmp_path / "run"
    args = [
        "trainer.max_epochs=2", "trainer.val_check_interval=0.5", f"model.blocks={TINY_BLOCKS}", "test=false",
        "~callbacks.progress_bar", f"hydra.run.dir={run_dir}", *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    ]  # fmt: skip
    stopped = run_cli("train", *args, *interrupt_at(17, "sigterm"))
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    stopped_val = scalar_events(run_dir)["val/acc"]
    assert [step for step, _ in stopped_val] == [50, 100, 150]
    saved = run_dir / "checkpoints" / "stopped.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", saved)
    for ckpt_path in ("last", saved):
        result = run_cli("train", *args, f"ckpt_path={ckpt_path}")
        assert result.returncode == 0, result.stderr[-3000:]
        logged = scalar_events(run_dir)
        assert logged["val/acc"][:3] == stopped_val, ckpt_path
        for tag, steps in (("val/acc", [50, 100, 150, 200]), ("train/acc", [100, 200]), ("train/lr-RMSprop", [0, 100])):
            assert [step for step, _ in logged[tag]] == steps, (ckpt_path, tag)


@pytest.mark.slow
def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(synthetic_root, tmp_path):
    """SGD whose learning rate grows 1e8-fold per epoch: epoch 0 trains (and is saved), epoch 1 blows up to NaN."""
    run_dir = tmp_path / "run"
    exploding_lr = [
        "optimizer=sgd",
        "optimizer.lr=0.01",
        "+scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
        "+scheduler._partial_=true",
        "+scheduler.gamma=1e8",
        "+scheduler.interval=epoch",
    ]
    result = run_cli("train", *resume_overrides(synthetic_root, tmp_path / "cache", run_dir, *exploding_lr))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(message) == 1 and "nan at epoch 1, step" in message[0], result.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint_epoch(last) == 0  # epoch 0's, not overwritten by the diverged state
    module = load_module(last)
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.slow
def test_resume_without_a_last_checkpoint_names_the_missing_file(synthetic_root, tmp_path):
    result = run_cli(
        "train", *resume_overrides(synthetic_root, tmp_path / "cache", tmp_path / "fresh", "ckpt_path=last")
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'fresh' / 'checkpoints' / 'last.ckpt'}" in result.stderr and "hydra.run.dir" in result.stderr


@pytest.mark.slow
def test_last_checkpoint_is_the_latest_epoch_even_when_the_best_did_not_change(synthetic_root, tmp_path):
    """ModelCheckpoint's own save_last writes last.ckpt only when a best checkpoint is saved: a run whose monitored
    metric stops improving would resume from its best epoch, not its latest. Here the "best" (val/acc_best, which
    never decreases, in mode min) is saved after epoch 1 only."""
    run_dir = tmp_path / "run"
    extra = ["trainer.max_epochs=2", "monitor=val/acc_best", "callbacks.model_checkpoint.mode=min"]
    result = run_cli("train", *resume_overrides(synthetic_root, tmp_path / "cache", run_dir, *extra))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    assert checkpoint_epoch(run_dir / "checkpoints" / "last.ckpt") == 1


def test_the_resume_hint_names_the_seed_a_seed_null_run_drew(tmp_path):
    from omegaconf import open_dict

    from cifar_lit.training.resume import resume_hint

    cfg = compose_train(["experiment=smoke", "seed=null"], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.seed = 1234  # what cifar_lit.training.process.seed_run drew and train stored
    hint = resume_hint(cfg).split()
    assert "seed=1234" in hint and "seed=null" not in hint
    assert hint[-2:] == [f"hydra.run.dir={tmp_path}", "ckpt_path=last"]
