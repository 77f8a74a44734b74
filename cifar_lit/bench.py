"""python -m cifar_lit.bench [options] [hydra overrides]: training throughput, reference path vs project path.

* reference: the seed's way. Literal block (K separate convolutions), fp32, NCHW, a plain PyTorch loop fed by a
  ``torch.utils.data.DataLoader`` over a per-image dataset (PIL -> ToTensor -> Normalize, same augmentation).
* project: the default training path of ``cifar_lit.train`` (the Lightning Trainer with the composed config:
  resident batches, the configured block form, precision and memory format).

Each measurement runs in its own subprocess (so peak memory is that path's alone), alternating reference and
project for ``--rounds`` pairs; a run times ``--steps`` optimizer steps after ``--warmup`` steps, data loading
included. The median of each path is reported; the last line is ``speedup: X.XX`` (project / reference images/s).
On a machine with a GPU both paths train there (the reference copies each batch from its DataLoader to it).

Other modes: ``--precision`` (the project path under ``trainer.precision=auto``'s choice against the other
precisions for this device; last line ``auto: <choice>, X.XX x the fastest (<precision>)``), ``--forms`` (every
block form x precision x layout, model only), ``--conv-floor`` (a model-only step against its Blocks' 3x3
convolutions alone: how much of a step kernel fusion could remove at most) and ``--eval-batches`` (evaluation time
per batch size).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

import torch
from omegaconf import DictConfig

from cifar_lit.benchmarks.kernels import time_conv_floor, time_eval_batches, time_forms
from cifar_lit.benchmarks.overhead import compare_overhead
from cifar_lit.benchmarks.paths import default_device, peak_memory_mb, run_model, run_project, run_reference
from cifar_lit.benchmarks.precision import compare_precisions

WORKERS = {"reference": run_reference, "project": run_project, "model": run_model}


def compose(overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cifar_lit.hydra_ext.entry import CONFIG_DIR

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return hydra_compose(config_name="train", overrides=overrides)


def worker(path: str, overrides: list[str], warmup: int, steps: int) -> dict[str, Any]:
    cfg = compose(overrides)
    seconds = WORKERS[path](cfg, warmup, steps)
    return {
        "path": path,
        "images_per_s": steps * cfg.data.batch_size / seconds,
        "peak_memory_mb": peak_memory_mb(),
        "precision": "32" if path == "reference" else str(cfg.trainer.precision),  # auto: as run_project chose
    }


def measure(path: str, args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    """One timed run of ``path`` in its own process, with ``args.overrides`` and then ``extra``."""
    cmd = [sys.executable, "-m", "cifar_lit.bench", "--worker", path, "--warmup", str(args.warmup)]
    cmd += ["--steps", str(args.steps), *args.overrides, *extra]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench: the {path} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def config_line(cfg: DictConfig, args: argparse.Namespace) -> str:
    """What was timed: the overrides, batch size, steps, rounds and threads."""
    return (
        f"config: {' '.join(args.overrides) or '(defaults)'}; batch {cfg.data.batch_size}, "
        f"{args.steps} timed steps after {args.warmup}, {args.rounds} rounds; {torch.get_num_threads()} threads; "
        f"device {torch.cuda.get_device_name() if default_device().type == 'cuda' else 'cpu'}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config, e.g. model=two_blocks")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds of alternated runs (each path, or each precision)"
    )
    parser.add_argument(
        "--precision", action="store_true", help="time the project path under precision=auto and the other precisions"
    )
    parser.add_argument("--forms", action="store_true", help="time the block forms (model only; GPU if any) instead")
    parser.add_argument(
        "--conv-floor", action="store_true", help="time a model-only step against its 3x3 convolutions alone instead"
    )
    parser.add_argument("--eval-batches", help="time evaluation at these batch sizes instead, e.g. 64,128,500")
    parser.add_argument(
        "--overhead",
        help="time the project path end to end against its model alone for these compile settings instead, "
        "e.g. false,default,reduce-overhead",
    )
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.forms:
        time_forms(compose(args.overrides), args.steps, args.warmup)
        return
    if args.conv_floor:
        time_conv_floor(compose(args.overrides), args.steps, args.warmup, args.rounds)
        return
    if args.eval_batches:
        time_eval_batches(compose(args.overrides), [int(b) for b in args.eval_batches.split(",")], args.rounds)
        return
    if args.overhead:
        print(config_line(compose(args.overrides), args), flush=True)
        compare_overhead(
            args.overhead.split(","), args.rounds, lambda path, mode: measure(path, args, f"compile={mode}")
        )
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.overrides, args.warmup, args.steps)))
        return
    if args.precision:
        cfg = compose(args.overrides)
        print(config_line(cfg, args), flush=True)
        compare_precisions(
            str(cfg.trainer.accelerator),
            args.rounds,
            lambda value: measure("project", args, f"trainer.precision={value}"),
        )
        return
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "project": []}
    for round_index in range(args.rounds):
        for path in runs:
            runs[path].append(measure(path, args))
            r = runs[path][-1]
            print(
                f"round {round_index + 1} {path:9s}: {r['images_per_s']:8.1f} images/s, "
                f"peak memory {r['peak_memory_mb']:7.0f} MiB",
                flush=True,
            )
    speed = {path: statistics.median(r["images_per_s"] for r in rs) for path, rs in runs.items()}
    memory = {path: max(r["peak_memory_mb"] for r in rs) for path, rs in runs.items()}
    print(config_line(compose(args.overrides), args))
    for path in runs:
        print(f"{path:9s} median {speed[path]:8.1f} images/s, peak memory {memory[path]:7.0f} MiB")
    print(f"speedup: {speed['project'] / speed['reference']:.2f}")


if __name__ == "__main__":
    main()
