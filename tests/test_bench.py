"""The benchmark's modes on tiny models: evaluation batches, block forms, the convolution floor, one run of each
training path, the precisions against auto's choice."""

from __future__ import annotations

import re

import pytest
import torch

from cifar_lit.bench import main, worker
from cifar_lit.benchmarks.kernels import block_conv_shapes, time_conv_floor, time_eval_batches, time_forms
from cifar_lit.benchmarks.precision import candidates, compare_precisions
from cifar_lit.hydra_ext.instantiate import plain
from cifar_lit.network.model import BlockNetwork
from cifar_lit.training import precision
from cifar_lit.training.precision import resolve_precision
from tests.conftest import TINY_BLOCKS, compose_train, synthetic_overrides


def test_eval_batches_prints_one_timing_per_batch_size(capsys):
    cfg = compose_train(["model=two_blocks"])
    time_eval_batches(cfg, [32, 100], rounds=2, images=200)
    lines = capsys.readouterr().out.splitlines()
    assert [int(re.search(r"eval batch\s+(\d+)", line).group(1)) for line in lines] == [32, 100]
    for line in lines:
        assert "for 200 images (median of 2:" in line
        assert len(re.findall(r"\d+\.\d\d", line.split("median of 2:")[1])) == 2


def test_forms_times_every_form_precision_and_layout(capsys):
    from cifar_lit.network.block import BLOCK_FORMS

    cfg = compose_train(["model=two_blocks", f"model.blocks={TINY_BLOCKS}", "data.batch_size=4"])
    time_forms(cfg, steps=1, warmup=1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "device: cpu, batch 4"
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (form, precision, layout)
        for form in BLOCK_FORMS
        for precision in ("fp32", "bf16")
        for layout in ("NCHW", "channels_last")
    ]
    assert all(float(r[3]) > 0 for r in rows)


def test_block_conv_shapes_follow_the_branches_stem_and_pools():
    cfg = compose_train(["experiment=fast94"])
    net = BlockNetwork(**plain(cfg.model))  # stem 3 -> 24 channels, 32 -> 31 pixels; K = 2
    shapes = block_conv_shapes(net, torch.randn(2, 3, 32, 32))
    assert shapes == [
        ((2, 48, 31, 31), 64),
        ((2, 128, 15, 15), 64),
        ((2, 128, 15, 15), 256),
        ((2, 512, 7, 7), 256),
        ((2, 512, 7, 7), 256),
        ((2, 512, 3, 3), 256),
    ]


def test_conv_floor_times_the_step_and_its_convolutions(capsys):
    cfg = compose_train(["model=two_blocks", f"model.blocks={TINY_BLOCKS}", "data.batch_size=4"])
    time_conv_floor(cfg, steps=2, warmup=1, rounds=2)
    lines = capsys.readouterr().out.splitlines()
    precision = "bf16" if resolve_precision("auto", "cpu") == "bf16-mixed" else "fp32"  # the default's choice here
    assert lines[0].startswith(f"device: cpu, batch 4, {precision}, channels_last,")
    assert [line.split(" s per")[0].rsplit(" ", 1)[0].strip() for line in lines[1:3]] == [
        "network training step",
        "3x3 convolutions alone",
    ]
    assert all("(median of 2 x 2 calls)" in line for line in lines[1:3])
    assert 0.0 < float(lines[3].removeprefix("convolution share: ")) < 10.0


def test_both_paths_train_on_synthetic_data(synthetic_root, tmp_path):
    overrides = [*synthetic_overrides(synthetic_root, tmp_path / "cache"), f"model.blocks={TINY_BLOCKS}"]
    for path in ("reference", "project"):
        result = worker(path, overrides, warmup=1, steps=2)
        assert result["path"] == path and result["images_per_s"] > 0 and result["peak_memory_mb"] > 0


def test_overhead_times_the_model_alone_and_end_to_end(synthetic_root, tmp_path, capsys):
    overrides = [*synthetic_overrides(synthetic_root, tmp_path / "cache"), f"model.blocks={TINY_BLOCKS}"]
    main(["--overhead", "false", "--steps", "2", "--warmup", "1", "--rounds", "1", *overrides])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("device cpu") and "2 timed steps after 1, 1 rounds" in lines[0]
    mode, model, end_to_end, ratio = lines[2].split()
    assert mode == "false" and float(model) > 0 and float(end_to_end) > 0
    assert float(ratio) == pytest.approx(float(end_to_end) / float(model), abs=0.01)


def fake_measure(speeds: dict[str, float], chosen: str, asked: list[str]):
    """A stand-in for a timed worker: ``speeds`` images/s by precision; ``auto`` runs as ``chosen``."""

    def measure(value: str) -> dict:
        asked.append(value)
        ran = chosen if value == "auto" else value
        return {"images_per_s": speeds[ran], "peak_memory_mb": 1.0, "precision": ran}

    return measure


@pytest.mark.parametrize(("amx", "verdict"), [(False, "auto: 32-true, 1.00 x"), (True, "auto: bf16-mixed, 0.50 x")])
def test_precision_mode_says_how_autos_choice_compares(monkeypatch, tmp_path, capsys, amx, verdict):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"flags\t\t: fpu avx2{' amx_bf16' if amx else ''}\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    chosen = "bf16-mixed" if amx else "32-true"
    asked: list[str] = []
    speed = compare_precisions("cpu", 2, fake_measure({"32-true": 100.0, "bf16-mixed": 50.0}, chosen, asked))
    assert speed == {"32-true": 100.0, "bf16-mixed": 50.0}
    assert sorted(asked) == sorted(["auto", "auto", *[p for p in speed if p != chosen] * 2])  # auto's choice as auto
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"precision=auto here: {chosen} (CPU with")
    assert lines[-1] == f"{verdict} the fastest (32-true)"


def test_precision_candidates_on_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for native, expected in ((True, ["bf16-mixed", "16-mixed", "32-true"]), (False, ["16-mixed", "32-true"])):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n)
        assert candidates("gpu") == expected


@pytest.mark.slow
def test_precision_mode_times_the_project_path(synthetic_root, tmp_path, capsys):
    overrides = [*synthetic_overrides(synthetic_root, tmp_path / "cache"), f"model.blocks={TINY_BLOCKS}"]
    main(["--precision", "--steps", "2", "--warmup", "1", "--rounds", "1", *overrides])
    lines = capsys.readouterr().out.splitlines()
    chosen = resolve_precision("auto", "cpu")
    assert lines[1].startswith(f"precision=auto here: {chosen} (")
    rounds = [line.split(":")[0].split()[2:] for line in lines if line.startswith("round 1 ")]
    assert sorted(rounds) == [[name, "(auto)"] if name == chosen else [name] for name in ("32-true", "bf16-mixed")]
    assert re.fullmatch(rf"auto: {chosen}, \d\.\d\d x the fastest \((32-true|bf16-mixed)\)", lines[-1])
