"""cifar_lit.report: tables, curves and sweep summaries from the TensorBoard events of real tiny runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from cifar_lit.errors import FAILURE_FILE, PRUNED_FILE
from cifar_lit.hydra_ext.sweep import SweepSummary
from cifar_lit.report import main
from cifar_lit.reporting.events import EVENT_GLOB, per_epoch_table, read_scalars
from cifar_lit.reporting.sweeps import write_summary
from cifar_lit.reporting.tables import FINAL_TEST_LABEL
from tests.conftest import (
    TINY_BLOCKS,
    job_folder,
    read_csv,
    run_cli,
    run_training,
    scalar_events,
    synthetic_overrides,
    write_image_folder,
)

MAX_EPOCHS = 3


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory) -> list[str]:
    """A tiny image folder (30 train, 10 test images per class) and the overrides that train on it quickly."""
    root = write_image_folder(tmp_path_factory.mktemp("report_data"), {"train": 30, "test": 10})
    return [
        "experiment=smoke",
        "model=two_blocks",
        *synthetic_overrides(root, tmp_path_factory.mktemp("report_cache")),
        "data.subset=null",
        "data.val_size=50",
        "callbacks.progress_bar=null",
    ]


@pytest.fixture(scope="module")
def run_dir(data_overrides, tmp_path_factory) -> Path:
    """A real run that evaluates the test set every epoch and tests its best checkpoint at the end."""
    return run_training(
        tmp_path_factory.mktemp("report_run"),
        *data_overrides,
        f"trainer.max_epochs={MAX_EPOCHS}",
        "data.test_every_epoch=true",
    )


def logged_per_epoch(scalars: dict[str, list], tag: str) -> dict[int, float]:
    """1-based epoch -> value of ``tag`` over the training epochs: the first event at each epoch's step (the step is
    the 0-based epoch: cifar_lit.training.epoch_logger)."""
    epoch_at = {event.step: event.step for event in scalars["train/loss"]}
    train_steps = {event.step for event in scalars["train/loss"]}
    values: dict[int, float] = {}
    for event in scalars[tag]:
        if event.step in train_steps and epoch_at[event.step] + 1 not in values:
            values[epoch_at[event.step] + 1] = event.value
    return values


@pytest.mark.slow
def test_table_holds_the_logged_values_at_each_extreme_epoch(run_dir, tmp_path):
    main([str(run_dir), "--out", str(tmp_path)])
    scalars = scalar_events(run_dir)
    columns = {
        "train loss": "train/loss",
        "train acc": "train/acc",
        "test loss": "test/loss",
        "test acc": "test/acc",
        "val loss": "val/loss",
        "val acc": "val/acc",
    }
    per_epoch = {name: logged_per_epoch(scalars, tag) for name, tag in columns.items()}
    assert all(len(values) == MAX_EPOCHS for values in per_epoch.values())
    rows = {row[""]: row for row in read_csv(tmp_path / "table.csv")}
    extremes = {
        "min training loss": ("train loss", min),
        "max training accuracy": ("train acc", max),
        "min test loss": ("test loss", min),
        "max test accuracy": ("test acc", max),
        "min val loss": ("val loss", min),
        "max val accuracy": ("val acc", max),
    }
    assert set(rows) == {*extremes, FINAL_TEST_LABEL}
    for label, (name, extreme) in extremes.items():
        row = rows[label]
        epoch = int(row["epoch"])
        assert float(row[name]) == extreme(per_epoch[name].values()), label
        for column in columns:  # every metric of that epoch, exactly as logged
            assert float(row[column]) == per_epoch[column][epoch], (label, column)
    # the final test of the best checkpoint is the last test event, reported apart from the per-epoch ones
    final = rows[FINAL_TEST_LABEL]
    # per epoch, then the final test at the epoch after the last (the TensorBoard hparams log no copy of it)
    assert [event.step for event in scalars["test/acc"]] == list(range(MAX_EPOCHS + 1))
    assert float(final["test acc"]) == scalars["test/acc"][-1].value
    assert float(final["test loss"]) == scalars["test/loss"][-1].value
    assert final["epoch"] == final["train loss"] == ""
    md = (tmp_path / "table.md").read_text()
    assert run_dir.name in md and "2 blocks" in md and "RMSprop lr=0.001" in md
    assert "| max test accuracy |" in md and f"| {FINAL_TEST_LABEL} |" in md


@pytest.mark.slow
def test_report_defaults_to_the_run_dir(run_dir, tmp_path):
    main([str(run_dir), "--out", str(tmp_path)])
    main([str(run_dir)])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["accuracy.png", "loss.png", "table.csv", "table.md"]
    assert all((run_dir / name).is_file() for name in written)
    assert read_csv(run_dir / "table.csv") == read_csv(tmp_path / "table.csv")
    assert (run_dir / "table.md").read_text() == (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_multirun_summary_sorted_by_best_val_accuracy(data_overrides, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "train",
        "-m",
        *data_overrides,
        "optimizer.lr=0.01,0.001",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    main([str(sweep_dir)])
    rows = read_csv(sweep_dir / "summary.csv")
    assert len(rows) == 2
    best = [float(row["best val acc"]) for row in rows]
    assert best == sorted(best, reverse=True)
    assert sorted(row["overrides"] for row in rows) == ["optimizer.lr=0.001", "optimizer.lr=0.01"]
    for row in rows:
        scalars = scalar_events(job_folder(sweep_dir, int(row["job"])))
        assert float(row["best val acc"]) == max(e.value for e in scalars["val/acc_best"])
        assert float(row["test acc"]) == scalars["test/acc"][-1].value
        assert int(row["epochs"]) == 2
        assert float(row["wall time (s)"]) > 0
    assert (sweep_dir / "summary.md").read_text().count("optimizer.lr=") == 2
    with Image.open(sweep_dir / "val_acc.png") as image:
        assert image.format == "PNG" and image.width > 0


@pytest.mark.slow
def test_report_of_a_run_resumed_from_an_earlier_checkpoint_shows_the_resumed_epochs(data_overrides, tmp_path):
    """Resumed from epoch 1's checkpoint, the run logs epochs 2 and 3 again; the attempt it abandoned logged them too
    (and its final test), in the same event folder. The report shows what the resumed run logged."""
    run_dir = tmp_path / "run"
    args = [
        *data_overrides,
        f"model.blocks={TINY_BLOCKS}",
        f"trainer.max_epochs={MAX_EPOCHS}",
        "data.test_every_epoch=true",
        "callbacks.model_checkpoint.save_top_k=-1",  # every epoch's checkpoint, to resume from the first
        f"hydra.run.dir={run_dir}",
    ]
    result = run_cli("train", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    first_files = set((run_dir / "tensorboard").glob(EVENT_GLOB))
    first = scalar_events(run_dir)
    # label smoothing changes the losses and the updates (the checkpoint's optimizer state would restore the lr)
    checkpoint = run_dir / "checkpoints" / "epoch_000.ckpt"
    result = run_cli("train", *args, "label_smoothing=0.5", f"ckpt_path={checkpoint}")
    assert result.returncode == 0, result.stderr[-3000:]
    second_dir = tmp_path / "second_attempt"  # the resumed run's event files alone, read apart from the first's
    (second_dir / "tensorboard").mkdir(parents=True)
    for path in set((run_dir / "tensorboard").glob(EVENT_GLOB)) - first_files:
        shutil.copy(path, second_dir / "tensorboard")
    second = scalar_events(second_dir)

    tags = {"train loss": "train/loss", "train acc": "train/acc", "test loss": "test/loss", "test acc": "test/acc"}
    tags |= {"val loss": "val/loss", "val acc": "val/acc"}
    expected = {name: logged_per_epoch(first, tag) for name, tag in tags.items()}
    for name, tag in tags.items():
        resumed = logged_per_epoch(second, tag)
        assert sorted(resumed) == [2, 3], name
        assert resumed != {epoch: expected[name][epoch] for epoch in resumed}, f"{name}: the resume changed nothing"
        expected[name] |= resumed
    assert run_cli("report", str(run_dir), "--out", str(tmp_path / "report")).returncode == 0
    rows = {row[""]: row for row in read_csv(tmp_path / "report" / "table.csv")}
    assert len(rows) == 7 and {int(row["epoch"]) for row in rows.values() if row["epoch"]} & {2, 3}
    for label, row in rows.items():
        if label == FINAL_TEST_LABEL:  # the resumed run's test of its best checkpoint, not the abandoned one's
            assert float(row["test acc"]) == second["test/acc"][-1].value
            assert float(row["test loss"]) == second["test/loss"][-1].value
        else:
            for name in tags:
                assert float(row[name]) == expected[name][int(row["epoch"])], (label, name)
    table = per_epoch_table(read_scalars(run_dir))  # every epoch, not only the extremes the table shows
    for name, tag in tags.items():
        assert table.values[tag] == {epoch - 1: value for epoch, value in expected[name].items()}, name


def write_events(log_dir: Path, events: list[tuple[str, int, float]]) -> None:
    """Scalar events (tag, step, value), written in order with TensorBoard's own writer."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for tag, step, value in events:
        writer.add_scalar(tag, value, step)
    writer.close()


