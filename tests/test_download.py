"""The first run on a fresh machine downloads CIFAR-10 (by default), checked against md5 sums, from a server that the
tests run on 127.0.0.1: a tiny archive in the official layout, which brings its own md5 sums (``data.md5``)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cifar_lit.data import source
from cifar_lit.data.cache import load_split
from cifar_lit.data.source import ARCHIVE_DIR, CLASSES
from cifar_lit.errors import DataError
from tests.conftest import TINY_BLOCKS, run_cli

ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
PER_BATCH = 20  # images per batch file: 100 training and 20 test images


def pickled_batches(seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """The archive's files as the official one pickles them ({data: (N, 3072) uint8 channel-major, labels}), and
    each split's images as the project decodes them ((N, 32, 32, 3))."""
    rng = np.random.default_rng(seed)
    files, images = {}, {"train": [], "test": []}
    for name in BATCHES:
        data = rng.integers(0, 256, (PER_BATCH, 3 * 32 * 32), dtype=np.uint8)
        labels = [i % len(CLASSES) for i in range(PER_BATCH)]
        files[name] = pickle.dumps({"batch_label": name, "labels": labels, "data": data, "filenames": []})
        images["test" if name == "test_batch" else "train"].append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    files["batches.meta"] = pickle.dumps({"label_names": list(CLASSES), "num_cases_per_batch": PER_BATCH})
    return files, {split: np.concatenate(arrays) for split, arrays in images.items()}


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"{ARCHIVE_DIR}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def md5_override(md5: dict[str, str]) -> str:
    """``data.md5={<file>:'<sum>',...}`` on the command line (quoted: an all-digit sum would parse as a number)."""
    return "data.md5={" + ",".join(f"{name}:'{value}'" for name, value in md5.items()) + "}"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines in the test output
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    """A tiny archive, one whose bytes were corrupted after its md5 was taken, and one whose test_batch is not the
    file its md5 list names, served over HTTP on 127.0.0.1; their URLs, md5 sums and the decoded images."""
    files, images = pickled_batches()
    good = tar_gz(files)
    md5 = {ARCHIVE: hashlib.md5(good).hexdigest()} | {name: hashlib.md5(b).hexdigest() for name, b in files.items()}
    folder = tmp_path_factory.mktemp("www")
    (folder / "good").mkdir()
    (folder / "good" / ARCHIVE).write_bytes(good)
    (folder / "corrupt").mkdir()
    (folder / "corrupt" / ARCHIVE).write_bytes(good[: len(good) // 2] + bytes(len(good) - len(good) // 2))
    other = tar_gz(files | {"test_batch": pickled_batches(seed=1)[0]["test_batch"]})
    (folder / "other_file").mkdir()
    (folder / "other_file" / ARCHIVE).write_bytes(other)
    handler = partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {
        "url": {kind: f"{base}/{kind}/{ARCHIVE}" for kind in ("good", "corrupt", "other_file")},
        "md5": md5,
        "other_archive_md5": hashlib.md5(other).hexdigest(),
        "images": images,
    }
    server.shutdown()
    server.server_close()


def train_cli(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PL_GLOBAL_SEED", "CIFAR10_ROOT")}
    return run_cli("train", *overrides, f"hydra.run.dir={run_dir}", env=env | {"CUDA_VISIBLE_DEVICES": ""})


def test_a_fresh_root_is_downloaded_then_trained_on(served, tmp_path):
    """The default config (no data.download given) fetches the archive into an empty data.root, and the run trains
    on exactly the images it holds; only the checked cifar-10-batches-py/ is left there."""
    root = tmp_path / "data"
    tiny = [f"model.blocks={TINY_BLOCKS}", "trainer.max_epochs=1", "callbacks.progress_bar=null"]
    data = [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=20", "data.batch_size=16"]
    result = train_cli(
        tmp_path / "run", *tiny, *data, f"data.download_url={served['url']['good']}", md5_override(served["md5"])
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE_DIR]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"]["layout"] == "archive" and run["status"] == "finished" and "test/acc" in run["metrics"]
    for split in ("train", "test"):
        images, labels, _ = load_split(root, split, None, md5=served["md5"])
        assert np.array_equal(images, served["images"][split])
        assert np.bincount(labels).tolist() == [len(labels) // len(CLASSES)] * len(CLASSES)


@pytest.mark.parametrize(
    ("kind", "named"),
    [("corrupt", r"md5 mismatch.*(corrupt|not the CIFAR-10)"), ("other_file", r"test_batch.*fails its md5")],
)
def test_a_corrupt_download_is_named_and_nothing_is_left(served, tmp_path, kind, named):
    """An archive whose md5 is not the expected one, or one file inside that fails its sum, stops the download
    with a message naming it; data.root then holds nothing a later run would take for data."""
    root = tmp_path / "data"
    md5 = served["md5"] | ({ARCHIVE: served["other_archive_md5"]} if kind == "other_file" else {})
    with pytest.raises(DataError, match=named):
        load_split(root, "train", tmp_path / "cache", download=True, download_url=served["url"][kind], md5=md5)
    assert list(root.iterdir()) == []
    with pytest.raises(DataError, match="no CIFAR-10 found"):
        load_split(root, "train", tmp_path / "cache")


def test_the_published_sums_stay_checked_for_another_url(served, tmp_path):
    """A download URL without its own md5 sums (a mirror) is checked against the published ones: the test archive,
    which is not the official one, is refused."""
    root = tmp_path / "data"
    with pytest.raises(DataError, match="md5 mismatch"):
        load_split(root, "train", None, download=True, download_url=served["url"]["good"])
    assert list(root.iterdir()) == []


def test_an_unreachable_server_fails_the_run_at_once_with_how_to_provide_the_data(tmp_path):
    """The default download against a closed port on 127.0.0.1: exit status 1 in one message that says how to
    provide the data, no traceback, and nothing written under data.root."""
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = tmp_path / "data"
    result = train_cli(tmp_path / "run", f"data.root={root}", f"data.download_url=http://127.0.0.1:{port}/{ARCHIVE}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "could not download CIFAR-10" in result.stderr and "data.root" in result.stderr
    assert list(root.iterdir()) == []


def test_a_server_that_never_answers_is_given_up_after_the_timeout(tmp_path, monkeypatch):
    """A server that accepts the connection and never answers (as a dead route or firewall does) fails the download
    after DOWNLOAD_TIMEOUT_S instead of hanging the run."""
    monkeypatch.setattr(source, "DOWNLOAD_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads or writes
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/{ARCHIVE}"
        outcome: list[BaseException | None] = []

        def download() -> None:
            try:
                load_split(tmp_path / "data", "train", None, download=True, download_url=url)
                outcome.append(None)
            except BaseException as err:  # noqa: BLE001 - reported to the test below
                outcome.append(err)

        start = time.monotonic()
        worker = threading.Thread(target=download, daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the download still hangs after 30 s"
    assert isinstance(outcome[0], DataError) and "could not download" in str(outcome[0])
    assert time.monotonic() - start < 10
    assert socket.getdefaulttimeout() is None  # the timeout was set around the download only
