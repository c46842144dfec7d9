"""Imports go one way: a protocol (seam) module imports none of its implementations, the factories
that choose one live in wiring modules, and no module needs an import inside a function to get
round a circle. Checked on the source (ast) and by importing in fresh interpreters, each module
first, in the orders that used to depend on an in-function import."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# seam module -> modules it must not import (its implementations, and the wiring that picks one)
SEAMS = {
    "observability/stores.py": {"observability.sqlite_store", "observability.redis_store", "observability.wiring"},
    "observability/limits_protocol.py": {"observability.limits", "observability.limits_inprocess",
                                         "observability.limits_redis", "observability.limits_shared",
                                         "observability.wiring"},
    "observability/limits.py": {"observability.limits_inprocess", "observability.limits_redis",
                                "observability.limits_shared", "observability.wiring"},
    "observability/limits_config.py": {"observability.limits", "observability.limits_protocol"},
    "local_engine/core_process.py": {"local_engine.bootstrap"},
    "local_engine/engine_build.py": {"local_engine.bootstrap", "local_engine.core_process"},
}
# modules that must import nothing of these packages (observability is below policies and gateway)
PACKAGE_FLOOR = {"observability": ("policies", "gateway", "local_engine")}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, whether inside a function) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((alias.name, inside) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                out.append((base, inside))
                out.extend((f"{base}.{alias.name}", inside) for alias in child.names)
            visit(child, inside)

    visit(tree, False)
    return out


@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_a_seam_module_imports_none_of_its_implementations(seam: str) -> None:
    imported = {name for name, _ in _imports(REPO / seam)}
    assert not imported & SEAMS[seam], f"{seam} imports {sorted(imported & SEAMS[seam])}"


def test_observability_imports_nothing_from_the_layers_above_it() -> None:
    for package, above in PACKAGE_FLOOR.items():
        for path in sorted((REPO / package).rglob("*.py")):
            bad = sorted({name for name, _ in _imports(path) if name.split(".")[0] in above})
            assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def _import_each_first(modules: list[str]) -> subprocess.CompletedProcess[str]:
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n" \
           "print('torch' in sys.modules, 'redis' in sys.modules)"
    return subprocess.run([sys.executable, "-c", code, *modules], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("order", [
    ["observability.redis_store", "observability.stores"],
    ["observability.sqlite_store", "observability.wiring"],
    ["observability.limits_redis", "observability.limits"],
    ["observability.limits_protocol", "observability.limits_inprocess"],
    ["observability.limits_inprocess", "observability.limits_protocol"],
    ["observability.limits_shared", "observability.wiring"],
    ["local_engine.core_process", "local_engine.bootstrap"],
    ["local_engine.bootstrap", "local_engine.core_process"],
    ["observability.rollups", "observability.usage"],  # UsageRecord.rollup_fields: usage imports rollups
    ["observability.usage", "observability.rollups"],
])
def test_each_module_imports_first_in_a_fresh_interpreter(order: list[str]) -> None:
    done = _import_each_first(order)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_engine_server_side_and_the_embedded_gateway_stay_light() -> None:
    # the process core keeps torch out of the server process; without REDIS_URL nothing loads redis
    done = _import_each_first(["local_engine.bootstrap", "local_engine.core_process", "observability.wiring",
                               "observability.ledger"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]