def epoch_events(step: int, epoch: int, metrics: dict[str, float]) -> list[tuple[str, int, float]]:
    return [*((tag, step, value) for tag, value in metrics.items()), ("epoch", step, epoch)]


def two_epochs_and_a_final_test(split: str) -> list[tuple[str, int, float]]:
    """Two epochs (steps 9 and 19) evaluated on ``split`` (acc 0.5, then 0.7), then a final test (acc 0.75, loss 0.9)
    logged at the last epoch's step and stamped with that epoch."""
    events = []
    for epoch, (acc, loss) in enumerate([(0.5, 1.5), (0.7, 1.0)]):
        step = 10 * epoch + 9
        events += epoch_events(step, epoch, {f"{split}/loss": loss, f"{split}/acc": acc, f"{split}/acc_best": acc})
        events += epoch_events(step, epoch, {"train/loss": loss + 0.1, "train/acc": acc - 0.1})
    return events + epoch_events(19, 1, {"test/loss": 0.9, "test/acc": 0.75})


def test_final_test_logged_at_the_last_epochs_step_is_kept_apart(tmp_path):
    # per-epoch test, then a final test at the same step as the last epoch (and stamped with that epoch)
    write_events(tmp_path / "tensorboard", two_epochs_and_a_final_test("test"))
    table = per_epoch_table(read_scalars(tmp_path))
    assert table.epochs == [0, 1]
    assert table.values["test/acc"] == pytest.approx({0: 0.5, 1: 0.7})
    assert table.final_test == pytest.approx({"test/loss": 0.9, "test/acc": 0.75})


