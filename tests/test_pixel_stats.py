"""Per-pixel statistics: equal to numpy's, the same from a build, an update, a resumed
build and ``fficube stats`` (local and S3), and never a change to the cube."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from cube_compare import assert_verifies
from helpers import budget_for_rows, cancel_after_blocks, run_cli, without_build_stamps

import fficube
from fficube import pixelstats
from fficube.pixelstats import CONSTANT, NO_DATA, SPARSE, FfiSelection, PixelStats, select_ffis
from fficube.products import SPOC, TICA

IMAGES = ("MEDIAN", "SIGMA", "NGOOD", "MASK")


def numpy_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MEDIAN, SIGMA, NGOOD of ``values`` (rows, cols, FFIs) as numpy computes them."""
    values = values.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        median = np.nanmedian(values, axis=2)
        sigma = 1.4826 * np.nanmedian(np.abs(values - median[:, :, None]), axis=2)
    return median, sigma, np.count_nonzero(np.isfinite(values), axis=2)


def assert_equal_images(a, b) -> None:
    for name in IMAGES:
        assert np.array_equal(a[name].data, b[name].data, equal_nan=True), name
    assert np.array_equal(a["FFIS"].data["USED"], b["FFIS"].data["USED"])


def block_of(values: np.ndarray, layers: int = 2) -> np.ndarray:
    """A cube block (rows, cols, FFIs, layers), big-endian as the pipeline holds it."""
    block = np.empty((*values.shape, layers), dtype=">f4")
    block[..., 0] = values
    block[..., 1:] = 1.0
    return block


@pytest.mark.parametrize("chunk", [2**18, 7, 40])  # whole rows at once; runs of columns; a few rows
def test_statistics_equal_numpys(chunk: int, monkeypatch) -> None:
    monkeypatch.setattr(pixelstats, "CHUNK_VALUES", chunk)
    rng = np.random.default_rng(3)
    rows, cols, n = 9, 11, 8
    values = rng.normal(200, 10, (rows, cols, n)).astype(np.float32)
    values[0, 0, :] = np.nan  # no finite sample
    values[1, 1, :] = 7.0  # constant
    values[2, 2, :6] = np.nan  # 2 of the 6 FFIs used finite: sparse
    values[3, 3, 1::2] = np.nan  # an even count
    values[:, :, 4] = 0.0  # an all-zero frame: left out row by row
    used = (True, True, True, False, True, True, True, True)  # FFI 3 flagged by its quality column
    selection = FfiSelection("good", used, tuple("" if u else "DQUALITY = 4" for u in used))
    stats = PixelStats((rows, cols, n, 2), selection)
    stats.add(block_of(values[:4]), 0, 4)
    stats.add(block_of(values[4:]), 4, rows)

    kept = values[:, :, [0, 1, 2, 5, 6, 7]]
    median, sigma, ngood = numpy_stats(kept)
    assert median.dtype == np.float32 and stats.median.dtype == np.dtype(">f4")  # float32, as FITS stores it
    assert np.array_equal(stats.median, median, equal_nan=True)
    assert np.array_equal(stats.sigma, sigma, equal_nan=True)
    assert np.array_equal(stats.ngood, ngood)
    assert stats.mask[0, 0] == NO_DATA and stats.mask[1, 1] == CONSTANT and stats.mask[2, 2] == SPARSE
    assert stats.mask[3, 3] == 0 and np.count_nonzero(stats.mask) == 3
    assert list(stats.rows_left_out) == [0, 0, 0, 0, rows, 0, 0, 0] and stats.missing() == []

    every = PixelStats((rows, cols, n, 2), select_ffis(_table(n, [0] * n), SPOC, "all"))
    every.add(block_of(values), 0, rows)
    assert np.array_equal(every.median, numpy_stats(values)[0], equal_nan=True)  # the zero frame counts


