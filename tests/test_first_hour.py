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