def test_test_evaluated_only_at_the_end_is_the_final_test(tmp_path):
    write_events(tmp_path / "tensorboard", two_epochs_and_a_final_test("val"))
    main([str(tmp_path)])
    rows = {row[""]: row for row in read_csv(tmp_path / "table.csv")}
    assert set(rows) == {
        "min training loss",
        "max training accuracy",
        "min val loss",
        "max val accuracy",
        FINAL_TEST_LABEL,
    }
    assert float(rows["max val accuracy"]["val acc"]) == pytest.approx(0.7)
    assert rows["max val accuracy"]["epoch"] == "2"
    assert rows["max val accuracy"]["test acc"] == ""
    assert float(rows[FINAL_TEST_LABEL]["test acc"]) == pytest.approx(0.75)
    md = (tmp_path / "table.md").read_text()
    assert "test acc |" not in md and f"**{FINAL_TEST_LABEL}**: test loss 0.9000, test acc 0.7500" in md


def test_run_dir_without_events_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "no_events_run"
    (run_dir / ".hydra").mkdir(parents=True)
    result = run_cli("report", str(run_dir))
    assert result.returncode == 1
    assert str(run_dir) in result.stderr and "no TensorBoard event files" in result.stderr
    assert "Traceback" not in result.stderr


def write_job(sweep_dir: Path, job: int, overrides: list[str], tags: list[str], val_acc: list[float], test_acc: float):
    """A job dir as a multirun leaves it: .hydra/ (overrides, config with tags) and per-epoch val + final test."""
    job_dir = sweep_dir / str(job)
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tags": tags, "seed": 0}))
    events = []
    for epoch, acc in enumerate(val_acc):
        events += epoch_events(10 * epoch + 9, epoch, {"train/loss": 1.0, "val/loss": 1.0, "val/acc": acc})
    events += epoch_events(10 * len(val_acc) - 1, len(val_acc) - 1, {"test/acc": test_acc})
    write_events(job_dir / "tensorboard", events)