def test_infinities_are_numpys_too() -> None:
    values = np.random.default_rng(2).normal(10, 1, (3, 4, 6)).astype(np.float32)
    values[0, 0, 2] = np.inf
    values[0, 1, :3] = np.inf  # the median is inf: inf - inf is NaN, a deviation numpy drops
    values[1, 1, 1] = -np.inf
    values[2, 2, :] = np.inf
    stats = PixelStats((*values.shape, 1), FfiSelection("all", (True,) * 6, ("",) * 6))
    stats.add(block_of(values, layers=1), 0, 3)
    median, sigma, _ngood = numpy_stats(values)
    assert np.array_equal(stats.median, median, equal_nan=True)
    assert np.array_equal(stats.sigma, sigma, equal_nan=True)


def _table(n: int, flags: list[int], column: str = "DQUALITY") -> fits.BinTableHDU:
    return fits.BinTableHDU.from_columns([
        fits.Column(name=column, format="J", array=flags),
        fits.Column(name="FFI_FILE", format="10A", array=[f"f{i}" for i in range(n)]),
    ])


def test_the_ffis_used_come_from_the_quality_column() -> None:
    spoc = select_ffis(_table(3, [0, 32, 0]), SPOC)
    assert spoc.used == (True, False, True) and spoc.reasons == ("", "DQUALITY = 32", "")
    tica = select_ffis(_table(2, [0, 1], "QUAL_BIT"), TICA)
    assert tica.used == (True, False) and select_ffis(_table(2, [0, 1], "QUAL_BIT"), TICA, "all").n_used == 2
    with pytest.raises(fficube.OptionError, match="stats_ffis: 'some' is not one of good, all"):
        select_ffis(_table(2, [0, 0]), SPOC, "some")


@pytest.fixture
def ffis(sector) -> list[str]:
    """SPOC FFIs, one of them all zero (the quality gate's all_zero)."""
    paths = sorted(sector(n_ffis=9, shape=(30, 36), no_wcs=(2,)))
    good = [p for p in paths[3:] if fits.getval(p, "DQUALITY", 1) == 0]
    with fits.open(good[0], mode="update") as ffi:  # a frame the quality flags call good
        ffi[1].data[:] = 0.0
    return paths


@pytest.fixture
def budget(ffis) -> int:
    """A budget for blocks of 6 rows (of 30) with the statistics held too."""
    return budget_for_rows(ffis, 6, pixel_stats=True)


def expected_images(cube: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[bool]]:
    """The statistics numpy gives for a cube read by astropy: good FFIs by DQUALITY, the
    all-zero frame left out."""
    with fits.open(cube) as hdus:
        values = np.asarray(hdus[1].data[..., 0], dtype=np.float32)  # (rows, cols, FFIs)
        flags = np.asarray(hdus[2].data["DQUALITY"])
    zero = [i for i in range(values.shape[2]) if not np.any(values[:, :, i])]
    used = [bool(f == 0) and i not in zero for i, f in enumerate(flags)]
    median, sigma, ngood = numpy_stats(values[:, :, used])
    return median, sigma, ngood, [bool(f == 0) for f in flags]


