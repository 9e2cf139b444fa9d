"""The package's shape: no import cycle, layers that import downward only, documented modules,
cross-references that resolve, typed sync twins."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import fficube
import fficube.sync

PACKAGE = Path(fficube.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_within_the_package() -> dict[str, set[str]]:
    """module -> the package's modules it imports (TYPE_CHECKING imports included)."""
    graph: dict[str, set[str]] = {}
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(0, node.level - 1)):
                    base = base.rpartition(".")[0]
                if node.module is None:  # from . import name: the module name (if it is one)
                    targets = [f"{base}.{alias.name}" for alias in node.names]
                else:
                    target = f"{base}.{node.module}" if node.level else node.module
                    targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by a depth-first walk (each reported once per entry)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return found


def test_the_walk_finds_a_cycle_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_package_modules() -> None:
    graph = imports_within_the_package()
    assert "fficube.sinks.s3" in graph["fficube.sinks"] and "fficube.plan" in graph["fficube.build"]
    assert cycles(graph) == []


def test_every_module_says_what_it_is_for() -> None:
    undocumented = [p.name for p in PACKAGE.rglob("*.py") if not ast.get_docstring(ast.parse(p.read_text()))]
    assert undocumented == []


def test_sync_twins_have_their_originals_signatures() -> None:
    for twin, original in ((fficube.make_cube, fficube.build_cube), (fficube.sync.update_cube, fficube.update_cube),
                           (fficube.sync.verify_cube, fficube.verify_cube)):
        assert inspect.signature(twin) == inspect.signature(original)
        assert not inspect.iscoroutinefunction(twin) and inspect.iscoroutinefunction(original)
    parameters = inspect.signature(fficube.make_cube).parameters
    assert list(parameters)[:2] == ["inputs", "output"] and "max_memory" in parameters
    assert "Synchronous twin" in (fficube.make_cube.__doc__ or "")


#: Modules that do I/O: storage clients and fficube's sources and sinks.
IO_MODULES = ("fsspec", "s3fs", "obstore", "aiobotocore", "botocore", "fficube.sources", "fficube.sinks")


def test_the_planner_imports_no_io_module() -> None:
    # A fresh interpreter: what importing the planner loads, third-party imports included.
    code = "import sys, fficube.plan; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)}).stdout.split()
    assert "fficube.plan" in loaded and "fficube.cubeinfo" in loaded
    assert [m for m in loaded if m.partition(".")[0] in IO_MODULES or m.startswith(IO_MODULES)] == []


def test_the_journal_records_versions_without_importing_the_inputs() -> None:
    # The journal sits below the inputs stage: the record it shares with it lives lower still.
    assert "fficube.inputs" not in imports_within_the_package()["fficube.journal"]
