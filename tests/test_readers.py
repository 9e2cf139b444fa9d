"""What real readers rely on holds for every cube fficube writes, fresh or after any number of updates.

tesscube reads MAST's cubes by byte range assuming the cube data at byte 5760 (one
primary header block, one cube header block), 4-byte pixels, and the table right
after the padded data; cutout tools copy table values into TPF header cards.  Also:
one sector per cube, and one version of each input per cube.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cube_compare import BUILD_TIME_CARDS
from helpers import run_cli

import fficube
from fficube.cubeinfo import MAX_UPDATES_SHOWN, Provenance

DATA_OFFSET = 2 * 2880  # tesscube's constant


def tesscube_pixel(path: Path, row: int, col: int, ffi: int, layer: int) -> float:
    """A pixel as tesscube reads it: at 5760 + 4 * (its index in the C-ordered 4-D array)."""
    header = fits.getheader(path, 1)
    cols, n, layers = header["NAXIS3"], header["NAXIS2"], header["NAXIS1"]
    with open(path, "rb") as f:
        f.seek(DATA_OFFSET + 4 * (((row * cols + col) * n + ffi) * layers + layer))
        return float(np.frombuffer(f.read(4), dtype=">f4")[0])


def assert_reader_invariants(path: Path, fresh: Path) -> None:
    """The byte layout readers assume, and the same layout as a fresh build of the same FFIs."""
    with fits.open(path) as hdus, fits.open(fresh) as ref:
        data, table = hdus.fileinfo(1), hdus.fileinfo(2)
        assert data["datLoc"] == ref.fileinfo(1)["datLoc"]  # headers the size a fresh build makes
        assert hdus[1].header["BITPIX"] == -32 and "BSCALE" not in hdus[1].header
        assert table["hdrLoc"] == data["datLoc"] + -(-data["datSpan"] // 2880) * 2880  # right after the data
        names = list(hdus[2].data["FFI_FILE"])
        assert names == list(ref[2].data["FFI_FILE"]) and all(n.endswith(".fits") for n in names)  # never cut
        assert [c.image for c in hdus[0].header.cards if c.keyword not in BUILD_TIME_CARDS] == \
            [c.image for c in ref[0].header.cards if c.keyword not in BUILD_TIME_CARDS]
        cube = hdus[1].data
        if hdus[1].header["NAXIS1"] == 2:  # SPOC: tesscube's rule applies
            assert data["datLoc"] == DATA_OFFSET
            rows, cols, n, _ = cube.shape
            for r, c, f, layer in ((0, 0, 0, 0), (rows - 1, cols - 1, n - 1, 1), (rows // 2, 3, n // 2, 0)):
                assert tesscube_pixel(path, r, c, f, layer) == cube[r, c, f, layer]


@pytest.mark.parametrize("product", ["spoc", "tica"])
def test_five_updates_keep_every_invariant(sector, tmp_path: Path, product: str) -> None:
    spec = {"product": product, "sector": 27 if product == "tica" else 1}
    paths = sorted(sector(n_ffis=8, shape=(14, 18), no_wcs=(), shuffle=False, **spec))
    cube = tmp_path / "cube.fits"
    fficube.make_cube(paths[:3], cube, sector=spec["sector"])
    for i in range(3, 8):  # five updates, one FFI each
        fficube.sync.update_cube(cube, [paths[i]], max_memory="1MB")
        fresh = tmp_path / f"fresh{i}.fits"
        fficube.make_cube(paths[: i + 1], fresh, sector=spec["sector"])
        assert_reader_invariants(cube, fresh)
    provenance = Provenance.of(fits.getheader(cube, 1))
    assert provenance is not None and provenance.n_updates == 5 and len(provenance.updates) == 5
    assert provenance.template == os.path.basename(paths[0])
    with fits.open(cube, checksum=True) as hdus:  # still sealed
        assert hdus[1].header["FCNUPD"] == 5


def test_many_updates_keep_the_cube_header_one_block(sector, tmp_path: Path) -> None:
    paths = sorted(sector(n_ffis=MAX_UPDATES_SHOWN + 4, shape=(6, 8), no_wcs=(), shuffle=False))
    cube = tmp_path / "cube.fits"
    fficube.make_cube(paths[:2], cube)
    for path in paths[2:]:
        fficube.sync.update_cube(cube, [path])
    with fits.open(cube) as hdus:
        assert hdus.fileinfo(1)["datLoc"] == DATA_OFFSET
        assert hdus[1].header["FCNUPD"] == len(paths) - 2
        shown = [k for k in hdus[1].header if k.startswith("FCUPD")]
        assert len(shown) == MAX_UPDATES_SHOWN and os.path.basename(paths[-1]) in hdus[1].header[shown[-1]]
    code, out, _ = run_cli("inspect", str(cube))
    assert code == 0 and re.search(rf"updates +{len(paths) - 2} \(last {MAX_UPDATES_SHOWN} shown\)", out)


def test_ffis_of_two_sectors_are_refused(sector, tmp_path: Path) -> None:
    eleven = sector(n_ffis=3, shape=(10, 12), sector=11, no_wcs=())
    twelve = sector(n_ffis=1, shape=(10, 12), sector=12, no_wcs=(), first_start=2000.0)
    with pytest.raises(fficube.MixedInputError, match=r"sectors differ \(11: 3 file\(s\).*12: 1 file\(s\)") as info:
        fficube.make_cube(eleven + twelve, tmp_path / "c.fits")
    assert os.path.basename(twelve[0]) in str(info.value)
    with pytest.raises(fficube.MixedInputError, match="sector=12 was given, but the FFIs are of sector 11"):
        fficube.make_cube(eleven, tmp_path / "c.fits", sector=12)
    code, _, err = run_cli("build", *eleven, "-o", str(tmp_path / "c.fits"), "--sector", "12", "-q")
    assert code == 1 and "--sector 12 was given" in err and err.count("\n") == 1
    assert list(tmp_path.glob("c.fits*")) == []
    cube = tmp_path / "eleven.fits"
    fficube.make_cube(eleven, cube, sector=11)
    with pytest.raises(fficube.MixedInputError, match="sector"):
        fficube.sync.update_cube(cube, twelve)


def test_an_s3_input_replaced_during_a_build_stops_it(s3, sector, tmp_path: Path) -> None:
    paths = sorted(sector(n_ffis=6, shape=(40, 30), no_wcs=()))
    urls = s3.upload(paths, "in")
    other = sector(n_ffis=1, shape=(40, 30), no_wcs=(), seed=9, first_start=1400.0)[0]
    victim = urls[3].split(f"s3://{s3.bucket}/", 1)[1]

    def replace_after_first_block(progress: fficube.Progress) -> None:
        if progress.stage == "write" and progress.done == 1:
            s3.client.upload_file(other, s3.bucket, victim)  # another FFI, same name

    out = tmp_path / "c.fits"
    with pytest.raises(fficube.ReadError, match="changed since it was listed") as info:
        fficube.make_cube(urls, out, max_memory="160kB", storage_options=s3.options,
                          progress=replace_after_first_block)
    assert info.value.path == urls[3]
    assert not out.exists() and Path(f"{out}.journal").exists()  # the work recorded is kept
    with pytest.raises(fficube.ResumeError, match=r"1 input\(s\) changed"):
        fficube.make_cube(urls, out, storage_options=s3.options, resume=True)
