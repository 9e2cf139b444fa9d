"""Updating a cube with new FFIs: the result equals a fresh build of old + new."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from cube_compare import BUILD_TIME_CARDS
from helpers import budget_for_rows, cancel_after_blocks, run_cli, without_build_stamps

import fficube
import fficube.sync
from fficube.cubeinfo import Provenance

SHAPE = (31, 40)


def table_bytes(path) -> bytes:
    """The info table HDU's bytes, with its checksums' time stamps blanked."""
    with fits.open(path) as hdus:
        start = hdus.fileinfo(2)["hdrLoc"]
    return without_build_stamps(Path(path).read_bytes()[start:])


def data_bytes(path) -> bytes:
    with fits.open(path) as hdus:
        info = hdus.fileinfo(1)
    return Path(path).read_bytes()[info["datLoc"] : info["datLoc"] + info["datSpan"]]


@pytest.fixture
def ten(sector) -> list[str]:
    return sorted(sector(n_ffis=10, shape=SHAPE, no_wcs=(0, 4), shuffle=False))  # names sort by time


@pytest.mark.parametrize(
    "old, new",
    [
        ((0, 1, 2, 3, 4, 5), (6, 7, 8, 9)),  # new FFIs after the old ones (the usual delivery)
        ((0, 2, 3, 5, 6, 8), (1, 4, 7, 9)),  # interleaved
        ((5, 6, 7, 8, 9), (0, 1, 2, 3, 4)),  # all new FFIs earlier (TICA first, SPOC later...)
    ],
    ids=["after", "interleaved", "before"],
)
def test_update_equals_a_fresh_build(ten, tmp_path: Path, old, new) -> None:
    a = [ten[i] for i in old]
    b = [ten[i] for i in new]
    fficube.make_cube(a, tmp_path / "cube.fits", sector=1)
    fficube.make_cube(a + b, tmp_path / "fresh.fits", sector=1)
    before = (tmp_path / "cube.fits").read_bytes()
    result = fficube.sync.update_cube(tmp_path / "cube.fits", b, max_memory=budget_for_rows(ten, 7))
    assert result.n_ffis == 10 and result.blocks >= 3  # streamed in several blocks
    updated, fresh = tmp_path / "cube.fits", tmp_path / "fresh.fits"
    assert updated.read_bytes() != before
    assert data_bytes(updated) == data_bytes(fresh)
    assert table_bytes(updated) == table_bytes(fresh)
    header, fresh_header = fits.getheader(updated), fits.getheader(fresh)
    # The primary header is the fresh build's (the date aside): no card is added.
    assert [c.image for c in header.cards if c.keyword not in BUILD_TIME_CARDS] == \
        [c.image for c in fresh_header.cards if c.keyword not in BUILD_TIME_CARDS]
    provenance = Provenance.of(fits.getheader(updated, 1))
    assert provenance is not None and provenance.n_updates == 1
    assert provenance.updates[0].endswith(f"+{len(b)} {os.path.basename(b[0])}")
    # Only the old cube's data and the new FFIs were read, each byte once.
    old_data = len(data_bytes(tmp_path / "fresh.fits")) * len(a) // 10
    assert result.bytes_read < old_data + len(b) * (SHAPE[0] * SHAPE[1] * 8 + 40000) + 200_000


def test_duplicates_are_skipped_and_all_duplicates_refused(ten, tmp_path: Path) -> None:
    cube = tmp_path / "cube.fits"
    fficube.make_cube(ten[:6], cube)
    with pytest.warns(fficube.DuplicateInputWarning, match="already in the cube"):
        result = fficube.sync.update_cube(cube, ten[4:])
    assert result.n_ffis == 10 and len(fits.getdata(cube, 2)) == 10
    before = cube.read_bytes()
    with pytest.warns(fficube.DuplicateInputWarning):
        with pytest.raises(fficube.InputError, match="none of the 3 FFI.s. is new"):
            fficube.sync.update_cube(cube, ten[7:])
    assert cube.read_bytes() == before


def test_mismatched_ffis_are_refused_before_writing(ten, sector, tmp_path: Path) -> None:
    cube = tmp_path / "cube.fits"
    fficube.make_cube(ten[:5], cube, sector=1)
    before = cube.read_bytes()
    camera2 = sector(n_ffis=2, shape=SHAPE, camera=2, seed=5, first_start=1400.0)
    with pytest.raises(fficube.MixedInputError, match=r"do not match the cube .*camera 1"):
        fficube.sync.update_cube(cube, camera2)
    wide = sector(n_ffis=1, shape=(31, 41), seed=6, first_start=1401.0)
    with pytest.raises(fficube.MixedInputError, match="image shape 31x40"):
        fficube.sync.update_cube(cube, wide)
    tica = sector(n_ffis=1, shape=SHAPE, product="tica", seed=7, first_start=1402.0)
    with pytest.raises(fficube.FitsFormatError, match="TICA FFI, not SPOC"):
        fficube.sync.update_cube(cube, tica)
    with pytest.raises(fficube.InputError, match="sector 1, not 2"):
        fficube.sync.update_cube(cube, ten[5:], sector=2)
    assert cube.read_bytes() == before and list(tmp_path.glob("*.partial")) == []


async def test_interrupted_update_leaves_the_cube_untouched(ten, tmp_path: Path) -> None:
    cube = tmp_path / "cube.fits"
    await fficube.build_cube(ten[:6], cube)
    before = cube.read_bytes()
    budget = await asyncio.to_thread(budget_for_rows, ten, 4)
    await cancel_after_blocks(2, lambda progress: fficube.update_cube(cube, ten[6:], max_memory=budget,
                                                                       progress=progress))
    assert cube.read_bytes() == before  # the work done is kept aside, in cube.fits.partial
    assert (tmp_path / "cube.fits.partial").exists() and (tmp_path / "cube.fits.journal").exists()
    with pytest.raises(fficube.ResumeError, match="resume=True"):
        await fficube.update_cube(cube, ten[6:])
    await fficube.update_cube(cube, ten[6:], restart=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cube")) == ["cube.fits"]


def test_astrocut_cuts_the_updated_cube(ten, tmp_path: Path) -> None:
    from astrocut import cube_cut

    fficube.make_cube(ten[:4], tmp_path / "cube.fits", sector=1)
    fficube.sync.update_cube(tmp_path / "cube.fits", ten[4:])
    fficube.make_cube(ten, tmp_path / "fresh.fits", sector=1)
    with fits.open(ten[2]) as ffi:
        target = WCS(ffi[1].header).pixel_to_world(20, 15)
    tpfs = [cube_cut(str(tmp_path / n), target, 3, output_path=str(tmp_path / n[:-5]), verbose=False)
            for n in ("cube.fits", "fresh.fits")]
    with fits.open(tpfs[0]) as a, fits.open(tpfs[1]) as b:
        assert len(a[1].data) == 10
        for column in ("TIME", "FLUX", "FLUX_ERR"):
            np.testing.assert_array_equal(a[1].data[column], b[1].data[column])


def test_update_on_s3_and_to_another_output(s3, ten, tmp_path: Path) -> None:
    urls = s3.upload(ten, "ffis")
    cube = f"s3://{s3.bucket}/cubes/cube.fits"
    fficube.make_cube(urls[:6], cube, sector=1, storage_options=s3.options)
    result = fficube.sync.update_cube(cube, urls[6:], storage_options=s3.options)
    assert result.n_ffis == 10
    fficube.make_cube(ten, tmp_path / "fresh.fits", sector=1)
    body = s3.client.get_object(Bucket=s3.bucket, Key="cubes/cube.fits")["Body"].read()
    (tmp_path / "from-s3.fits").write_bytes(body)
    assert data_bytes(tmp_path / "from-s3.fits") == data_bytes(tmp_path / "fresh.fits")
    assert table_bytes(tmp_path / "from-s3.fits") == table_bytes(tmp_path / "fresh.fits")
    # A local copy of an S3 cube, updated into a new file; the original is kept.
    fficube.make_cube(ten[:6], tmp_path / "old.fits", sector=1)
    fficube.sync.update_cube(tmp_path / "old.fits", ten[6:], output=tmp_path / "new.fits")
    assert len(fits.getdata(tmp_path / "old.fits", 2)) == 6
    assert data_bytes(tmp_path / "new.fits") == data_bytes(tmp_path / "fresh.fits")


def test_cli_update_and_astrocut_drop_in(ten, tmp_path: Path) -> None:
    cube = tmp_path / "cube.fits"
    fficube.make_cube(ten[:5], cube)
    code, _out, err = run_cli("update", str(cube), *ten[5:8], "-q")
    assert code == 0 and len(fits.getdata(cube, 2)) == 8
    code, _, err = run_cli("update", str(cube), *ten[5:8], "-q")
    assert code == 1 and "none of the 3 FFI(s) is new" in err
    returned = fficube.CubeFactory().update_cube(ten[8:], str(cube), verbose=False)
    assert returned == str(cube) and len(fits.getdata(cube, 2)) == 10
    fficube.make_cube(ten, tmp_path / "fresh.fits")
    assert data_bytes(cube) == data_bytes(tmp_path / "fresh.fits")


def test_longer_new_values_widen_the_columns(ten, tmp_path: Path) -> None:
    from helpers import rewrite_ffi

    late = ten[8]
    longer = rewrite_ffi(late, late.replace("-s_ffic.fits", "-reprocessed-s_ffic.fits"),
                         image_cards={"IMAGTYPE": "calibrated-again"})
    new = [*ten[6:8], longer, ten[9]]
    fficube.make_cube(ten[:6], tmp_path / "cube.fits")
    fficube.sync.update_cube(tmp_path / "cube.fits", new)
    fficube.make_cube(ten[:6] + new, tmp_path / "fresh.fits")
    assert table_bytes(tmp_path / "cube.fits") == table_bytes(tmp_path / "fresh.fits")
    table = fits.getdata(tmp_path / "cube.fits", 2)
    assert table["IMAGTYPE"][8] == "calibrated-again" and table["FFI_FILE"][8] == os.path.basename(longer)
