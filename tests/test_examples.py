"""The example scripts run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from astropy.io import fits

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_build_local_folder(tmp_path: Path) -> None:
    out = tmp_path / "cube.fits"
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "build_local_folder.py"), "", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "TMPDIR": str(temp)},
    )
    # An empty FFI_DIR argument is "no folder": the example makes a synthetic one.
    assert done.returncode == 0, done.stderr
    assert "SPOC cube 64x80x10x2" in done.stdout
    assert fits.getheader(out, 1)["NAXIS2"] == 10
    assert list(temp.iterdir()) == []  # the synthetic sector is removed


def test_concurrent_cubes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "concurrent_cubes.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for name in ("1-1", "1-2", "2-1"):
        cube = tmp_path / f"tess-s0001-{name}-cube.fits"
        header = fits.getheader(cube)
        assert (header["CAMERA"], header["CCD"]) == tuple(map(int, name.split("-")))
