"""``fficube cut``: TPFs equal to astrocut 1.4's ``cube_cut`` of the same cube, with a
per-column WCS, few requests, and each cube row read once."""

from __future__ import annotations

import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from helpers import run_cli

import fficube
from fficube.views.cut import Target, cutout_size, plan_windows, row_reads, table_wcs

#: Pixel centres (x = column, y = row) and sizes: the middle, the left edge (window partly off
#: the CCD), the far corner (off two sides), and a window wider than it is high.
PLACES = {"centre": (14.3, 12.6, 5), "edge": (0.4, 9.2, 5), "corner": (29.4, 20.7, 6), "wide": (12.5, 7.5, (4, 6))}
#: Columns whose values must equal astrocut's.
SAME = ("TIME", "TIMECORR", "CADENCENO", "RAW_CNTS", "FLUX", "FLUX_ERR", "FLUX_BKG", "FLUX_BKG_ERR", "QUALITY",
        "POS_CORR1", "POS_CORR2")
#: Primary cards that name the software (fficube's, not astrocut's) or the file's checksums.
OURS = ("CREATOR", "PROCVER", "CHECKSUM", "DATASUM")


def wcs_of(cube: str) -> WCS:
    from astrocut.tess_cube_cutout import TessCubeCutout

    with fits.open(cube) as hdus, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return TessCubeCutout.parse_table_wcs(hdus[2].data)


def position(cube: str, x: float, y: float) -> SkyCoord:
    return wcs_of(cube).pixel_to_world(x, y)


def read_tpf(path: str | Path) -> fits.HDUList:
    """A TPF's HDUs with their data read, its file closed again."""
    hdus = fits.open(path, memmap=False)
    with hdus:
        for hdu in hdus:
            _ = hdu.data
    return hdus


def astrocut_tpf(cube: str, coord: SkyCoord, size, out: Path) -> fits.HDUList:
    from astrocut import cube_cut

    return read_tpf(cube_cut(cube, coord, size, output_path=str(out), verbose=False))


def quiet_wcs(header: fits.Header, **kwargs) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, **kwargs)


def assert_same_sky(ours: WCS, theirs: WCS, width: int, height: int, arcsec: float) -> None:
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    a, b = ours.pixel_to_world(xs.ravel(), ys.ravel()), theirs.pixel_to_world(xs.ravel(), ys.ravel())
    assert a.separation(b).arcsec.max() < arcsec


