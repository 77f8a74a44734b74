"""Screenshots of optuna-dashboard showing a real pruned grid on CIFAR-10, for docs/sweeping.md.

    python scripts/optuna_dashboard_screenshots.py [--out docs/sweeping] [--sweep DIR] [overrides ...]

Runs ``hparams_search=pruned_grid`` (``GRID``: 3 learning rates x 2 batch sizes of a narrowed ``model=two_blocks``
on a 4,000-image subset, 4 epochs, successive halving) on the data set at ``data.root`` (``$CIFAR10_ROOT`` when set;
trailing overrides are added to the command, e.g. ``data.cache_dir=...``), serves its study with optuna-dashboard on
127.0.0.1 only, and has headless Chromium capture each page of ``VIEWS`` as a 64-colour PNG
(scripts/dashboard_screenshots.py's capture, whose Chromium flags and DevTools driving it reuses). Needs
``chromium`` on the PATH and the ``dashboard`` extra. ``--sweep`` keeps the sweep (a finished one is not trained
again: the same command resumes it, cifar_lit/hydra_ext/optuna_resume.py); without it the sweep is a temporary one.

``serve`` is what tests/test_optuna_dashboard.py starts the dashboard with: the test checks, over the same HTTP API
that these pages read, what the pictures are meant to show.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from dashboard_screenshots import free_port, screenshot_after_click  # noqa: E402

# model=two_blocks narrowed to 32 channels, each block pooling (about 15x fewer multiply-adds than its 64 channels at
# full resolution): at 64 channels one epoch of 3,000 images took 125 s on the 2-core CPU shared with a test run
GRID = [
    "hparams_search=pruned_grid",
    "optimizer.lr=0.01,0.001,0.0001",
    "data.batch_size=32,128",
    "model=two_blocks",
    "model.blocks=[{in_channels:3,out_channels:32,pool:true},{in_channels:32,out_channels:32,pool:true}]",
    "data.subset=4000",
    "data.val_size=1000",
    "trainer.max_epochs=4",
    "test=false",
    "callbacks.progress_bar=null",
]
# page -> (path under /dashboard/studies/<id>, its height in pixels, JS that is true once it is drawn);
# {pruned}: a pruned trial's number. The study's page: history, importances (bars), timeline, intermediate values.
VIEWS = {
    "study": ("", 2150, "deep(document, '.js-plotly-plot').length >= 4 && deep(document, '.bars path').length > 0"),
    "pruned_trial": ("/trials?numbers={pruned}", 900, "document.body.innerText.includes('job_dir')"),
}
# the extra's command: beside this interpreter (a venv not activated), else on the PATH
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
if not DASHBOARD.exists():
    DASHBOARD = Path(shutil.which("optuna-dashboard") or DASHBOARD)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@contextmanager
def serve(journal: Path, timeout: float = 60) -> Iterator[str]:
    """``optuna-dashboard <journal>`` on 127.0.0.1 (a free port), as a user starts it; yields its base URL once its
    API answers, and stops it at the end. Fails when it exits or does not answer within ``timeout`` s."""
    port = free_port()
    command = [str(DASHBOARD), str(journal), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{' '.join(command)} exited with {server.returncode}: {server.stderr.read()}")
            try:
                get_json(f"{base}/api/studies")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{' '.join(command)}: no answer after {timeout:.0f} s") from None
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_grid(sweep: Path, overrides: list[str]) -> None:
    command = [sys.executable, "-m", "cifar_lit.train", *GRID, *overrides, f"hydra.sweep.dir={sweep}"]
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def capture(base: str, out: Path, work: Path) -> None:
    """Each page of ``VIEWS`` of the sweep's study (the only one in its journal), as ``<out>/<page>.png``."""
    study = get_json(f"{base}/api/studies")["study_summaries"][0]["study_id"]
    trials = get_json(f"{base}/api/studies/{study}")["trials"]
    pruned = next(t["number"] for t in trials if t["state"] == "Pruned")
    for name, (page, height, drawn) in VIEWS.items():
        url = f"{base}/dashboard/studies/{study}{page.format(pruned=pruned)}"
        path = out / f"{name}.png"
        screenshot_after_click(url, path, work / f"chromium-{name}", click="true", drawn=drawn, height=height)
        print(path, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "sweeping")
    parser.add_argument("--sweep", type=Path, help="the sweep folder (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="more overrides of the grid's command")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweep = (args.sweep or Path(tmp) / "sweep").resolve()
        run_grid(sweep, args.overrides)
        with serve(sweep / "optuna.journal") as base:
            capture(base, args.out, Path(tmp))


if __name__ == "__main__":
    main()
