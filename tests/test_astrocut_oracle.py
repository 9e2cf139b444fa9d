"""fficube's cubes against astrocut's, built from the same synthetic FFIs."""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from cube_compare import assert_equal_but_checksums
from helpers import astrocut_cube, budget_for_rows, rewrite_ffi

import fficube
from fficube.cubeinfo import PROVENANCE_KEYWORDS

ROWS, COLS = 31, 40  # 31 rows: no block size but 1 and 31 divides it


def template_not_first(paths: list[str]) -> list[str]:
    """Put the earliest FFI (written without WCS) first, so the template is not the first input."""
    first = min(paths)  # names sort by time
    return [first, *(p for p in paths if p != first)]


@pytest.mark.parametrize("block_rows", [ROWS, 7, 1])
def test_cube_bytes_equal_astrocut(sector, tmp_path: Path, block_rows: int) -> None:
    paths = template_not_first(sector(n_ffis=9, shape=(ROWS, COLS), no_wcs=(0, 4)))
    budget = budget_for_rows(paths, block_rows)
    result = fficube.make_cube(paths, tmp_path / "ours.fits", sector=1, max_memory=budget)
    assert result.block_rows == block_rows
    assert result.blocks == math.ceil(ROWS / block_rows)

    astrocut_cube(paths, tmp_path / "theirs.fits")
    assert_equal_but_checksums(tmp_path / "ours.fits", tmp_path / "theirs.fits")
    with fits.open(tmp_path / "ours.fits") as cube:
        assert cube[0].header["DATE"] == dt.date.today().isoformat()
        # The template (first input with WCS) decided the table's columns.
        assert "WCSAXES" in cube[2].columns.names
        assert cube[1].data.shape == (ROWS, COLS, 9, 2)


def test_headers_and_table_equal_astrocut(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=6, shape=(ROWS, COLS), no_wcs=(2,), seed=3)
    fficube.make_cube(paths, tmp_path / "ours.fits", max_memory="1GB")  # no sector: undefined
    astrocut_cube(paths, tmp_path / "theirs.fits", sector=None)
    with fits.open(tmp_path / "ours.fits") as ours, fits.open(tmp_path / "theirs.fits") as theirs:
        for hdu in (0, 1):
            a, b = ours[hdu].header, theirs[hdu].header
            # fficube's checksums differ, and its provenance cards (HDU 1) are its own.
            keys = [k for k in b if k not in ("CHECKSUM", "DATASUM")]
            assert [k for k in a if k not in ("CHECKSUM", "DATASUM", *PROVENANCE_KEYWORDS)] == keys
            for key in keys:
                if key != "DATE":
                    assert (a[key] == b[key]) or (a[key] != a[key] and b[key] != b[key]), key
                    assert a.comments[key] == b.comments[key], key
        assert ours[0].header["SECTOR"] == theirs[0].header["SECTOR"]
        np.testing.assert_array_equal(ours[1].data, theirs[1].data)
        ta, tb = ours[2].data, theirs[2].data
        assert ta.columns.names == tb.columns.names
        for name in ta.columns.names:
            np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)
        # Time order, and the last-file keywords from the latest FFI.
        assert np.all(np.diff(ta["TSTART"]) > 0)
        assert ours[0].header["TSTOP"] == ta["TSTOP"][-1]


def test_long_strings_are_not_cut(sector, tmp_path: Path) -> None:
    paths = sorted(sector(n_ffis=5, shape=(ROWS, COLS), no_wcs=(), shuffle=False))
    # A later FFI with a longer string value and a longer file name than the template.
    longer = str(Path(paths[3]).with_name("x" * 10 + Path(paths[3]).name))
    paths[3] = rewrite_ffi(paths[3], longer, image_cards={"IMAGTYPE": "calibrated-v2"})
    fficube.make_cube(paths, tmp_path / "ours.fits", max_memory="1GB")
    astrocut_cube(paths, tmp_path / "theirs.fits")
    with fits.open(tmp_path / "ours.fits") as ours, fits.open(tmp_path / "theirs.fits") as theirs:
        np.testing.assert_array_equal(ours[1].data, theirs[1].data)
        ta, tb = ours[2].data, theirs[2].data
        assert ta["IMAGTYPE"][3] == "calibrated-v2"
        assert ta["FFI_FILE"][3] == os.path.basename(longer)
        for name in ("IMAGTYPE", "FFI_FILE"):
            assert ta.columns[name].format.repeat > tb.columns[name].format.repeat
        for name in ta.columns.names:
            if ta.columns[name].format.recformat.startswith("S") or ta[name].dtype.kind in "SU":
                # astrocut sizes strings from the template and cuts longer values.
                width = tb.columns[name].format.repeat
                assert [v[:width] for v in ta[name]] == list(tb[name]), name
            else:
                np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)


