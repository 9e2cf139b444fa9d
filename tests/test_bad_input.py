"""Every kind of bad input, through the CLI: one clear line naming the file and the
problem, exit status 1, and nothing written (nor anything of the user's overwritten)."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cube_compare import assert_verifies
from helpers import run_cli

SHAPE = (20, 30)


def _card(path: str, key: str, card: str, hdu_start: int = 2880) -> None:
    data = bytearray(Path(path).read_bytes())
    at = data.index(f"{key:<8}=".encode(), hdu_start)
    data[at : at + 80] = card.ljust(80).encode()
    Path(path).write_bytes(bytes(data))


def _no_match(tmp: Path, paths: list[str]):
    return [str(tmp / "ffis" / "nothing-*.fits")], "the pattern matches no file", "nothing-*.fits"


def _not_fits(tmp: Path, paths: list[str]):
    Path(paths[1]).write_bytes(b"<html>not found</html>" * 200)
    return paths, "not a FITS file", paths[1]


def _truncated(tmp: Path, paths: list[str]):
    Path(paths[2]).write_bytes(Path(paths[2]).read_bytes()[:-1000])  # headers whole, data short
    return paths, "truncated", paths[2]


def _tpf(tmp: Path, paths: list[str]):
    tpf = tmp / "ffis" / "tess-tpf_ffic.fits"
    columns = [fits.Column(name="TIME", format="D", array=np.zeros(3))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns)]).writeto(tpf)
    return [*paths, str(tpf)], "not an image", str(tpf)


def _cube(tmp: Path, paths: list[str]):
    cube = tmp / "ffis" / "old-cube_ffic.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((2, 3, 4, 2), np.float32)), fits.ImageHDU()]).writeto(cube)
    return [*paths, str(cube)], r"NAXIS = 4 \(a cube\)", str(cube)


def _mixed_cameras(tmp: Path, paths: list[str]):
    from fficube.synthetic import SectorSpec, make_sector

    other = make_sector(tmp / "cam2", SectorSpec(n_ffis=1, shape=SHAPE, camera=2, first_start=1500.0))
    return [*paths, *other], "cameras differ", Path(other[0]).name


def _mixed_shapes(tmp: Path, paths: list[str]):
    from fficube.synthetic import SectorSpec, make_sector

    other = make_sector(tmp / "wide", SectorSpec(n_ffis=1, shape=(20, 31), first_start=1500.0))
    return [*paths, *other], "image shapes differ", Path(other[0]).name


def _mixed_products(tmp: Path, paths: list[str]):
    from fficube.synthetic import SectorSpec, make_sector

    other = make_sector(tmp / "tica", SectorSpec(n_ffis=1, shape=SHAPE, product="tica", first_start=1500.0))
    return [*paths, *other], "products differ", Path(other[0]).name


def _same_start(tmp: Path, paths: list[str]):
    copy = tmp / "ffis" / "copy-s0001-1-1-0120-s_ffic.fits"
    shutil.copy(paths[0], copy)
    return [*paths, str(copy)], "same TSTART", str(copy)


def _no_start(tmp: Path, paths: list[str]):
    _card(paths[1], "TSTART", "TSTARX  = 1.0")
    return paths, "no TSTART in HDU 1", paths[1]


def _nan_start(tmp: Path, paths: list[str]):
    _card(paths[1], "TSTART", "TSTART  = 'nan'")
    return paths, "not a finite", paths[1]


def _bad_bitpix(tmp: Path, paths: list[str]):
    _card(paths[3], "BITPIX", "BITPIX  =                   12")
    return paths, "BITPIX", paths[3]


def _compressed(tmp: Path, paths: list[str]):
    packed = tmp / "ffis" / "packed_ffic.fits"
    image = np.ones(SHAPE, np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(image), fits.CompImageHDU(image)]).writeto(packed)
    return [*paths, str(packed)], "tile-compressed", str(packed)


CASES: dict[str, Callable] = {
    "pattern matching nothing": _no_match,
    "not FITS": _not_fits,
    "truncated FFI": _truncated,
    "a TPF": _tpf,
    "a cube": _cube,
    "mixed cameras": _mixed_cameras,
    "mixed shapes": _mixed_shapes,
    "mixed products": _mixed_products,
    "two files, one start time": _same_start,
    "no start time": _no_start,
    "non-finite start time": _nan_start,
    "unsupported BITPIX": _bad_bitpix,
    "compressed image HDUs": _compressed,
}


@pytest.fixture
def ffis(tmp_path: Path) -> list[str]:
    from fficube.synthetic import SectorSpec, make_sector

    return make_sector(tmp_path / "ffis", SectorSpec(n_ffis=4, shape=SHAPE, no_wcs=()))


def outputs(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cube"))


def assert_refused(err: str, message: str, culprit: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fficube: error: "), err
    assert culprit in lines[0], (culprit, err)
    assert __import__("re").search(message, lines[0]), (message, err)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_and_nothing_is_written(ffis, tmp_path: Path, case: str) -> None:
    inputs, message, culprit = CASES[case](tmp_path, ffis)
    code, out, err = run_cli("build", *inputs, "-o", str(tmp_path / "cube.fits"), "-q")
    assert code == 1 and out == ""
    assert_refused(err, message, culprit)
    assert outputs(tmp_path) == []


def test_bad_outputs_are_refused_and_nothing_of_the_users_is_touched(ffis, tmp_path: Path) -> None:
    code, _, err = run_cli("build", *ffis, "-o", ffis[0])
    assert code == 1
    assert_refused(err, "the output is one of the inputs", ffis[0])

    existing = tmp_path / "cube.fits"
    existing.write_bytes(b"the user's own file")
    code, _, err = run_cli("build", *ffis, "-o", str(existing))
    assert code == 1
    assert_refused(err, "already exists; use .*--overwrite", str(existing))
    assert existing.read_bytes() == b"the user's own file" and outputs(tmp_path) == ["cube.fits"]

    not_a_directory = tmp_path / "notes.txt"
    not_a_directory.write_text("mine")
    code, _, err = run_cli("build", *ffis, "-o", str(not_a_directory / "cube.fits"), "-q")
    assert code == 1
    assert_refused(err, "cannot write here", str(not_a_directory / "cube.fits"))
    assert not_a_directory.read_text() == "mine"


def test_a_full_disk_at_the_first_write_leaves_nothing(ffis, tmp_path: Path) -> None:
    out = tmp_path / "cube.fits"
    # /dev/full fails every write with ENOSPC, as a full disk does.
    Path(f"{out}.partial").symlink_to("/dev/full")
    code, _, err = run_cli("build", *ffis, "-o", str(out), "-q")
    assert code == 1
    assert_refused(err, "no space left on device", f"{out}.partial")
    assert outputs(tmp_path) == []


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # Writes past the limit fail with EFBIG (Python ignores SIGXFSZ), mid-build.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_running_out_of_space_mid_build_keeps_the_work_for_resume(tmp_path: Path) -> None:
    from fficube.synthetic import SectorSpec, make_sector

    paths = make_sector(tmp_path / "ffis", SectorSpec(n_ffis=8, shape=(200, 300), no_wcs=()))
    out = tmp_path / "cube.fits"
    command = [sys.executable, "-m", "fficube.cli", "build", *paths, "-o", str(out), "--max-memory", "3MB", "-q"]
    full = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_file_size(2_000_000))
    assert full.returncode == 1
    line = [ln for ln in full.stderr.splitlines() if ln.startswith("fficube: error:")]
    assert line and "file too large" in line[0] and f"{out}.partial" in line[0], full.stderr
    assert "--resume" in full.stderr  # the work done is kept, and the user is told how to continue
    assert not out.exists() and Path(f"{out}.journal").exists()
    assert Path(f"{out}.partial").stat().st_size <= 2_000_000
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_verifies(out)