def assert_equals_astrocut(ours: fits.HDUList, theirs: fits.HDUList) -> None:
    a, b = ours[1].data, theirs[1].data
    assert a.columns.names == b.columns.names
    for name in SAME:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # astrocut writes FFI_FILE as 38A, cutting SPOC's 44-character names; fficube does not.
    assert [name[:38] for name in a["FFI_FILE"]] == list(b["FFI_FILE"])
    assert all(name.endswith(".fits") for name in a["FFI_FILE"])
    np.testing.assert_array_equal(ours[2].data, theirs[2].data)
    assert ours[2].data.dtype.newbyteorder("=") == theirs[2].data.dtype.newbyteorder("=")
    for hdu in (0, 1, 2):
        mine, ref = ours[hdu].header, theirs[hdu].header
        for key in ref:
            if hdu == 1 and key in ("NAXIS1", "TFORM12"):  # the row width: FFI_FILE is wider, not cut
                continue
            if key in OURS or key in ("CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "LATPOLE") or key.startswith("PC") \
                    or key.startswith("WCS_"):
                continue
            assert key in mine, (hdu, key)
            assert mine[key] == ref[key] or (mine[key] != mine[key] and ref[key] != ref[key]), (hdu, key)
    # The aperture's linear WCS: fitted as astrocut fits it, to the same sky within a hundredth of an arcsecond.
    height, width = ours[2].data.shape
    assert_same_sky(quiet_wcs(ours[2].header), quiet_wcs(theirs[2].header), width, height, 0.01)
    assert ours[0].header["CREATOR"] == "fficube"


def s3_cube(s3, cube: str) -> tuple[str, dict]:
    [url] = s3.upload([cube], "cubes")
    return url, s3.options


@pytest.mark.parametrize("where", ["local", "s3"])
def test_spoc_tpfs_equal_astrocut_at_centre_edge_and_corner(spoc_cube: str, tmp_path: Path, where: str,
                                                             request) -> None:
    source, options = (spoc_cube, None) if where == "local" else s3_cube(request.getfixturevalue("s3"), spoc_cube)
    for place, (x, y, size) in PLACES.items():
        coord = position(spoc_cube, x, y)
        [ours] = fficube.sync.cut_cube(source, coord, size, storage_options=options)
        theirs = astrocut_tpf(spoc_cube, coord, size, tmp_path / place)
        assert_equals_astrocut(ours, theirs)
        flux = ours[1].data["FLUX"]
        if place in ("edge", "corner"):  # padded as astrocut pads: NaN pixels, aperture 0
            assert np.isnan(flux).any() and (ours[2].data == 0).any()
        else:
            assert np.isfinite(flux).all() and (ours[2].data == 1).all()
    assert ours[1].data["FLUX"].shape[1:] == (6, 4)  # (4, 6): 4 columns, 6 rows, as astrocut's size


def tica_expected(cube: str, coord: SkyCoord, size) -> dict[str, np.ndarray]:
    """What astrocut makes of a TICA cube: its window (astrocut 1.4's own limits code on
    astrocut 1.4's WCS), the pixels padded with NaN, and the columns astrocut 1.2 (the
    last to cut TICA cubes) wrote: TIME from STARTTJD/ENDTJD, CADENCENO from CADENCE,
    QUALITY from QUAL_BIT, FLUX_ERR zeros."""
    from astrocut.cutout import Cutout

    sizes = np.repeat(size, 2) if np.isscalar(size) else np.asarray(size)
    limits = Cutout._get_cutout_limits(types.SimpleNamespace(_cutout_size=sizes, _limit_rounding_method="round"),
                                       coord, wcs_of(cube))
    (x0, x1), (y0, y1) = limits
    with fits.open(cube) as hdus:
        data, table = hdus[1].data, hdus[2].data
        rows, cols = data.shape[:2]
        flux = np.full((len(table), y1 - y0, x1 - x0), np.nan, dtype=np.float32)
        aperture = np.zeros((y1 - y0, x1 - x0), dtype=np.int32)
        r0, r1, c0, c1 = max(0, y0), min(rows, y1), max(0, x0), min(cols, x1)
        flux[:, r0 - y0:r1 - y0, c0 - x0:c1 - x0] = np.moveaxis(data[r0:r1, c0:c1, :, 0], 2, 0)
        aperture[r0 - y0:r1 - y0, c0 - x0:c1 - x0] = 1
        return {"FLUX": flux, "FLUX_ERR": np.zeros_like(flux), "TIME": (table["STARTTJD"] + table["ENDTJD"]) / 2,
                "CADENCENO": table["CADENCE"], "QUALITY": table["QUAL_BIT"], "FFI_FILE": table["FFI_FILE"],
                "APERTURE": aperture}


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tica_tpfs_equal_astrocut_at_centre_edge_and_corner(tica_cube: str, where: str, request) -> None:
    source, options = (tica_cube, None) if where == "local" else s3_cube(request.getfixturevalue("s3"), tica_cube)
    for place, (x, y, size) in {**PLACES, "corner": (29.4, 20.7, 6)}.items():
        coord = position(tica_cube, x, y)
        [ours] = fficube.sync.cut_cube(source, coord, size, storage_options=options)
        expected = tica_expected(tica_cube, coord, size)
        for name, values in expected.items():
            got = ours[2].data if name == "APERTURE" else ours[1].data[name]
            np.testing.assert_array_equal(got, values, err_msg=f"{place} {name}")
        assert "TIMECORR" not in ours[1].columns.names  # astrocut wrote none for TICA
        assert ours[0].header["FFI_TYPE"] == "TICA" and ours[1].columns["FLUX"].unit == "e-"
        assert ours[0].header["TSTART"] == fits.getheader(tica_cube, 0)["STARTTJD"]

@pytest.mark.parametrize("cube_fixture", ["spoc_cube", "tica_cube"])
def test_column_wcs_from_the_table_header_alone_names_the_apertures_sky(cube_fixture: str, tmp_path: Path,
                                                                          request) -> None:
    cube = request.getfixturevalue(cube_fixture)
    [path] = fficube.sync.cut_cube(cube, position(cube, 0.4, 9.2), (5, 7), out_dir=tmp_path)
    table, aperture = fits.getheader(path, 1), fits.getheader(path, 2)
    with fits.open(path) as hdus:  # the checksums fficube computes verify
        assert [hdu.verify_checksum() for hdu in hdus] == [1, 1, 1]
        assert [hdu.verify_datasum() for hdu in hdus] == [1, 1, 1]
    names = [table[f"TTYPE{i}"] for i in range(1, table["TFIELDS"] + 1)]
    image_columns = [i + 1 for i, name in enumerate(names) if name.startswith(("FLUX", "RAW_CNTS"))]
    assert len(image_columns) == 5
    reference = quiet_wcs(aperture)
    pixels = [(0, 0), (4, 6), (2, 3), (1, 5), (4, 0)]
    for n in image_columns:
        column = quiet_wcs(table, keysel=["binary"], colsel=[n])
        assert column.wcs.ctype[0] == "RA---TAN" and column.wcs.ctype[1] == "DEC--TAN"
        for x, y in pixels:
            assert column.pixel_to_world(x, y).separation(reference.pixel_to_world(x, y)).arcsec < 1e-6, (n, x, y)
        # The physical alternate: 1-based CCD column and row of each pixel.
        physical = quiet_wcs(table, keysel=["binary"], colsel=[n], key="P")
        window_x0 = table[f"1CRV{n}P"] - 1
        assert window_x0 < 0  # the window starts off the CCD, at column -2
        np.testing.assert_allclose(physical.wcs_pix2world([[0, 0], [3, 2]], 0),
                                   [[window_x0 + 1, table[f"2CRV{n}P"]], [window_x0 + 4, table[f"2CRV{n}P"] + 2]])


@pytest.mark.parametrize("cube_fixture", ["spoc_cube", "tica_cube"])
def test_lightkurve_reads_the_tpf_and_its_light_curve_is_the_sum_of_flux(cube_fixture: str, tmp_path: Path,
                                                                         request) -> None:
    with warnings.catch_warnings():  # lightkurve warns on import about an optional module
        warnings.simplefilter("ignore")
        import lightkurve

    cube = request.getfixturevalue(cube_fixture)
    [path] = fficube.sync.cut_cube(cube, position(cube, 14.3, 12.6), 5, out_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tpf = lightkurve.read(path, quality_bitmask="none")
        assert isinstance(tpf, lightkurve.TessTargetPixelFile)
        curve = tpf.to_lightcurve(aperture_mask="all")
    flux = fits.getdata(path, 1)["FLUX"]
    assert len(curve) == len(flux) > 1
    np.testing.assert_allclose(curve.flux.value, np.nansum(flux, axis=(1, 2)), rtol=1e-6)
    assert tpf.wcs.pixel_to_world(0, 0).separation(quiet_wcs(fits.getheader(path, 2)).pixel_to_world(0, 0)).arcsec \
        < 1e-6
    tpf.hdu.close()  # lightkurve keeps the file open for the TPF's lifetime


def test_an_s3_cutout_costs_the_headers_the_table_and_a_get_per_row(s3, proxy, spoc_cube: str) -> None:
    url, _ = s3_cube(s3, spoc_cube)
    p = proxy()
    report = fficube.sync.cut_targets(url, [Target(*_radec(spoc_cube, 14.3, 12.6))], 9,
                                      storage_options={"endpoint_url": p.url})
    [tpf] = report.tpfs
    assert tpf[1].data["FLUX"].shape[1:] == (9, 9) and np.isfinite(tpf[1].data["FLUX"]).all()
    assert report.row_reads == 9
    # The size, the primary and cube headers, the table's header and its data: five requests.
    assert p.state.ranged_gets <= 9 + 4
    assert p.state.requests <= 9 + 5
    assert report.requests == p.state.requests


def _radec(cube: str, x: float, y: float) -> tuple[float, float]:
    coord = position(cube, x, y)
    return float(coord.ra.deg), float(coord.dec.deg)


def test_overlapping_targets_read_each_row_once(spoc_cube: str) -> None:
    rows, cols, n, layers = fits.getdata(spoc_cube, 1).shape
    pixel = n * layers * 4
    one = fficube.sync.cut_targets(spoc_cube, [Target(*_radec(spoc_cube, 10, 10))], 5)
    targets = [Target(*_radec(spoc_cube, x, y)) for x, y in ((10, 10), (12, 11), (11, 13), (20, 10))]
    many = fficube.sync.cut_targets(spoc_cube, targets, 5)
    windows = plan_windows(targets, table_wcs(fits.getdata(spoc_cube, 2))[0], (5, 5), (rows, cols))
    spans = [(w.rows, w.cols) for w in windows if not isinstance(w, str)]
    runs = row_reads([w for w in windows if not isinstance(w, str)])
    # Each row spanned by any target is read, in one run per group of overlapping windows.
    assert sorted(runs) == sorted({r for (r0, r1), _ in spans for r in range(r0, r1)})
    assert max(len(s) for s in runs.values()) == 2  # the fourth target is apart from the first three
    area = sum(c1 - c0 for spans in runs.values() for c0, c1 in spans)
    assert area < 4 * 25  # overlaps are read once
    assert many.row_reads == sum(len(spans) for spans in runs.values())
    assert many.bytes_read - one.bytes_read == (area - 25) * pixel
    assert many.requests - one.requests == many.row_reads - one.row_reads
    # Each TPF is still the TPF of its own target.
    for target, tpf in zip(targets, many.tpfs, strict=True):
        [alone] = fficube.sync.cut_cube(spoc_cube, (target.ra, target.dec), 5)
        np.testing.assert_array_equal(tpf[1].data["FLUX"], alone[1].data["FLUX"])


def test_a_small_memory_budget_cuts_in_batches_with_the_same_tpfs(spoc_cube: str) -> None:
    coords = [_radec(spoc_cube, x, y) for x, y in ((3, 3), (10, 10), (25, 20), (14, 22))]
    roomy = fficube.sync.cut_cube(spoc_cube, coords, 5)
    n = fits.getheader(spoc_cube, 1)["NAXIS2"]
    tight = fficube.sync.cut_cube(spoc_cube, coords, 5, max_memory=12 * 25 * n * 4 + 5 * n * 8)  # one TPF at a time
    for a, b in zip(roomy, tight, strict=True):
        np.testing.assert_array_equal(a[1].data["FLUX"], b[1].data["FLUX"])
    with pytest.raises(fficube.MemoryBudgetError, match="max_memory"):
        fficube.sync.cut_cube(spoc_cube, coords, 5, max_memory=1000)


def test_a_target_off_the_footprint_is_a_clear_error(spoc_cube: str, tmp_path: Path) -> None:
    with pytest.raises(fficube.OutsideFootprintError, match=r"ra=10\.000000 dec=10\.000000 is outside") as info:
        fficube.sync.cut_cube(spoc_cube, (10.0, 10.0), 5)
    assert isinstance(info.value, ValueError) and isinstance(info.value, fficube.InputError)
    # Placed by the WCS, but its window misses the CCD.
    near = position(spoc_cube, -8, 10)
    with pytest.raises(fficube.OutsideFootprintError, match=r"star X \(ra=.*misses the CCD"):
        fficube.sync.cut_cube(spoc_cube, near, 5, names=["star X"])
    # In a list, the others are written first.
    good = position(spoc_cube, 14.3, 12.6)
    with pytest.raises(fficube.OutsideFootprintError, match="far") as info:
        fficube.sync.cut_cube(spoc_cube, [good, SkyCoord(10, 10, unit="deg")], 5, names=["good", "far"],
                              out_dir=tmp_path)
    assert [getattr(t, "name", None) for t in info.value.targets] == ["far"]
    assert (tmp_path / "good.fits").exists() and not (tmp_path / "far.fits").exists()


def test_sizes_and_coordinates_as_astrocut_takes_them() -> None:
    assert cutout_size(5) == (5, 5) and cutout_size("4x6") == (4, 6) and cutout_size((3, 2)) == (3, 2)
    for bad in (0, "x", "3x0", (1, 2, 3), -2):
        with pytest.raises(fficube.OptionError, match="size"):
            cutout_size(bad)
    targets = fficube.views.cut.targets_of(SkyCoord([1, 2], [3, 4], unit="deg"))
    assert [(round(t.ra, 9), round(t.dec, 9)) for t in targets] == [(1, 3), (2, 4)]
    assert fficube.views.cut.targets_of((1.5, -2.5)) == [Target(1.5, -2.5)]
    assert fficube.views.cut.targets_of([(1, 2), "3 4"]) == [Target(1, 2), Target(3, 4)]
    with pytest.raises(fficube.OptionError, match="coordinates"):
        fficube.views.cut.targets_of((1, 95))


def test_cutout_factory_is_a_drop_in_for_astrocuts(spoc_cube: str, tmp_path: Path) -> None:
    coord = position(spoc_cube, 14.3, 12.6)
    path = fficube.CutoutFactory().cube_cut(spoc_cube, coord, 5, output_path=str(tmp_path / "ours"))
    theirs = astrocut_tpf(spoc_cube, coord, 5, tmp_path / "theirs")
    assert Path(path).name == Path(theirs.filename()).name  # astrocut's file name
    assert_equals_astrocut(read_tpf(path), theirs)
    named = fficube.CutoutFactory().cube_cut(spoc_cube, coord, 5, target_pixel_file="x.fits", output_path=tmp_path)
    assert named == str(tmp_path / "x.fits")
    memory = fficube.CutoutFactory().cube_cut(spoc_cube, coord, 5, memory_only=True)
    np.testing.assert_array_equal(memory[1].data["FLUX"], theirs[1].data["FLUX"])


def test_cli_cuts_a_target_and_a_list(spoc_cube: str, tmp_path: Path, monkeypatch) -> None:
    ra, dec = _radec(spoc_cube, 14.3, 12.6)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "one.fits"
    code, stdout, stderr = run_cli("cut", spoc_cube, "--ra", str(ra), "--dec", str(dec), "--size", "4x6",
                                   "-o", "one.fits")
    assert code == 0, stderr
    assert "wrote one.fits\n" in stdout and "1 targets: 1 TPFs written" in stdout and "requests" in stdout
    assert "cut 1/1 TPFs" in stderr
    [api] = fficube.sync.cut_cube(spoc_cube, (ra, dec), (4, 6))
    np.testing.assert_array_equal(fits.getdata(out, 1)["FLUX"], api[1].data["FLUX"])

    csv = tmp_path / "targets.csv"
    ra2, dec2 = _radec(spoc_cube, 5, 5)
    csv.write_text(f"ra,dec,name\n{ra},{dec},star A\n10,10,lost\n{ra2},{dec2},\n")
    code, stdout, stderr = run_cli("cut", spoc_cube, "--targets", str(csv), "--size", "5", "--out-dir",
                                   str(tmp_path / "tpfs"), "--max-memory", "10MB")
    assert code == 1
    assert "3 targets: 2 TPFs written, 1 failed" in stdout and "kB read" in stdout
    assert "lost (ra=10.000000 dec=10.000000) is outside the cube's footprint" in stderr
    written = sorted(p.name for p in (tmp_path / "tpfs").iterdir())
    assert written == sorted(["star_A.fits", f"tess-s0001-1-1_{ra2:.7f}_{dec2:.7f}_5-x-5_astrocut.fits"])

    csv.write_text("ra;dec\n1;2\n")
    code, _, stderr = run_cli("cut", spoc_cube, "--targets", str(csv), "--size", "5")
    assert code == 1 and "must name the columns ra and dec" in stderr
    code, _, stderr = run_cli("cut", spoc_cube, "--ra", "1", "--size", "5")
    assert code == 1 and "--ra DEG --dec DEG" in stderr


def test_cards_written_over_in_place_are_astropys_cards() -> None:
    from fficube.views.cut import _splice

    header = fits.Header([("RA_OBJ", 1.0, "[deg] right ascension"), ("1CTYP4", "RA---TAN", "type"),
                          ("WCAX4", 2, "axes"), ("FLAG", True, "a flag")])
    text = header.tostring().encode("ascii")
    cards = {card.keyword: (80 * i, card.comment) for i, card in enumerate(header.cards)}
    values = [("RA_OBJ", 123.456789012345678), ("1CTYP4", "DEC--TAN"), ("WCAX4", 3), ("FLAG", False)]
    expected = header.copy()
    for keyword, value in values:
        expected[keyword] = value
    assert _splice(text, cards, values) == expected.tostring().encode("ascii")
    assert _splice(text, cards, [("NOPE", 1)]) is None  # not in the template: the caller sets it on a copy
    assert _splice(text, cards, [("1CTYP4", "x" * 90)]) is None  # a long string takes CONTINUE cards
