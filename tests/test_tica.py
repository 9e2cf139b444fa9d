"""TICA cubes against golden cubes made by astrocut 1.2.x (see golden/make_tica_golden.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cube_compare import assert_cube_matches
from helpers import budget_for_rows, run_cli, without_build_stamps
from tica_cases import CASES, SECTORS, case_inputs

import fficube

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.mark.parametrize("block_rows", [None, 3, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_tica_cube_matches_astrocut_golden(tmp_path: Path, case: str, block_rows: int | None) -> None:
    paths = case_inputs(case, tmp_path / "ffis")
    budget = budget_for_rows(paths, block_rows) if block_rows else "1GB"
    result = fficube.make_cube(paths, tmp_path / "c.fits", sector=SECTORS[case], max_memory=budget)
    rows = CASES[case].shape[0]
    assert result.product == "tica" and result.shape == (*CASES[case].shape, CASES[case].n_ffis, 1)
    if block_rows:
        assert result.block_rows == block_rows and result.blocks == -(-rows // block_rows)
    assert_cube_matches(tmp_path / "c.fits", GOLDEN / "tica" / f"{case}.fits")


def test_tica_primary_header_is_the_earliest_ffis(tmp_path: Path) -> None:
    paths = case_inputs("shuffled", tmp_path / "ffis")
    fficube.make_cube(paths, tmp_path / "c.fits")
    header = fits.getheader(tmp_path / "c.fits")
    earliest = fits.getheader(min(paths))
    latest = fits.getheader(max(paths))
    assert header["NAXIS"] == 0 and header["BITPIX"] == 8  # the image axes are gone
    assert header["STARTTJD"] == earliest["STARTTJD"] and header["ENDTJD"] == latest["ENDTJD"]
    assert (header["CAMNUM"], header["CCDNUM"]) == (earliest["CAMNUM"], earliest["CCDNUM"])
    assert header["ORIGIN"] == "STScI/MAST" and header["EXTNAME"] == "PRIMARY"


def test_comment_and_history_are_joined_never_cut(tmp_path: Path) -> None:
    paths = sorted(case_inputs("ordered", tmp_path / "ffis"))
    with fits.open(paths[2], mode="update") as hdus:  # a non-template FFI gets more comments
        hdus[0].header.add_comment("a second comment, longer than the template's first one by far")
        hdus[0].header.add_history("reprocessed")
    fficube.make_cube(paths, tmp_path / "c.fits")
    with fits.open(tmp_path / "c.fits") as cube:
        table = cube[2].data
        comments = fits.getheader(paths[2])["COMMENT"]
        # Joined by spaces: a cutout copies the value into a TPF header card (printable ASCII only).
        assert table["COMMENT"][2] == " ".join(comments) and len(comments) == 2
        fits.Card("COMMENT", table["COMMENT"][2])  # a valid card value
        assert all(" " <= ch <= "~" for ch in table["COMMENT"][2])
        assert table["COMMENT"][0] == fits.getheader(paths[0])["COMMENT"][0]
        assert "HISTORY" not in table.columns.names  # not in the template: no column


def test_auto_detection_and_drop_in_give_the_same_cube(tmp_path: Path) -> None:
    paths = case_inputs("ordered", tmp_path / "ffis")
    fficube.make_cube(paths, tmp_path / "auto.fits", sector=27)
    fficube.make_cube(paths, tmp_path / "tica.fits", sector=27, product="tica")
    returned = fficube.TicaCubeFactory().make_cube(paths, str(tmp_path / "factory.fits"), sector=27, verbose=False)
    cubes = [without_build_stamps(Path(p).read_bytes()) for p in (tmp_path / "auto.fits", tmp_path / "tica.fits", returned)]
    assert cubes[0] == cubes[1] == cubes[2]


def test_mixed_spoc_and_tica_refused_before_writing(sector, tmp_path: Path) -> None:
    tica = case_inputs("ordered", tmp_path / "ffis")
    spoc = sector(n_ffis=2, shape=(20, 26), camera=2, ccd=3)
    with pytest.raises(fficube.MixedInputError) as info:
        fficube.make_cube(tica + spoc, tmp_path / "c.fits")
    message = str(info.value)
    assert "products differ" in message and "TICA: 5 file(s)" in message and "SPOC: 2 file(s)" in message
    assert Path(spoc[0]).name in message or Path(spoc[1]).name in message
    assert list(tmp_path.glob("c.fits*")) == []


def test_template_is_the_earliest_ffi_with_a_wcs_whatever_the_input_order(tmp_path: Path) -> None:
    paths = case_inputs("shuffled", tmp_path / "ffis")
    earliest, second = sorted(paths)[:2]  # the earliest has no WCS; the second has one
    no_wcs_first = [earliest, *(p for p in paths if p != earliest)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", fficube.TemplateWarning)
        fficube.make_cube(no_wcs_first, tmp_path / "c.fits")  # astrocut 1.2 would take the first: no WCS
        fficube.make_cube(os.path.dirname(earliest), tmp_path / "d.fits")  # a folder: no say over the order
    for cube in ("c.fits", "d.fits"):
        with fits.open(tmp_path / cube) as hdus:
            assert "CTYPE2" in hdus[2].columns.names  # the table has the WCS cutout tools look for
            assert hdus[1].header["FCTEMPL"] == os.path.basename(second)
        code, out, _ = run_cli("inspect", str(tmp_path / cube))
        assert code == 0 and f"{os.path.basename(second)} (recorded by the build)" in out


def test_template_without_any_wcs_is_warned_about(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=3, product="tica", sector=27, shape=(12, 14), no_wcs=(0, 1, 2))
    with pytest.warns(fficube.TemplateWarning, match="no celestial WCS"):
        fficube.make_cube(paths, tmp_path / "c.fits")


def test_tica_demo(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fficube.cli", "demo", str(tmp_path), "--product", "tica", "--n-ffis", "6"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "TICA cube 96x120x6x1" in done.stdout and "product     TICA" in done.stdout
    cube = tmp_path / "tess-s0027-1-1-cube.fits"
    assert np.isfinite(fits.getdata(cube, 1)).all()


@pytest.mark.slow
def test_astrocut12_cuts_the_same_tpf_from_our_cube(tmp_path: Path) -> None:
    """Runs astrocut 1.2.x's cutout code, in its own environment, on our cube and its own."""
    done = subprocess.run(
        [sys.executable, str(GOLDEN / "make_tica_golden.py")], capture_output=True, text=True, timeout=1200
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("equals astrocut 1.2's") == len(CASES)
