"""``trainer.precision=auto``: the choice on faked devices (GPU with and without native bf16, CPU with and without
AMX/AVX512-BF16), explicit values winning, a bad value's message, and a real run recording what it chose."""

from __future__ import annotations

import json
import logging
import typing
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import metadata as hparams_metadata

from cifar_lit.callbacks.provenance import RUN_FILE
from cifar_lit.errors import ConfigError
from cifar_lit.hydra_ext.instantiate import instantiate_trainer
from cifar_lit.training import precision
from cifar_lit.training.precision import (
    LIGHTNING_PRECISIONS,
    cpu_has_fast_bf16,
    resolve_precision,
    resolve_trainer_precision,
)
from tests.conftest import (
    TINY_BLOCKS,
    compose_train,
    hparam_value,
    hparams_summaries,
    run_cli,
    run_training,
    synthetic_overrides,
)

EXPLICIT = ["32-true", 32, "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true", 16]


def expected_on_this_cpu() -> str:
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


# ------------------------------------------------------------------------------------------------- faked devices
def fake_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: str) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Fake CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)


def fake_gpu(monkeypatch: pytest.MonkeyPatch, native_bf16: bool | None) -> None:
    """CUDA available (``native_bf16`` True/False: an Ampere+ or an older GPU, emulating bf16 as PyTorch does) or
    not (None)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: native_bf16 is not None)

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return bool(native_bf16) or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(("native_bf16", "chosen"), [(True, "bf16-mixed"), (False, "16-mixed")])
@pytest.mark.parametrize("accelerator", ["auto", "gpu", "cuda"])
def test_auto_on_a_gpu_is_bf16_where_native_else_fp16(monkeypatch, accelerator, native_bf16, chosen):
    fake_gpu(monkeypatch, native_bf16)
    assert resolve_precision("auto", accelerator) == chosen


@pytest.mark.parametrize(
    ("flags", "chosen"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile", "bf16-mixed"),  # Sapphire Rapids
        ("fpu sse avx2 avx512f avx512_bf16", "bf16-mixed"),  # Cooper Lake, Zen 4
        ("fpu sse avx2 amx_tile amx_bf16", "bf16-mixed"),
        ("fpu sse avx2 avx512f avx512_vnni", "32-true"),  # Cascade Lake: AVX-512 without bf16
        ("fpu sse avx2 fma", "32-true"),
    ],
)
@pytest.mark.parametrize("accelerator", ["cpu", "auto"])
def test_auto_on_a_cpu_is_bf16_only_with_bf16_units(monkeypatch, tmp_path, accelerator, flags, chosen):
    fake_gpu(monkeypatch, None)
    fake_cpuinfo(monkeypatch, tmp_path, flags)
    assert resolve_precision("auto", accelerator) == chosen


def test_cpu_accelerator_ignores_a_present_gpu(monkeypatch, tmp_path):
    fake_gpu(monkeypatch, True)
    fake_cpuinfo(monkeypatch, tmp_path, "fpu avx2")
    assert resolve_precision("auto", "cpu") == "32-true"


@pytest.mark.parametrize(
    ("probes", "fast"),
    [
        ({"_is_avx512_bf16_supported": True, "_is_amx_tile_supported": False}, True),
        ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True}, True),
        ({"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}, False),
        ({}, False),  # a PyTorch without the probes
    ],
)
def test_without_proc_cpuinfo_torchs_probes_decide(monkeypatch, tmp_path, probes, fast):
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "no-such-file")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if name in probes:
            monkeypatch.setattr(torch.cpu, name, lambda answer=probes[name]: answer, raising=False)
        else:
            monkeypatch.delattr(torch.cpu, name, raising=False)
    assert cpu_has_fast_bf16() is fast


def test_other_accelerators_get_fp32(monkeypatch):
    fake_gpu(monkeypatch, None)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_precision("auto", "mps") == "32-true"
    assert resolve_precision("auto", "auto") == "32-true"  # auto on a Mac: Lightning picks mps


@pytest.mark.parametrize("device", ["gpu", "cpu_with_amx", "cpu_without"])
@pytest.mark.parametrize("value", EXPLICIT)
def test_an_explicit_precision_wins(monkeypatch, tmp_path, device, value):
    fake_gpu(monkeypatch, True if device == "gpu" else None)
    fake_cpuinfo(monkeypatch, tmp_path, "amx_bf16" if device == "cpu_with_amx" else "avx2")
    resolved = resolve_precision(value, "auto")
    assert resolved == value and type(resolved) is type(value)


@pytest.mark.parametrize("value", ["fp32", "bf16-mixd", 8, 32.0, True, "AUTO", None])
def test_a_wrong_precision_is_a_one_line_config_error(value):
    with pytest.raises(ConfigError) as caught:
        resolve_precision(value, "cpu")
    message = str(caught.value)
    assert "\n" not in message and f"trainer.precision={value}" in message
    for accepted in ("auto", "32-true", "bf16-mixed", "16-mixed"):
        assert accepted in message


def test_the_accepted_values_are_lightnings():
    from lightning.fabric.plugins.precision import precision as lightning_precision

    literals = ("_PRECISION_INPUT_INT", "_PRECISION_INPUT_STR", "_PRECISION_INPUT_STR_ALIAS")
    lightnings = {value for name in literals for value in typing.get_args(getattr(lightning_precision, name))}
    assert set(LIGHTNING_PRECISIONS) == lightnings


# ---------------------------------------------------------------------------------------------- config nodes
def test_the_default_is_auto_and_is_resolved_in_place_once(caplog):
    cfg = compose_train(["trainer.accelerator=cpu"])
    assert cfg.trainer.precision == "auto"
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        assert resolve_trainer_precision(cfg.trainer) == "auto"
        assert resolve_trainer_precision(cfg.trainer) == expected_on_this_cpu()  # already resolved: unchanged
    assert cfg.trainer.precision == expected_on_this_cpu()
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"precision=auto -> {expected_on_this_cpu()} (CPU with")


def test_every_trainer_built_from_the_config_gets_the_resolved_precision(tmp_path):
    """eval and the benchmark build their Trainer with instantiate_trainer, as train's precision is chosen."""
    cfg = compose_train(["trainer.accelerator=cpu"], output_dir=tmp_path)
    trainer = instantiate_trainer(cfg.trainer, logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.precision == cfg.trainer.precision == expected_on_this_cpu()


def test_a_checkpoints_saved_config_with_bf16_still_resolves():
    """Configs saved before ``auto`` existed hold an explicit precision: it passes through."""
    node = OmegaConf.create({"accelerator": "cpu", "precision": "bf16-mixed"})
    assert resolve_trainer_precision(node) == "bf16-mixed" and node.precision == "bf16-mixed"


# ------------------------------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_a_default_run_records_the_precision_it_chose(synthetic_root, tmp_path):
    run_dir = run_training(
        tmp_path / "run",
        "experiment=smoke",
        f"model.blocks={TINY_BLOCKS}",
        "callbacks.progress_bar=null",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
    )
    chosen = expected_on_this_cpu()  # what this machine's CPU flags predict (bf16-mixed on an AMX machine)
    device = json.loads((run_dir / RUN_FILE).read_text())["device"]
    assert (device["precision"], device["precision_requested"]) == (chosen, "auto")
    start = hparams_summaries(run_dir)[hparams_metadata.SESSION_START_INFO_TAG][0]
    params = hparams_metadata.parse_session_start_info_plugin_data(start).hparams
    assert hparam_value(params["precision"]) == chosen
    assert f"precision=auto -> {chosen} (CPU with" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_a_wrong_precision_fails_before_training(synthetic_root, tmp_path):
    result = run_cli(
        "train",
        "trainer.precision=fp32",
        *synthetic_overrides(synthetic_root, tmp_path / "cache"),
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [line for line in result.stderr.splitlines() if "trainer.precision" in line]
    assert "trainer.precision=fp32" in line and "auto" in line and "32-true" in line
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / RUN_FILE).exists()
