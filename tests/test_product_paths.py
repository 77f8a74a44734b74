"""The product speaks of data.root and $CIFAR10_ROOT, never of the build machine's own data copy (../shared): only
.ci/run and test fixtures may point at it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT

BUILD_MACHINE_PATH = b"../shared"
PRODUCT = ["cifar_lit", "conf", "docs", "README.md", "Makefile"]


def text_files(paths: list[str]) -> list[Path]:
    """Every file under ``paths`` except binary ones (TensorBoard event files, PNGs: a NUL byte) and caches."""
    files = []
    for name in paths:
        top = ROOT / name
        for path in [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()):
            if "__pycache__" not in path.parts and b"\0" not in path.read_bytes():
                files.append(path)
    return files


def test_no_build_machine_path_in_the_product():
    files = text_files(PRODUCT)
    assert any(path.name == "source.py" for path in files) and any(path.suffix == ".md" for path in files)
    naming = [str(path.relative_to(ROOT)) for path in files if BUILD_MACHINE_PATH in path.read_bytes()]
    assert naming == [], f"{BUILD_MACHINE_PATH.decode()} (this build machine's data copy) named in {naming}"