def test_jobs_that_differ_only_in_seed_are_grouped(tmp_path, capsys):
    sweep_dir = tmp_path / "seed_sweep"
    high, low = ["experiment=smoke", "optimizer.lr=0.01"], ["experiment=smoke", "optimizer.lr=0.001"]
    write_job(sweep_dir, 0, [*high, "seed=0"], ["sweep", "high"], [0.3, 0.5], 0.4)
    write_job(sweep_dir, 1, [*high, "seed=1"], ["sweep", "high"], [0.6, 0.2], 0.5)
    write_job(sweep_dir, 2, [*high, "seed=2"], ["sweep", "high"], [0.7], 0.9)
    write_job(sweep_dir, 3, ["seed=0", *low], ["sweep"], [0.2], 0.1)  # override order does not matter
    (sweep_dir / "4" / ".hydra").mkdir(parents=True)  # a failed job of the second group
    (sweep_dir / "4" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*low, "seed=1"]))
    (sweep_dir / "4" / FAILURE_FILE).write_text("FloatingPointError: diverged\n")

    with pytest.raises(SystemExit, match=r"1 of 5 jobs failed \(4\)"):  # after writing the summaries
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))

    rows = read_csv(sweep_dir / "summary_by_seed.csv")
    assert "test acc tta mean" not in rows[0]  # no job logged test/acc_tta
    assert [(r["overrides"], r["seeds"], r["runs"], r["failed"], r["tags"]) for r in rows] == [
        ("optimizer.lr=0.01", "0 1 2", "3", "0", "high,sweep"),
        ("optimizer.lr=0.001", "0 1", "1", "1", "sweep"),
    ]
    # best val acc 0.5, 0.6, 0.7 and test acc 0.4, 0.5, 0.9: means 0.6, 0.6; sample stds 0.1, sqrt(0.07)
    expected = {"best val acc mean": 0.6, "best val acc std": 0.1, "test acc mean": 0.6, "test acc std": 0.07**0.5}
    assert {key: float(rows[0][key]) for key in expected} == pytest.approx(expected, abs=1e-6)
    assert float(rows[1]["best val acc mean"]) == pytest.approx(0.2) and rows[1]["best val acc std"] == ""
    # the per-job summary stays, with the tags
    jobs = {row["job"]: row for row in read_csv(sweep_dir / "summary.csv")}
    assert len(jobs) == 5 and jobs["0"]["tags"] == "sweep,high" and jobs["4"]["status"] == "failed"
    printed = capsys.readouterr().out
    assert "| job | overrides | tags |" in printed and "seed_sweep: by seed" in printed


def test_seed_table_of_test_only_jobs_with_tta(tmp_path):
    """fast94-style jobs: no validation split, the test once at the end, plain and test-time-augmented."""
    for job, (plain, tta) in enumerate([(0.80, 0.83), (0.84, 0.85), (0.82, 0.87)]):
        job_dir = tmp_path / str(job)
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=fast94", f"seed={job}"]))
        events = epoch_events(9, 0, {"train/loss": 1.0}) + epoch_events(9, 0, {"test/acc": plain, "test/acc_tta": tta})
        write_events(job_dir / "tensorboard", events)
    write_summary(tmp_path, tmp_path)
    [row] = read_csv(tmp_path / "summary_by_seed.csv")
    assert (row["runs"], row["failed"], row["best val acc mean"]) == ("3", "0", "")
    expected = {"test acc mean": 0.82, "test acc std": 0.02, "test acc tta mean": 0.85, "test acc tta std": 0.02}
    assert {key: float(row[key]) for key in expected} == pytest.approx(expected, abs=1e-6)


def test_no_seed_table_when_no_jobs_differ_only_in_seed(tmp_path):
    write_job(tmp_path, 0, ["optimizer.lr=0.01", "seed=0"], [], [0.5], 0.4)
    write_job(tmp_path, 1, ["optimizer.lr=0.001", "seed=1"], [], [0.6], 0.5)
    main([str(tmp_path)])
    assert (tmp_path / "summary.md").is_file() and not (tmp_path / "summary_by_seed.md").exists()


