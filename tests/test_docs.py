"""The documentation: its Python examples run, its API reference and exception tree are
complete and true, its figures are made by the code, and it narrates nothing."""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fficube

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
#: A block that needs the network (or S3) says so on a line of its own.
NO_RUN = "# doc: no-run"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_pages_have_examples() -> None:
    with_code = {page.name for page in PAGES if python_blocks(page)}
    assert {"README.md", "getting-started.md", "python.md", "notebooks.md", "quality.md", "updating.md",
            "figures.md"} <= with_code


def test_few_examples_are_not_run() -> None:
    skipped = [(page.name, block) for page in PAGES for block in python_blocks(page) if NO_RUN in block]
    assert [name for name, _ in skipped] == ["cloud.md"], skipped  # the public bucket


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch) -> None:
    """Each page's blocks run in order, in one namespace, in an empty folder (top-level
    ``await`` as in a notebook cell)."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("xarray")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__doc_example__"}
    for number, block in enumerate(python_blocks(page)):
        if NO_RUN in block:
            continue
        code = compile(block, f"{page.name} block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    # lightkurve's TPFs keep their file open, as lightkurve leaves them for its users: close
    # what the examples leave open, so that no file is left to the garbage collector.
    lightkurve = sys.modules.get("lightkurve")
    for value in namespace.values() if lightkurve is not None else ():
        if isinstance(value, lightkurve.targetpixelfile.TargetPixelFile):
            value.hdu.close()


def test_api_reference_documents_every_public_name() -> None:
    text = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. auto(?:function|class|exception):: fficube\.(\w+)$", text, re.M))
    assert ".. automodule:: fficube.sync" in text
    public = set(fficube._HOMES) - {"sync"}
    assert public <= documented, sorted(public - documented)
    for name in ("update_cube", "verify_cube", "describe_cube"):  # the twins listed there
        assert name in re.search(r"automodule:: fficube.sync\n\s+:members: (.*)", text).group(1)


def test_exception_tree_is_the_real_one() -> None:
    from fficube import errors

    tree = re.search(r"::\n\n(    FficubeError.*?)\n\n", errors.__doc__, re.S).group(1)
    tree = "\n".join(line.removeprefix("    ") for line in tree.splitlines())
    assert ".. automodule:: fficube.errors" in (DOCS / "python.md").read_text()  # the page shows this tree
    parents: list[tuple[int, str]] = []
    seen = set()
    for line in tree.splitlines():
        match = re.match(r"^([│ ├└─]*)(\w+)(?: \((\w+)\))?", line)
        depth = len(match.group(1)) // 4
        name, builtin = match.group(2), match.group(3)
        cls = getattr(fficube, name)
        parents = parents[:depth]
        if parents:
            assert parents[-1][1] in [b.__name__ for b in cls.__bases__], (name, parents[-1])
        if builtin:
            assert issubclass(cls, getattr(__builtins__, builtin) if not isinstance(__builtins__, dict)
                              else __builtins__[builtin]), (name, builtin)
        parents.append((depth, name))
        seen.add(name)
    errors = {n for n in fficube._HOMES if n.endswith(("Error", "Warning"))}
    assert errors == seen, errors ^ seen


def _load_make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_figure_and_report_are_made_from_a_real_build(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    make_figures = _load_make_figures()
    report, figure, stats_figure = make_figures.make(tmp_path)

    def steady(path: Path) -> dict:
        document = json.loads(path.read_text())
        document["gate"] = re.sub(r"fficube \S+ ", "fficube VERSION ", document["gate"])
        return document

    committed_report = DOCS / make_figures.REPORT
    assert steady(report) == steady(committed_report), "run: python docs/make_figures.py"
    assert {"no_wcs"} == {flag for entry in steady(committed_report)["ffis"] for flag in entry["flags"]}

    def seen(image: Path) -> tuple[tuple[int, int], str]:
        """An image's size and description, its file closed again."""
        with Image.open(image) as opened:
            return opened.size, opened.info.get("Description", "")

    committed, drawn = seen(DOCS / make_figures.FIGURE), seen(figure)
    digest = make_figures.report_digest(committed_report)
    assert f"quality report sha256 {digest}" in committed[1], "run: python docs/make_figures.py"
    assert committed[0] == drawn[0]
    committed_stats, drawn_stats = seen(DOCS / make_figures.STATS_FIGURE), seen(stats_figure)
    assert committed_stats == drawn_stats, "run: python docs/make_figures.py"  # the same MEDIAN, the same size


def test_no_narration_or_machine_paths() -> None:
    files = subprocess.run(["git", "ls-files", "README.md", "CHANGELOG.md", "docs", "src", "benchmarks", "examples"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    machine_paths = "|".join(f"/{top}/" for top in ("work", "farm"))  # spelled apart: this file names no path
    pattern = re.compile(rf"\bsessions? \d+|{machine_paths}|work periods?\b|final code of", re.I)
    found = [f"{name}:{n}: {line.strip()}" for name in files if not name.endswith((".png", ".fits"))
             for n, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
             if pattern.search(line)]
    assert not found, "\n".join(found[:10])
