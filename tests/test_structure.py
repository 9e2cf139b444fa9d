"""The package's shape: no import cycle, layers that import downward only, documented modules,
cross-references that resolve, typed sync twins."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
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


#: The modules of output kinds: only their package, :mod:`fficube.sinks`, imports them.
SINK_KINDS = {"fficube.sinks.local", "fficube.sinks.s3", "fficube.sinks.memory"}
#: The modules of byte source kinds: only their package, :mod:`fficube.sources`, imports them.
SOURCE_KINDS = {"fficube.sources.local", "fficube.sources.fsspec", "fficube.sources.obstore",
                "fficube.sources.remote", "fficube.sources.memory"}
#: What other modules may take from a source kind's module: not a source, but the fsspec
#: session every build holds (and its two calls), and the memory store that the memory
#: output kind writes into.
SHARED_FROM_SOURCE_KINDS = {"Filesystems", "fs_request", "fs_call", "STORE"}


def kind_imports() -> list[tuple[str, str, str]]:
    """(module, kind module, name) for every name a module outside a kind's package takes
    from a kind module ("*" for a whole module, ``import x`` or ``from package import x``)."""
    found = []
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            taken: list[tuple[str, str]] = []
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(max(0, node.level - 1)):
                    base = base.rpartition(".")[0]
                target = (f"{base}.{node.module}" if node.module else base) if node.level else str(node.module)
                taken = [(target, alias.name) for alias in node.names]
                taken += [(f"{target}.{alias.name}", "*") for alias in node.names]
            elif isinstance(node, ast.Import):
                taken = [(alias.name, "*") for alias in node.names]
            for module, what in taken:
                kind_package = module.rpartition(".")[0]
                if module in SINK_KINDS | SOURCE_KINDS and not (name == kind_package or name.startswith(kind_package + ".")):
                    found.append((name, module, what))
    return found


def test_only_sinks_and_sources_import_their_kinds() -> None:
    """Only :mod:`fficube.sinks` tells the output kinds apart, and only :mod:`fficube.sources`
    the kinds of source: no other module imports a kind's module, but for the names that
    are not a source (:data:`SHARED_FROM_SOURCE_KINDS`)."""
    outside = [(module, kind, what) for module, kind, what in kind_imports()
               if kind in SINK_KINDS or what not in SHARED_FROM_SOURCE_KINDS]
    assert outside == []
    # The walk sees such imports where they are.
    assert ("fficube.sectors.shard", "fficube.sources.fsspec", "Filesystems") in kind_imports()


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


#: A Sphinx cross-reference in a docstring: role and target (``~`` and ``<title>`` forms too).
_REFERENCE = re.compile(r":(func|mod|class|meth|attr|data|exc|obj):`(?:[^`<]*<)?([^`>]+)>?`")
#: References known not to resolve, (module, target): each goes when its module is fixed
#: (the test fails while an entry here has become needless).
UNRESOLVED: set[tuple[str, str]] = set()


def _found(dotted: str) -> bool:
    """Whether ``dotted`` names a module (built, or a compiled one's stub) or an attribute
    (a dataclass field included) of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj: object = importlib.import_module(module)
        except ImportError:
            # A compiled extension that is not built here still documents itself in its stub.
            if i == len(parts) and module.startswith("fficube.") and (
                    PACKAGE.parent / (module.replace(".", "/") + ".pyi")).exists():
                return True
            continue
        for name in parts[i:]:
            if hasattr(obj, name):
                obj = getattr(obj, name)
            elif name in getattr(obj, "__annotations__", {}):  # a field without a default
                obj = None
            else:
                return False
        return True
    return False


def resolves(target: str, module: str, classes: Sequence[str] = ()) -> bool:
    """Whether a reference written in ``module`` (within ``classes``, innermost first)
    names something, looked up as Sphinx does: the class, the module, then ``fficube``."""
    name = target.removeprefix("~").removeprefix(".").removesuffix("()")
    scopes = [*(f"{module}.{c}" for c in classes), module, "fficube", ""]
    return any(_found(f"{scope}.{name}" if scope else name) for scope in scopes)


def _references(node: ast.AST, classes: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Each docstring reference under ``node``, with its classes (innermost first)."""
    if isinstance(node, ast.ClassDef):
        classes = [f"{classes[0]}.{node.name}" if classes else node.name, *classes]
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        for _, target in _REFERENCE.findall(ast.get_docstring(node) or ""):
            yield target, classes
    for child in ast.iter_child_nodes(node):
        yield from _references(child, classes)


def unresolved_references() -> set[tuple[str, str]]:
    """(module, target) of each docstring reference in the package that names nothing."""
    found: set[tuple[str, str]] = set()
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        found |= {(module, target) for target, classes in _references(ast.parse(path.read_text()), [])
                  if not resolves(target, module, classes)}
    return found


def test_the_reference_lookup_knows_what_is_there() -> None:
    assert resolves("~fficube.cubeinfo.scan_cube", "fficube.access")
    assert resolves("scan_cube", "fficube.access") and resolves(".cubeinfo.CubeInfo", "fficube.plan")
    assert resolves("aclose", "fficube.sources.fsspec", ["Filesystems"])
    assert resolves("path", "fficube.cubeinfo", ["CubeInfo"])  # a dataclass field
    assert not resolves("aclose", "fficube.sources.fsspec")
    assert not resolves("fficube.scan.scan_cube", "fficube.access")


def test_every_docstring_reference_resolves() -> None:
    assert unresolved_references() == UNRESOLVED