def test_a_build_makes_them_as_numpy_would_without_changing_the_cube(ffis, budget, tmp_path: Path) -> None:
    plain = fficube.make_cube(ffis, tmp_path / "plain.fits", max_memory="4GB")
    result = fficube.make_cube(ffis, tmp_path / "cube.fits", max_memory=budget, pixel_stats=tmp_path / "stats.fits")
    assert result.blocks > 1 and plain.blocks == 1
    assert without_build_stamps((tmp_path / "cube.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "plain.fits").read_bytes())
    assert result.pixel_stats == str(tmp_path / "stats.fits") and "pixel statistics in" in result.summary()
    median, sigma, ngood, good = expected_images(tmp_path / "cube.fits")
    with fits.open(tmp_path / "stats.fits", checksum=True) as stats:
        assert np.array_equal(stats["MEDIAN"].data, median, equal_nan=True)
        assert np.array_equal(stats["SIGMA"].data, sigma, equal_nan=True)
        assert np.array_equal(stats["NGOOD"].data, ngood)
        assert list(stats["FFIS"].data["USED"]) == good
        zero = [i for i in range(9) if stats["FFIS"].data["ROWS_OUT"][i]]
        assert len(zero) == 1 and good[zero[0]] and stats["FFIS"].data["ROWS_OUT"][zero[0]] == 30
        assert not np.any(fits.getdata(ffis[zero[0]], 1))
        assert stats[0].header["NUSED"] == sum(good) and stats[0].header["STATFFIS"] == "good"
        # The cube's WCS: the images' pixels are the cube's pixels.
        from astropy.wcs import WCS

        with fits.open(tmp_path / "cube.fits") as cube:
            row = len(cube[2].data) // 2
            assert stats["MEDIAN"].header["CRVAL1"] == pytest.approx(cube[2].data["CRVAL1"][row])
        assert WCS(stats["MEDIAN"].header).has_celestial


def test_an_update_and_fficube_stats_give_the_build_s_statistics(ffis, budget, tmp_path: Path) -> None:
    fficube.make_cube(ffis, tmp_path / "full.fits", pixel_stats=tmp_path / "full-stats.fits")
    fficube.make_cube(ffis[:5], tmp_path / "cube.fits")
    update = fficube.sync.update_cube(tmp_path / "cube.fits", ffis[5:], pixel_stats=tmp_path / "update-stats.fits",
                                 max_memory=budget)
    assert update.blocks > 1 and update.pixel_stats == str(tmp_path / "update-stats.fits")
    code, out, err = run_cli("stats", str(tmp_path / "cube.fits"), "-o", str(tmp_path / "cmd-stats.fits"),
                             "--max-memory", "5MB")
    assert code == 0 and "pixel statistics of 30x36 pixels over" in out, err
    with (fits.open(tmp_path / "full-stats.fits") as full, fits.open(tmp_path / "update-stats.fits") as update,
          fits.open(tmp_path / "cmd-stats.fits") as command):
        assert_equal_images(full, update)
        assert_equal_images(full, command)


def test_a_resumed_build_reads_again_only_the_rows_it_did_not_see(ffis, budget, tmp_path: Path) -> None:
    fficube.make_cube(ffis, tmp_path / "ref.fits", pixel_stats=tmp_path / "ref-stats.fits")
    cube, stats = tmp_path / "cube.fits", tmp_path / "stats.fits"

    async def start(progress):
        return await fficube.build_cube(ffis, cube, max_memory=budget, pixel_stats=stats, progress=progress)

    asyncio.run(cancel_after_blocks(2, start))
    assert not stats.exists()
    result = fficube.make_cube(ffis, cube, max_memory=budget, pixel_stats=stats, resume=True)
    assert 0 < result.resumed_rows == result.stats_rows_reread < 30
    assert result.stats_bytes_reread == result.stats_rows_reread * 36 * 9 * 2 * 4
    with fits.open(tmp_path / "ref-stats.fits") as ref, fits.open(stats) as resumed:
        assert_equal_images(ref, resumed)


def test_s3_cube_statistics_equal_the_local_ones(ffis, s3, tmp_path: Path) -> None:
    url = f"s3://{s3.bucket}/cubes/cube.fits"
    fficube.make_cube(ffis, url, storage_options=s3.options, pixel_stats=f"s3://{s3.bucket}/cubes/stats.fits")
    fficube.make_cube(ffis, tmp_path / "local.fits", pixel_stats=tmp_path / "local-stats.fits")
    result = fficube.make_stats(url, tmp_path / "from-s3.fits", storage_options=s3.options, max_memory="5MB")
    assert result.requests < 12  # headers, table and a few blocks of rows
    (tmp_path / "built-on-s3.fits").write_bytes(
        s3.client.get_object(Bucket=s3.bucket, Key="cubes/stats.fits")["Body"].read())
    with (fits.open(tmp_path / "local-stats.fits") as local, fits.open(tmp_path / "from-s3.fits") as remote,
          fits.open(tmp_path / "built-on-s3.fits") as built):
        assert_equal_images(local, remote)
        assert_equal_images(local, built)


def test_a_failure_of_the_statistics_leaves_a_complete_cube(ffis, budget, tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = PixelStats.add

    def failing(self, block, start, stop, stop_event=None):
        calls.append(start)
        if len(calls) == 2:
            raise MemoryError("no room for the sort")
        return real(self, block, start, stop, stop_event)

    monkeypatch.setattr(PixelStats, "add", failing)
    monkeypatch.setattr("fficube.pipeline.STATS_THREADS", 1)  # one call per block, whatever the cores
    with pytest.raises(fficube.OutputError, match=r"stats.fits: the pixel statistics failed \(no room for the sort\); "
                                                  r"the cube .*cube.fits is complete: 'fficube stats"):
        fficube.make_cube(ffis, tmp_path / "cube.fits", max_memory=budget, pixel_stats=tmp_path / "stats.fits")
    assert len(calls) == 2  # no more attempts after the failure; the blocks went on
    assert not (tmp_path / "stats.fits").exists()
    assert_verifies(tmp_path / "cube.fits")
    fficube.make_cube(ffis, tmp_path / "plain.fits")
    assert without_build_stamps((tmp_path / "cube.fits").read_bytes()) == without_build_stamps(
        (tmp_path / "plain.fits").read_bytes())


def test_bad_statistics_options_are_refused_before_anything_is_read(ffis, tmp_path: Path) -> None:
    with pytest.raises(fficube.OptionError, match="is the cube or one of its inputs"):
        fficube.make_cube(ffis, tmp_path / "cube.fits", pixel_stats=tmp_path / "cube.fits")
    code, _, err = run_cli("build", *ffis, "-o", str(tmp_path / "c.fits"), "--pixel-stats", ffis[0])
    assert code == 1 and "--pixel-stats: " in err and "is the cube or one of its inputs" in err
    with pytest.raises(fficube.OptionError, match="stats_ffis"):
        fficube.make_cube(ffis, tmp_path / "cube.fits", pixel_stats=tmp_path / "s.fits", stats_ffis="best")
    assert not (tmp_path / "cube.fits").exists()
    with pytest.raises(fficube.MemoryBudgetError, match="cannot hold the statistics of this cube"):
        fficube.make_stats(fficube.make_cube(ffis, tmp_path / "cube.fits").output, max_memory="100kB")


def test_the_cli_writes_them_with_build_and_all_ffis(ffis, tmp_path: Path) -> None:
    code, _out, err = run_cli("build", *ffis, "-o", str(tmp_path / "c.fits"), "--pixel-stats",
                             str(tmp_path / "s.fits"), "--stats-ffis", "all", "-q")
    assert code == 0, err
    with fits.open(tmp_path / "s.fits") as stats, fits.open(tmp_path / "c.fits") as cube:
        assert stats[0].header["STATFFIS"] == "all" and stats[0].header["NUSED"] == 9
        values = np.asarray(cube[1].data[..., 0], dtype=np.float32)
        assert np.array_equal(stats["MEDIAN"].data, numpy_stats(values)[0], equal_nan=True)


def test_any_astrocut_format_cube_astrocuts_own_and_tica(sector, tmp_path: Path) -> None:
    from helpers import astrocut_cube

    paths = sorted(sector(n_ffis=5, shape=(20, 24), no_wcs=()))
    astrocut_cube(paths, tmp_path / "astrocut.fits")  # no fficube cards: the product from its layers
    fficube.make_cube(paths, tmp_path / "ours.fits", pixel_stats=tmp_path / "ours-stats.fits")
    theirs = fficube.make_stats(tmp_path / "astrocut.fits", tmp_path / "theirs-stats.fits")
    assert theirs.n_used == sum(fits.getval(p, "DQUALITY", 1) == 0 for p in paths)
    with fits.open(tmp_path / "ours-stats.fits") as ours, fits.open(tmp_path / "theirs-stats.fits") as other:
        assert_equal_images(ours, other)

    tica = sorted(sector(n_ffis=5, product="tica", sector=27, shape=(20, 24), no_wcs=()))
    result = fficube.make_cube(tica, tmp_path / "tica.fits", sector=27, pixel_stats=tmp_path / "tica-stats.fits")
    with fits.open(tmp_path / "tica-stats.fits") as stats, fits.open(tmp_path / "tica.fits") as cube:
        flags = np.asarray(cube[2].data["QUAL_BIT"])
        values = np.asarray(cube[1].data[..., 0], dtype=np.float32)[:, :, flags == 0]
        assert np.array_equal(stats["MEDIAN"].data, numpy_stats(values)[0], equal_nan=True)
        assert stats[0].header["PRODUCT"] == "TICA" and result.pixel_stats
