"""Every third-party package cifar_lit imports is declared in pyproject.toml, so ``pip install .`` gives a working
install: a package imported when a module loads must be a dependency; one imported only inside a function (the
optional exporters' onnx and onnxscript) may instead sit in an extra."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PACKAGE = ROOT / "cifar_lit"
# modules that only an optional feature loads, when it starts (the Hydra plugin imports the Optuna search then): their
# imports may sit in that feature's extra; the test checks that no module of the package imports them at load time
OPTIONAL_MODULES = {
    "cifar_lit/hydra_ext/optuna_sweeper.py": "cifar_lit.hydra_ext.optuna_sweeper",
    "cifar_lit/hydra_ext/optuna_space.py": "cifar_lit.hydra_ext.optuna_space",
    "cifar_lit/hydra_ext/optuna_sampler.py": "cifar_lit.hydra_ext.optuna_sampler",
    "cifar_lit/hydra_ext/optuna_resume.py": "cifar_lit.hydra_ext.optuna_resume",
    "cifar_lit/hydra_ext/optuna_workers.py": "cifar_lit.hydra_ext.optuna_workers",
    "cifar_lit/hydra_ext/optuna_results.py": "cifar_lit.hydra_ext.optuna_results",
    "cifar_lit/hydra_ext/optuna_attrs.py": "cifar_lit.hydra_ext.optuna_attrs",
}


def normalise(name: str) -> str:
    """A distribution's name as PEP 503 compares them (``PyYAML`` = ``pyyaml``, ``hydra_core`` = ``hydra-core``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(package: Path) -> dict[str, dict[str, bool]]:
    """{top-level module: {file: imported when the file loads (not only inside a function)}} for every import
    of a module outside the standard library and the package itself."""
    found: dict[str, dict[str, bool]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        lazy = {id(node) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                for node in ast.walk(fn)}  # fmt: skip
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for top in {name.partition(".")[0] for name in names}:
                if top == package.name and id(node) not in lazy:
                    top = next((n for n in names if n in OPTIONAL_MODULES.values()), top)  # loaded eagerly: required
                if top in sys.stdlib_module_names or top in ("__future__", package.name):
                    continue
                where = found.setdefault(top, {})
                file = str(path.relative_to(package.parent))
                where[file] = where.get(file, False) or id(node) not in lazy
    return found


def declared() -> tuple[set[str], set[str]]:
    """(the distributions in ``[project] dependencies``, those in any optional extra), normalised."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {normalise(Requirement(spec).name) for spec in project["dependencies"]}
    extras = {
        normalise(Requirement(spec).name) for specs in project["optional-dependencies"].values() for spec in specs
    }
    return required, extras


def test_every_imported_package_is_declared():
    distributions = packages_distributions()
    required, extras = declared()
    imports = third_party_imports(PACKAGE)
    for module in OPTIONAL_MODULES.values():  # only another module of the same optional feature may load it
        importers = sorted(file for file in imports.get(module, {}) if file not in OPTIONAL_MODULES)
        assert not importers, f"{module} is optional but {importers} import it when they load"
    undeclared = []
    for module, files in sorted(imports.items()):
        if module in OPTIONAL_MODULES.values():  # the package's own, checked above
            continue
        providers = {normalise(name) for name in distributions.get(module, [])}
        assert providers, f"{module} (imported by {sorted(files)}) is not installed: which distribution provides it?"
        at_load = sorted(file for file, eager in files.items() if eager and file not in OPTIONAL_MODULES)
        allowed = required if at_load else required | extras
        if not providers & allowed:
            where = f"imported when {at_load[0]} loads" if at_load else f"imported lazily in {sorted(files)[0]}"
            undeclared.append(f"{module} ({'/'.join(sorted(providers))}; {where})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + ", ".join(undeclared)


def test_the_import_walk_sees_module_level_and_lazy_imports():
    """The walk itself, on the imports it must classify: eager torch, lazy onnx, no standard library."""
    found = third_party_imports(PACKAGE)
    assert any(found["torch"].values())
    assert not any(found["onnx"].values())
    assert "json" not in found and "cifar_lit" not in found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_no_module_of_the_package_imports_itself_round_a_circle():
    """The import graph of cifar_lit (every ``import``/``from`` of one of its modules, at load time, inside
    functions or under TYPE_CHECKING alike) has no cycle: each module can be read before the ones that use it."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                imported |= {n for n in names if n in modules}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name in modules}
        graph[name] = imported - {name, "cifar_lit"}  # the package's __init__ is what every import passes through

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for successor in sorted(graph[path[-1]]):
            if successor == start:
                return [*path, start]
            if successor not in path and successor > start:  # each cycle found once, from its smallest module
                found = cycle_from(start, [*path, successor])
                if found:
                    return found
        return None

    cycles = [cycle for start in sorted(graph) if (cycle := cycle_from(start, [start]))]
    assert not cycles, " | ".join(" -> ".join(cycle) for cycle in cycles)