@pytest.mark.parametrize(
    "scale", [{"type": "float64"}, {"type": "int32"}], ids=["float64", "int32"]
)
def test_unscaled_non_float32_inputs_equal_astrocut(sector, tmp_path: Path, scale: dict) -> None:
    paths = sector(n_ffis=4, shape=(ROWS, COLS), no_wcs=())
    paths = [rewrite_ffi(p, p.replace(".fits", "-x.fits"), scale=scale) for p in paths]
    with fits.open(paths[0]) as hdus:
        assert hdus[1].header["BITPIX"] != -32 and "BSCALE" not in hdus[1].header
    fficube.make_cube(paths, tmp_path / "ours.fits", sector=1, max_memory=budget_for_rows(paths, 5))
    astrocut_cube(paths, tmp_path / "theirs.fits")
    assert_equal_but_checksums(tmp_path / "ours.fits", tmp_path / "theirs.fits")


@pytest.mark.parametrize(
    "scale",
    [
        {"type": "int16", "bscale": 0.05, "bzero": 150.0},
        {"type": "uint16"},
        {"type": "int32", "bscale": 1e-3, "bzero": 7.0},
        {"type": "uint8", "bscale": 300.0, "bzero": 0.0},
    ],
    ids=["int16-scaled", "uint16", "int32-scaled", "uint8-scaled"],
)
def test_scaled_inputs_decode_like_astropy(sector, tmp_path: Path, scale: dict) -> None:
    # astrocut cannot read these at all (astropy refuses to memory-map scaled data),
    # so the reference is astropy's own decoding of each FFI.
    paths = sector(n_ffis=4, shape=(ROWS, COLS), no_wcs=())
    paths = [rewrite_ffi(p, p.replace(".fits", "-x.fits"), scale=scale) for p in paths]
    with fits.open(paths[0]) as hdus:
        assert "BZERO" in hdus[1].header or "BSCALE" in hdus[1].header
    fficube.make_cube(paths, tmp_path / "ours.fits", max_memory=budget_for_rows(paths, 5))
    with fits.open(tmp_path / "ours.fits") as cube:
        data = cube[1].data
        for index, path in enumerate(sorted(paths)):  # names sort by time
            for layer in (0, 1):
                expected = fits.getdata(path, layer + 1, memmap=False).astype(np.float32)
                np.testing.assert_array_equal(data[:, :, index, layer], expected)


def test_astrocut_cutout_of_our_cube_equals_cutout_of_its_own(sector, tmp_path: Path) -> None:
    from astrocut import cube_cut

    paths = sector(n_ffis=8, shape=(48, 56), no_wcs=(1,))
    fficube.make_cube(paths, tmp_path / "ours.fits", sector=1, max_memory=budget_for_rows(paths, 5))
    astrocut_cube(paths, tmp_path / "theirs.fits")
    with fits.open(paths[2]) as ffi:
        wcs = WCS(ffi[1].header)
    target = wcs.pixel_to_world(28, 24)
    tpfs = [
        cube_cut(str(tmp_path / name), target, 5, output_path=str(tmp_path / name.split(".")[0]), verbose=False)
        for name in ("ours.fits", "theirs.fits")
    ]
    with fits.open(tpfs[0]) as a, fits.open(tpfs[1]) as b:
        assert a[1].data.shape == b[1].data.shape and len(a[1].data) == 8
        for column in ("TIME", "FLUX", "FLUX_ERR", "QUALITY", "RAW_CNTS"):
            np.testing.assert_array_equal(a[1].data[column], b[1].data[column], err_msg=column)
        assert np.isfinite(a[1].data["FLUX"]).all()
        np.testing.assert_array_equal(a[2].data, b[2].data)  # aperture
        assert a[2].header["CRVAL1"] == b[2].header["CRVAL1"]