def test_a_two_key_sweep_gets_its_grid_with_pruned_failed_and_missing_cells(tmp_path):
    """Rows: lr in numeric order; columns: batch size in numeric order; each cell the job's best val accuracy (the
    best bold), a pruned cell with its epochs, a failed cell as failed, a cell no job ran as not run."""
    write_job(tmp_path, 0, ["optimizer.lr=0.01", "data.batch_size=128"], [], [0.5, 0.6], 0.55)
    write_job(tmp_path, 1, ["optimizer.lr=0.001", "data.batch_size=128"], [], [0.4, 0.7], 0.65)
    write_job(tmp_path, 2, ["data.batch_size=64", "optimizer.lr=0.01"], [], [0.3], 0.3)  # order does not matter
    (tmp_path / "2" / PRUNED_FILE).write_text("pruned after 1 epoch: val/acc=0.3000\n")
    (tmp_path / "3" / ".hydra").mkdir(parents=True)
    (tmp_path / "3" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["optimizer.lr=0.1", "data.batch_size=64"])
    )
    (tmp_path / "3" / FAILURE_FILE).write_text("FloatingPointError: diverged\n")
    write_summary(tmp_path, tmp_path)
    grid = (tmp_path / "summary.md").read_text().split("Best val acc of each cell")[1]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in grid.splitlines() if line.startswith("|")]
    assert rows[0] == ["optimizer.lr \\ data.batch_size", "64", "128"]
    assert rows[2:] == [
        ["0.001", "not run", "**0.7000**"],
        ["0.01", "0.3000 (pruned, 1 ep)", "0.6000"],
        ["0.1", "failed", "not run"],
    ]


def test_a_two_key_sweep_gets_a_heat_map_and_its_best_curves(tmp_path):
    """grid.png beside summary.md: the cells' best val accuracies (none for a failed or missing cell), the best one
    framed; val_acc.png draws the best few jobs only. A one-key sweep gets no heat map."""
    from cifar_lit.reporting.grid import two_key_grid
    from cifar_lit.reporting.plots import plot_jobs
    from cifar_lit.reporting.sweeps import job_dirs, sort_jobs, summarize_job, varying_overrides

    accuracies = {("0.01", "64"): 0.61, ("0.01", "128"): 0.72, ("0.001", "64"): 0.55, ("0.001", "128"): 0.58}
    for job, ((lr, batch), acc) in enumerate(accuracies.items()):
        write_job(tmp_path, job, [f"optimizer.lr={lr}", f"data.batch_size={batch}"], [], [acc - 0.1, acc], acc)
    (tmp_path / "4" / ".hydra").mkdir(parents=True)
    (tmp_path / "4" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["optimizer.lr=0.1", "data.batch_size=64"])
    )
    (tmp_path / "4" / FAILURE_FILE).write_text("FloatingPointError: diverged\n")
    paths = write_summary(tmp_path, tmp_path)
    assert tmp_path / "grid.png" in paths
    with Image.open(tmp_path / "grid.png") as image:
        assert image.format == "PNG"
    jobs = sort_jobs(summarize_job(job) for job in job_dirs(tmp_path))
    grid = two_key_grid(jobs, varying_overrides(jobs)[0])
    assert (grid.rows, grid.columns) == (["0.001", "0.01", "0.1"], ["64", "128"])
    cells = [[grid.accuracy(r, c) for c in grid.columns] for r in grid.rows]
    assert cells[:2] == [pytest.approx([0.55, 0.58]), pytest.approx([0.61, 0.72])] and cells[2] == [None, None]
    assert grid.best() == ("0.01", "128")

    for job, acc in enumerate([0.3, 0.9, 0.5, 0.7, 0.4, 0.8, 0.6]):  # seven jobs: val_acc.png draws the best five
        write_job(tmp_path / "seven", job, [f"seed={job}"], [], [acc], acc)
    jobs = sort_jobs(summarize_job(job) for job in job_dirs(tmp_path / "seven"))
    drawn = plot_jobs(jobs, varying_overrides(jobs)[0], tmp_path / "curves.png", "seven")
    assert drawn == ["1", "5", "3", "6", "2"]

    one_key = tmp_path / "one_key"
    for job, lr in enumerate(["0.1", "0.01"]):
        write_job(one_key, job, [f"optimizer.lr={lr}"], [], [0.5], 0.5)
    assert not any(path.name == "grid.png" for path in write_summary(one_key, one_key))
