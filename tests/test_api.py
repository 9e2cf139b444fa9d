"""The async and sync APIs, the astrocut drop-in, and what a build leaves behind."""

from __future__ import annotations

import glob
import os
import warnings
from pathlib import Path

import pytest
from astropy.io import fits
from helpers import budget_for_rows, data_and_header_bytes, without_build_stamps

import fficube

SHAPE = (40, 48)


@pytest.fixture
def paths(sector):
    return sector(n_ffis=6, shape=SHAPE, no_wcs=(1,))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


async def test_async_and_sync_builds_are_identical(paths, tmp_path: Path) -> None:
    result = await fficube.build_cube(paths, tmp_path / "a.fits", max_memory="1GB")
    assert result.shape == (*SHAPE, 6, 2) and result.n_ffis == 6 and result.blocks == 1
    assert result.bytes_written == os.path.getsize(tmp_path / "a.fits")
    # The sync twin runs from a thread whose loop is running too (a notebook cell).
    result_b = fficube.make_cube(paths, tmp_path / "b.fits", max_memory="1GB")
    assert result_b.shape == result.shape
    a, b = (tmp_path / "a.fits").read_bytes(), (tmp_path / "b.fits").read_bytes()
    assert without_build_stamps(a) == without_build_stamps(b)


def test_inputs_as_directory_glob_and_list_agree(paths, tmp_path: Path) -> None:
    directory = os.path.dirname(paths[0])
    fficube.make_cube(paths, tmp_path / "list.fits")
    fficube.make_cube(directory, tmp_path / "dir.fits")
    fficube.make_cube(os.path.join(directory, "*.fits"), tmp_path / "glob.fits")
    cubes = [without_build_stamps((tmp_path / n).read_bytes()) for n in ("list.fits", "dir.fits", "glob.fits")]
    assert cubes[0] == cubes[1] == cubes[2]


def test_same_file_twice_is_used_once_with_a_warning(paths, tmp_path: Path) -> None:
    with pytest.warns(fficube.DuplicateInputWarning, match=os.path.basename(paths[2])):
        result = fficube.make_cube([*paths, paths[2]], tmp_path / "c.fits")
    assert result.n_ffis == 6


def test_nothing_matching_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(fficube.NoInputsError, match=r"nothing\*.fits: the pattern matches no file"):
        fficube.make_cube(str(tmp_path / "nothing*.fits"), tmp_path / "c.fits")
    with pytest.raises(fficube.NoInputsError, match="no FFI files"):
        fficube.make_cube(tmp_path, tmp_path / "c.fits")
    with pytest.raises(fficube.InputError, match="missing.fits: no such file"):
        fficube.make_cube([str(tmp_path / "missing.fits")], tmp_path / "c.fits")
    assert not (tmp_path / "c.fits").exists()


def test_existing_output_is_kept_unless_overwrite(paths, tmp_path: Path) -> None:
    out = tmp_path / "cube.fits"
    out.write_bytes(b"the user's file")
    with pytest.raises(fficube.OutputExistsError, match="already exists"):
        fficube.make_cube(paths, out)
    assert out.read_bytes() == b"the user's file"
    fficube.make_cube(paths, out, overwrite=True)
    assert fits.getheader(out, 1)["NAXIS2"] == 6
    assert leftovers(tmp_path) == []


def test_output_that_is_an_input_is_refused(paths, tmp_path: Path) -> None:
    before = Path(paths[0]).read_bytes()
    with pytest.raises(fficube.InputError, match="the output is one of the inputs"):
        fficube.make_cube(paths, paths[0], overwrite=True)
    assert Path(paths[0]).read_bytes() == before


def test_progress_reports_every_file_and_block(paths, tmp_path: Path) -> None:
    seen: list[fficube.Progress] = []
    budget = budget_for_rows(paths, 8)
    result = fficube.make_cube(paths, tmp_path / "c.fits", max_memory=budget, progress=seen.append)
    scans = [p for p in seen if p.stage == "scan"]
    writes = [p for p in seen if p.stage == "write"]
    assert [p.done for p in scans] == list(range(1, 7))
    assert [p.done for p in writes] == list(range(0, result.blocks + 1)) and result.blocks == 5
    assert all(p.total_bytes == result.bytes_written for p in writes)
    written = [p.bytes_written for p in writes]
    # The last report comes when the cube is whole: its table and sealed header included.
    assert written == sorted(written) and written[-2] < written[-1] == result.bytes_written
    assert result.bytes_written == (tmp_path / "c.fits").stat().st_size


def test_reads_each_input_byte_once(sector, tmp_path: Path) -> None:
    # Images big enough that the header over-read of small files stays under 1 %.
    paths = sector(n_ffis=5, shape=(600, 800), no_wcs=(2,))
    budget = budget_for_rows(paths, 38)  # 16 blocks
    result = fficube.make_cube(paths, tmp_path / "c.fits", max_memory=budget)
    assert result.blocks == 16
    data, header = data_and_header_bytes(paths)
    assert data <= result.bytes_read <= 1.01 * (data + header)
    # Two ranges per file per block, plus a few header reads per file.
    assert result.requests - result.hedges <= 2 * 5 * 16 + 3 * 5


def test_input_cut_short_during_the_build_fails_cleanly(sector, tmp_path: Path) -> None:
    paths = sector(n_ffis=6, shape=SHAPE)
    out = tmp_path / "c.fits"
    victim = paths[3]

    def truncate_after_scan(p: fficube.Progress) -> None:
        if p.stage == "write" and p.done == 0:
            with open(victim, "r+b") as f:
                f.truncate(9000)

    with pytest.raises(fficube.ReadError) as info:
        fficube.make_cube(paths, out, max_memory=budget_for_rows(paths, 4), progress=truncate_after_scan)
    assert victim in str(info.value) and "truncated" in str(info.value) and info.value.range is not None
    assert not out.exists() and leftovers(tmp_path) == []


def test_astrocut_style_cube_factory(paths, tmp_path: Path) -> None:
    out = tmp_path / "img-cube.fits"
    out.write_bytes(b"old")  # astrocut replaces an existing cube; so does the drop-in
    returned = fficube.CubeFactory().make_cube(paths, str(out), sector=1, max_memory=0.001, verbose=False)
    assert returned == str(out)
    with fits.open(out) as cube:
        assert cube[0].header["SECTOR"] == 1 and cube[1].data.shape == (*SHAPE, 6, 2)
    fficube.make_cube(paths, tmp_path / "ref.fits", sector=1)
    assert without_build_stamps(out.read_bytes()) == without_build_stamps((tmp_path / "ref.fits").read_bytes())


def test_memory_budget_too_small_fails_before_writing(paths, tmp_path: Path) -> None:
    with pytest.raises(fficube.MemoryBudgetError, match="cannot hold one row"):
        fficube.make_cube(paths, tmp_path / "c.fits", max_memory="10kB")
    assert list(tmp_path.glob("c.fits*")) == []


def test_no_warnings_in_a_clean_build(paths, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fficube.make_cube(paths, tmp_path / "c.fits")
    assert glob.glob(str(tmp_path / "*.partial")) == []
