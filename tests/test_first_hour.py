"""What a newcomer meets in the first hour: the demo at any size, errors and warnings
from a plain script, typos in options, a folder of two products, outputs that cannot
be written, and the same words from every command."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli

from fficube.cli import _parser


def run_script(source: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = cwd / "user_script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_an_error_in_a_script_shows_only_itself(tmp_path: Path) -> None:
    done = run_script("""
        import fficube
        fficube.make_cube(["missing_ffic.fits"], "cube.fits")
    """, tmp_path)
    assert done.returncode == 1
    assert "fficube.errors.InputError: missing_ffic.fits: no such file or directory" in done.stderr
    assert "no running event loop" not in done.stderr and "During handling" not in done.stderr, done.stderr


def test_a_warning_in_a_script_points_at_the_users_line(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=3, shape=(16, 20), no_wcs=())
    done = run_script(f"""
        import fficube
        paths = {paths!r}
        fficube.make_cube(paths + paths[:1], "cube.fits")  # line 4
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{tmp_path / 'user_script.py'}:4: DuplicateInputWarning" in done.stderr, done.stderr
    assert "asyncio" not in done.stderr


def test_warnings_made_errors_still_stop_a_sync_call(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=3, shape=(16, 20), no_wcs=())
    done = run_script(f"""
        import warnings, fficube
        warnings.simplefilter("error", fficube.DuplicateInputWarning)
        paths = {paths!r}
        try:
            fficube.make_cube(paths + paths[:1], "cube.fits")
        except fficube.DuplicateInputWarning as w:
            print("stopped:", w)
    """, tmp_path)
    assert done.returncode == 0 and "stopped:" in done.stdout and "given more than once" in done.stdout, done.stderr
    assert not (tmp_path / "cube.fits").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_output_that_cannot_be_written_is_one_line_naming_it(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=2, shape=(16, 20), no_wcs=())
    code, _out, err = run_cli("build", *paths, "-o", "/proc/x.fits")
    assert code == 1
    assert err.splitlines() == ["fficube: error: /proc/x.fits: cannot write here: no such file or directory"], err


@pytest.mark.parametrize("command", [["inspect"], ["verify"], ["plot", "-o", "x.png"], ["refs", "-o", "x.json"]])
def test_every_command_names_a_missing_cube_as_given(command: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(command[0], "nothere.fits", *command[1:])
    assert code == 1
    assert "nothere.fits: no such file or directory" in out + err
    assert str(tmp_path) not in out + err
    code, out, err = run_cli("build", "nothere.fits", "-o", "c.fits")
    assert err == "fficube: error: nothere.fits: no such file or directory\n"
