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


def _run_in_clean_tmp(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example with its own TMPDIR, and check that it leaves nothing there."""
    import os

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    assert list(scratch.iterdir()) == []  # the synthetic sector's directory is gone
    return done


def test_plot_cube(tmp_path: Path) -> None:
    done = _run_in_clean_tmp(tmp_path, str(EXAMPLES / "plot_cube.py"), "-o", "figure.png")
    assert done.stdout.startswith(f"wrote {tmp_path / 'figure.png'}: frame 6 of 12")
    assert (tmp_path / "figure.png").stat().st_size > 10_000


def test_xarray_lightcurve(tmp_path: Path) -> None:
    done = _run_in_clean_tmp(tmp_path, str(EXAMPLES / "xarray_lightcurve.py"), "--row", "5", "--column", "74")
    lines = done.stdout.splitlines()
    assert lines[0] == "cutout {'row': 10, 'column': 10, 'time': 8}, 10 chunk(s) to read"
    assert len(lines) == 2 + 8 and lines[2].split()[0] == "1325.32350"
