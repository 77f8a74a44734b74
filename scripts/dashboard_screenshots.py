"""Screenshots of TensorBoard showing a real 2x2 lr x batch-size sweep, for docs/dashboards.md.

    python scripts/dashboard_screenshots.py [--out docs/dashboards] [--epochs 6]

Trains the sweep (``python -m cifar_lit.train -m``) on a synthetic image folder (tests/conftest.py's, 40 train and
10 test images a class: seconds on a CPU), serves it with TensorBoard on 127.0.0.1 only, and has headless Chromium
take a PNG of each dashboard, reduced to a 64-colour palette to stay small. Needs ``chromium`` on the PATH.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import SMALL_BLOCKS, write_image_folder  # noqa: E402

VIEWS = {  # file name -> TensorBoard dashboard
    "scalars": "#scalars&_smoothingWeight=0",
    "custom_scalars": "#custom_scalars",
    "hparams": "#hparams",
}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1400,900",
    "--virtual-time-budget=20000",
]  # fmt: skip


def sweep(work: Path, epochs: int) -> Path:
    """The 2x2 sweep's folder, trained on a synthetic image folder in ``work``."""
    data = write_image_folder(work / "data", {"train": 40, "test": 10})
    out = work / "sweep"
    command = [
        sys.executable, "-m", "cifar_lit.train", "-m", "optimizer.lr=0.0005,0.005", "data.batch_size=32,64",
        f"trainer.max_epochs={epochs}", f"model.blocks={SMALL_BLOCKS}", "model.num_branches=2", f"data.root={data}",
        f"data.cache_dir={work / 'cache'}", "data.val_size=100", "data.eval_batch_size=100", "trainer.accelerator=cpu",
        "callbacks.progress_bar=null", f"hydra.sweep.dir={out}",
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def screenshot(url: str, path: Path, profile: Path) -> None:
    """``url`` as headless Chromium renders it, as a small palette PNG at ``path``."""
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}"]
    subprocess.run(["chromium", *flags, url], check=True, capture_output=True, timeout=120)
    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboards")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        logdir, port = sweep(work, args.epochs), free_port()
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
        server = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/"
            for _ in range(120):
                try:
                    urllib.request.urlopen(base + "data/runs", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            time.sleep(5)  # let it load the event files
            for name, view in VIEWS.items():
                profile = work / f"chromium-{name}"  # a fresh profile per page
                screenshot(base + view, args.out / f"{name}.png", profile)
                shutil.rmtree(profile, ignore_errors=True)
                print(args.out / f"{name}.png")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
