"""Screenshots of TensorBoard showing a real 2x2 lr x batch-size sweep, for docs/dashboards.md.

    python scripts/dashboard_screenshots.py [--out docs/dashboards] [--epochs 6]

Trains the sweep (``python -m cifar_lit.train -m``) on a synthetic image folder (tests/conftest.py's, 40 train and
10 test images a class: seconds on a CPU), serves it with TensorBoard on 127.0.0.1 only, and has headless Chromium
take a PNG of each dashboard, reduced to a 64-colour palette to stay small. Needs ``chromium`` on the PATH.
The HPARAMS parallel-coordinates view is a sub-tab no URL selects: Chromium, driven over DevTools, clicks it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from itertools import count
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
]  # fmt: skip
# JS for the page: ``deep`` finds elements inside shadow roots too (the frontend is web components).
DEEP_QUERY = """const deep = (root, selector) => [...root.querySelectorAll(selector),
  ...[...root.querySelectorAll('*')].filter(e => e.shadowRoot).flatMap(e => deep(e.shadowRoot, selector))];"""
# TensorBoard ticks the first five hyper-parameters (by name here), which leaves out lr: tick just the swept ones.
SHOW_SWEEP_IN_PARALLEL_COORDINATES = """const boxes = deep(document, 'paper-checkbox.hparam-checkbox');
boxes.filter(box => box.checked !== ['lr', 'batch_size'].includes(box.textContent.trim())).forEach(box => box.click());
const tab = deep(document, '[role=tab]')
  .find(tab => tab.textContent.trim().toLowerCase() === 'parallel coordinates view');
tab?.click();
boxes.length > 0 && Boolean(tab)"""
PARALLEL_COORDINATES_DRAWN = "deep(document, 'g.foreground path').length > 0"


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


def to_palette(path: Path) -> None:
    """The PNG at ``path`` in 64 colours: a screenshot of flat UI colours stays readable and a fraction of the size."""
    Image.open(path).convert("RGB").quantize(64).save(path, optimize=True)


def screenshot(url: str, path: Path, profile: Path) -> None:
    """``url`` as headless Chromium renders it, as a small palette PNG at ``path``."""
    flags = [*CHROMIUM_FLAGS, "--virtual-time-budget=20000", f"--user-data-dir={profile}", f"--screenshot={path}"]
    subprocess.run(["chromium", *flags, url], check=True, capture_output=True, timeout=120)
    to_palette(path)


def screenshot_after_click(
    url: str, path: Path, profile: Path, click: str, drawn: str, timeout: float = 120, height: int = 900
) -> None:
    """``url`` once the JS ``click`` (it clicks what no URL selects) and then ``drawn`` are true, as ``screenshot``
    (``height`` pixels of the page: a taller page shows more of a long dashboard at once).

    Chromium is driven over its DevTools protocol with ``--remote-debugging-pipe`` (JSON messages ended by a NUL byte,
    which it reads on its fd 3 and answers on its fd 4): no websocket library, no port.
    """
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()
    as_fds_3_and_4 = f'exec "$@" 3<&{commands_read} 4>&{replies_write}'
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
    browser = subprocess.Popen(
        ["sh", "-c", as_fds_3_and_4, "sh", "chromium", *flags],
        pass_fds=(commands_read, replies_write),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(commands_read)
    os.close(replies_write)
    commands, replies, pending, ids = os.fdopen(commands_write, "wb"), os.fdopen(replies_read, "rb"), b"", count(1)

    def call(method: str, session: str | None = None, **params: object) -> dict:
        nonlocal pending
        message = {"id": next(ids), "method": method, "params": params} | ({"sessionId": session} if session else {})
        commands.write(json.dumps(message).encode() + b"\0")
        commands.flush()
        while True:  # past the events and the replies to earlier calls
            while b"\0" not in pending:
                chunk = replies.read1()
                if not chunk:
                    raise RuntimeError(f"chromium closed its DevTools pipe during {method}")
                pending += chunk
            raw, pending = pending.split(b"\0", 1)
            if (reply := json.loads(raw)).get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def wait_until(session: str, expression: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            block = f"{{{DEEP_QUERY}\n{expression}}}"  # a block, so that its consts are declared again at each call
            evaluated = call("Runtime.evaluate", session, expression=block, returnByValue=True)
            if "exceptionDetails" in evaluated:
                raise RuntimeError(f"{expression}: {evaluated['exceptionDetails']}")
            if evaluated["result"].get("value"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: still false after {timeout:.0f} s: {expression}")
            time.sleep(0.5)

    try:
        target = call("Target.createTarget", url=url)["targetId"]
        session = call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        # the page 1400 wide, as --window-size (headless keeps the height of a window's tab strip and toolbar off it)
        metrics = {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False}
        call("Emulation.setDeviceMetricsOverride", session, **metrics)
        wait_until(session, click)
        wait_until(session, drawn)
        time.sleep(2)  # its transitions
        path.write_bytes(base64.b64decode(call("Page.captureScreenshot", session)["data"]))
    finally:
        commands.close()  # chromium quits at the end of its pipe
        try:
            browser.wait(timeout=30)
        except subprocess.TimeoutExpired:
            browser.kill()
        replies.close()
    to_palette(path)


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
            path = args.out / "parallel_coordinates.png"
            profile = work / "chromium-parallel_coordinates"
            click, drawn = SHOW_SWEEP_IN_PARALLEL_COORDINATES, PARALLEL_COORDINATES_DRAWN
            screenshot_after_click(base + "#hparams", path, profile, click, drawn)
            print(path)
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
