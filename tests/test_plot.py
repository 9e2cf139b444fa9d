"""``fficube plot``: the figure's numbers come from the cube, with a bounded number of requests.

The thumbnail's pixels are checked against astropy's read of the asked frame, the
levels against numpy's medians of the same pixels, and S3 requests are counted by a
proxy in front of the moto server, not by fficube.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from helpers import build, run_cli

import fficube
from fficube.synthetic import CADENCE_DAYS
from fficube.views.overview import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, plan_sample

pytest.importorskip("matplotlib")


def read(path: str) -> tuple[np.ndarray, fits.FITS_rec]:
    with fits.open(path) as hdul:
        return np.array(hdul[1].data), hdul[2].data.copy()


def check_figure(result, path: str, frame: int) -> None:
    """The drawn thumbnail is the asked frame's flux at the sampled pixels, and the
    levels are the medians of the sampled pixels of every FFI."""
    data, table = read(path)
    o = result.overview
    rows, cols = o.thumbnail_rows, o.thumbnail_cols
    assert o.frame == frame
    drawn = np.asarray(result.image.get_array())
    np.testing.assert_array_equal(drawn, data[rows][:, cols, frame, 0])
    for other in set(range(data.shape[2])) - {frame}:  # another frame would not do
        assert not np.array_equal(drawn, data[rows][:, cols, other, 0])
    steps = set(np.diff(rows).tolist())
    assert len(steps) <= 1 and rows[0] < o.plan.row_step and rows[-1] >= data.shape[0] - o.plan.row_step
    sample = data[rows][:, :: o.plan.level_col_step, :, 0].reshape(-1, data.shape[2])
    np.testing.assert_array_equal(o.levels, np.median(sample, axis=0))
    start = "TSTART" if o.product == "spoc" else "STARTTJD"
    np.testing.assert_array_equal(o.starts, table[start])
    np.testing.assert_array_equal(result.axes["coverage"].lines[0].get_ydata(), table[start])


def test_local_figure(spoc_cube: str, tmp_path: Path) -> None:
    out = tmp_path / "cube.png"
    result = fficube.plot_cube(spoc_cube, out, frame=2, max_rows=10)
    check_figure(result, spoc_cube, 2)
    assert result.overview.plan.rows == tuple(range(0, 26, 3))  # 26 rows, at most 10: every 3rd
    assert result.overview.requests == result.overview.header_requests + 9
    import matplotlib.image

    width, height = result.figure.get_size_inches() * 100
    assert matplotlib.image.imread(out).shape[:2] == (round(height), round(width))  # a real PNG of the figure
    _, table = read(spoc_cube)
    expected_bits = [(i, 7) for i in np.flatnonzero(table["DQUALITY"] & 128)]
    assert result.overview.quality_column == "DQUALITY" and result.overview.set_bits == expected_bits
    assert result.overview.wcs_row == 2 and result.overview.wcs_header["CTYPE2"] == "DEC--TAN-SIP"


def test_s3_figure_reads_a_bounded_number_of_requests(spoc_cube: str, s3, proxy, tmp_path: Path) -> None:
    key = "cubes/tess-s0001-1-1-cube.fits"
    s3.client.upload_file(spoc_cube, s3.bucket, key)
    p = proxy()
    url = f"s3://{s3.bucket}/{key}"
    result = fficube.plot_cube(url, tmp_path / "s3.png", max_rows=8, storage_options={"endpoint_url": p.url})
    o = result.overview
    check_figure(result, spoc_cube, 3)  # the middle one of 7
    # Counted at the server's side: headers and table, then one GET per sampled row.
    assert p.state.requests == o.requests == o.header_requests + len(o.sample_rows)
    assert len(o.sample_rows) <= o.row_request_bound == 8 and o.header_requests <= 6
    assert p.state.requests <= 6 + 8
    # A byte budget of three rows reads three rows, whatever max_rows says.
    data, _ = read(spoc_cube)
    row_bytes = data[0].nbytes
    p.state.requests = 0
    result = fficube.plot_cube(url, None, max_bytes=3 * row_bytes + 100, storage_options={"endpoint_url": p.url})
    assert len(result.overview.sample_rows) == result.overview.row_request_bound == 3
    assert p.state.requests == result.overview.header_requests + 3
    check_figure(result, spoc_cube, 3)
    # The command prints the count the server saw.
    p.state.requests = 0
    code, out, err = run_cli("plot", url, "-o", str(tmp_path / "cli.png"), "--max-rows", "4",
                             "--storage-option", f"endpoint_url={p.url}")
    assert code == 0, err
    assert f"in {p.state.requests} requests: " in out and "4 for rows (at most 4: max_rows = 4 of 26 rows)" in out


def test_tica_figure_and_cli(tica_cube: str, tmp_path: Path) -> None:
    out = tmp_path / "tica.png"
    code, stdout, err = run_cli("plot", tica_cube, "-o", str(out), "--frame", "-1", "--max-rows", "5")
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: frame 4 of 5 (hlsp_tica_")
    assert "requests: " in stdout and "for rows (at most 5: max_rows = 5 of 22 rows)" in stdout
    assert out.stat().st_size > 10_000
    result = fficube.plot_cube(tica_cube, frame=-1, max_rows=5)
    check_figure(result, tica_cube, 4)
    _, table = read(tica_cube)
    assert result.overview.quality_column == "QUAL_BIT"
    assert result.overview.set_bits == [(i, 5) for i in np.flatnonzero(table["QUAL_BIT"] & 32)]


def test_inspect_plot(spoc_cube: str, tmp_path: Path) -> None:
    out = tmp_path / "inspect.png"
    code, stdout, err = run_cli("inspect", spoc_cube, "--plot", str(out), "--frame", "0")
    assert code == 0, err
    assert "shape       26 rows x 30 cols x 7 FFIs x 2 layer(s)" in stdout
    assert f"wrote {out}: frame 0 of 7" in stdout and out.stat().st_size > 10_000


def test_gaps_report_flags_and_missing_columns(sector, tmp_path: Path) -> None:
    first = sector(n_ffis=4, shape=(16, 20), no_wcs=())
    later = sector(n_ffis=3, shape=(16, 20), no_wcs=(), first_start=1325.3131 + 10 * CADENCE_DAYS, seed=1)
    cube = build(first + later, tmp_path / "gap.fits")
    _, table = read(cube)
    names = [str(n) for n in table["FFI_FILE"]]
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"gate": "v0", "ffis": [
        {"file": names[1], "time": float(table["TSTART"][1]), "flags": ["scattered_light"]},
        {"file": "renamed.fits", "time": float(table["TSTART"][5]), "flags": ["saturation", "scattered_light"]},
        {"file": f"s3://b/x/{names[6]}", "time": 0.0, "flags": []},
        {"file": "elsewhere.fits", "time": 1.0, "flags": ["x"]},
    ]}))
    result = fficube.plot_cube(cube, tmp_path / "gap.png", report=report)
    o = result.overview
    assert abs(o.cadence - CADENCE_DAYS) < 1e-6
    assert [(g.after, g.start, g.stop) for g in o.gaps] == [(3, table["TSTART"][3], table["TSTART"][4])]
    assert [line.get_xdata()[0] for line in result.axes["coverage"].lines[2:]] == [3.5]  # the gap's mark
    assert o.report_flags == [(1, "scattered_light"), (5, "saturation"), (5, "scattered_light")]
    assert [e.file for e in o.report_unmatched] == ["elsewhere.fits"] and "1 report entry" in o.notes[0]
    labels = [t.get_text() for t in result.axes["report"].get_yticklabels()]
    assert labels == ["scattered_light", "saturation"]

    # TICA FFIs with no WCS and no QUAL_BIT: the figure says so and is drawn on pixel axes.
    paths = sector(n_ffis=4, product="tica", sector=27, shape=(12, 14), no_wcs=(0, 1, 2, 3))
    for path in paths:
        with fits.open(path, mode="update") as hdul:
            del hdul[0].header["QUAL_BIT"]
    with pytest.warns(fficube.TemplateWarning, match="no celestial WCS"):
        bare = build(paths, tmp_path / "bare.fits", sector=27)
    code, stdout, err = run_cli("plot", bare, "-o", str(tmp_path / "bare.png"))
    assert code == 0, err
    assert "note: no quality column (QUAL_BIT)" in stdout and "no FFI of the cube has a celestial WCS" in stdout
    result = fficube.plot_cube(bare)
    assert result.overview.quality_column is None and result.overview.wcs_header is None
    assert result.axes["thumbnail"].get_xlabel() == "column"
    check_figure(result, bare, 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--frame", "7"], "frame 7 is out of range: the cube has 7 FFIs (0 to 6)"),
        (["--report", "{missing}"], "cannot read the quality report"),
        (["--report", "{bad}"], '"ffis"[0]: "flags" must be a list of strings'),
        (["--max-bytes", "lots"], "not a size: 'lots'"),
    ],
)
def test_bad_requests_are_one_line_errors(spoc_cube: str, tmp_path: Path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ffis": [{"file": "a.fits", "time": 1.0, "flags": "oops"}]}))
    args = [a.format(missing=tmp_path / "nope.json", bad=bad) for a in args]
    code, _out, err = run_cli("plot", spoc_cube, "-o", str(tmp_path / "x.png"), *args)
    assert code in (1, 2) and message in err and err.count("\n") <= 2, err
    assert not (tmp_path / "x.png").exists()


def test_unwritable_output(spoc_cube: str, tmp_path: Path) -> None:
    code, _, err = run_cli("plot", spoc_cube, "-o", str(tmp_path / "no-such-dir" / "x.png"))
    assert code == 1 and "x.png: cannot save the figure" in err and err.count("\n") == 1


def test_missing_matplotlib_is_one_clear_error(spoc_cube: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import io, sys
        sys.modules["matplotlib"] = None  # as if fficube[plot] were not installed
        from fficube.cli import main
        err = io.StringIO()
        code = main(["plot", {spoc_cube!r}, "-o", {str(tmp_path / 'x.png')!r}], err=err)
        print(code, err.getvalue(), end="")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 fficube: error: fficube plot needs matplotlib: pip install 'fficube[plot]'\n"


def test_request_bound_of_real_sector_sizes() -> None:
    prime = plan_sample((2078, 2136, 1300, 2), max_rows=DEFAULT_MAX_ROWS, max_bytes=DEFAULT_MAX_BYTES)
    assert prime.bound == 23 and len(prime.rows) <= 23 and "max_bytes" in prime.reason  # 22 MB rows
    fast = plan_sample((2078, 2136, 12000, 2), max_rows=DEFAULT_MAX_ROWS, max_bytes=DEFAULT_MAX_BYTES)
    assert fast.bound == 2 and len(fast.rows) == 2  # 205 MB rows
    huge_row = plan_sample((2078, 2136, 12000, 2), max_rows=64, max_bytes=1000)
    assert huge_row.bound == 1 and len(huge_row.rows) == 1  # one row, whatever the budget
    small = plan_sample((96, 120, 24, 2), max_rows=64, max_bytes=DEFAULT_MAX_BYTES)
    assert small.bound == 64 and small.rows == tuple(range(0, 96, 2))
    for rows in (1, 2, 7, 26, 97, 2078):
        for max_rows in (1, 3, 10, 64, 5000):
            plan = plan_sample((rows, 40, 5, 2), max_rows=max_rows, max_bytes=10**9)
            assert 1 <= len(plan.rows) <= min(rows, max_rows) == plan.bound
            assert len(set(plan.rows)) == len(plan.rows) and plan.rows[0] >= 0 and plan.rows[-1] < rows


# ----------------------------------------------------------------------------------
# What the figure says: each fix checked on the data behind the drawn artists.


def labels(ax, axis: str = "y") -> list[str]:
    return [t.get_text() for t in getattr(ax, f"get_{axis}ticklabels")()]


def test_thumbnail_pixels_are_square_and_centred(spoc_cube: str) -> None:
    result = fficube.plot_cube(spoc_cube, max_rows=10)  # 26 rows, 30 columns: every 3rd row
    o = result.overview
    assert o.plan.row_step == o.plan.col_step == 3
    assert set(np.diff(o.thumbnail_rows).tolist()) == set(np.diff(o.thumbnail_cols).tolist()) == {3}
    assert o.thumbnail_cols[0] == (30 - 1 - (len(o.thumbnail_cols) - 1) * 3) // 2  # equal margins
    left, right, bottom, top = result.image.get_extent()
    n_rows, n_cols = result.image.get_array().shape
    assert (right - left) / n_cols == (top - bottom) / n_rows == 3  # each drawn pixel is 3 x 3 FFI pixels


def test_time_axes_say_btjd_and_tjd(spoc_cube: str, tica_cube: str) -> None:
    spoc = fficube.plot_cube(spoc_cube)
    assert spoc.overview.time_scale == "BTJD"
    assert spoc.axes["coverage"].get_ylabel() == "TSTART (BTJD)"
    assert spoc.axes["report"].get_xlabel() == "TSTART (BTJD, days)"
    tica = fficube.plot_cube(tica_cube)
    assert tica.overview.time_scale == "TJD" and tica.axes["coverage"].get_ylabel() == "STARTTJD (TJD)"


def test_colour_bar_has_the_cube_unit(sector, tmp_path: Path, tica_cube: str) -> None:
    # SPOC FFIs without BUNIT: SPOC's calibrated unit; with one, the cube's own.
    paths = sector(n_ffis=3, shape=(12, 14), no_wcs=())
    plain = fficube.plot_cube(build(paths, tmp_path / "plain.fits"))
    assert plain.overview.unit == "e-/s" and "(e-/s)" in plain.axes["colorbar"].get_ylabel()
    assert plain.axes["level"].get_ylabel() == "median flux (e-/s)"
    for path in paths:
        with fits.open(path, mode="update") as hdul:
            hdul[1].header["BUNIT"] = ("electron/s", "physical units of image data")
    result = fficube.plot_cube(build(paths, tmp_path / "bunit.fits"))
    assert result.overview.unit == "electron/s" and "(electron/s)" in result.axes["colorbar"].get_ylabel()
    tica = fficube.plot_cube(tica_cube)  # TICA's header says UNITS = 'electrons'
    assert tica.overview.unit == "electrons" and "(electrons)" in tica.axes["colorbar"].get_ylabel()


def test_quality_bits_have_their_tess_names(sector, tmp_path: Path, tica_cube: str) -> None:
    paths = sorted(sector(n_ffis=4, shape=(12, 14), no_wcs=()))
    for path, value in zip(paths, (0, 1 | 32, 32, 4096), strict=True):
        with fits.open(path, mode="update") as hdul:
            hdul[1].header["DQUALITY"] = value
    result = fficube.plot_cube(build(paths, tmp_path / "q.fits"))
    quality = result.axes["quality"]
    assert labels(quality) == ["attitude tweak (1)", "desaturation event (32)", "stray light 2 (4096)"]
    (bits,) = [line for line in quality.lines if line.get_marker() == "s"]
    ffi_bits = sorted(zip(bits.get_xdata().tolist(), bits.get_ydata().tolist(), strict=True))
    starts = result.overview.starts
    assert ffi_bits == sorted([(starts[1], 0), (starts[1], 5), (starts[2], 5), (starts[3], 12)])
    # TICA's QUAL_BIT bits are not TESS's DQUALITY bits: values only.
    assert labels(fficube.plot_cube(tica_cube).axes["quality"]) == ["32"]


def test_flag_panel_labels_are_readable(spoc_cube: str, tmp_path: Path) -> None:
    _, table = read(spoc_cube)
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"ffis": [{"file": str(table["FFI_FILE"][2]), "time": 0.0, "flags": ["no_wcs"]}]}))
    result = fficube.plot_cube(spoc_cube, report=report)
    for name in ("quality", "report"):
        ticks = result.axes[name].get_yticklabels()
        assert ticks and all(t.get_fontsize() >= 8 for t in ticks), name


@pytest.mark.parametrize("shape", [(96, 120), (40, 40), (80, 30)])
def test_thumbnail_fills_its_half_of_the_figure(sector, tmp_path: Path, shape: tuple[int, int]) -> None:
    cube = build(sector(n_ffis=3, shape=shape, no_wcs=()), tmp_path / "c.fits")
    result = fficube.plot_cube(cube)
    figure = result.figure
    figure.canvas.draw()
    box, page = result.axes["thumbnail"].get_window_extent(), figure.bbox
    half = page.width * 1.3 / 2.3  # the thumbnail's column
    # The figure's height follows the image's shape: little height is left empty above
    # and below it, and its width or its height fills the column, whichever is the limit.
    assert box.height / page.height >= 0.65, (box, page)
    assert box.width / half >= 0.7 or box.height / page.height >= 0.8, (box, page)


def test_an_all_nan_frame_is_marked_on_the_level_curve(sector, tmp_path: Path) -> None:
    paths = sorted(sector(n_ffis=5, shape=(12, 14), no_wcs=()))
    with fits.open(paths[3], mode="update") as hdul:
        hdul[1].data[:] = np.nan
    result = fficube.plot_cube(build(paths, tmp_path / "nan.fits"))
    o = result.overview
    assert np.isnan(o.levels[3]) and not np.isnan(np.delete(o.levels, 3)).any()
    assert o.no_level.tolist() == [3]
    marks = [line for line in result.axes["level"].lines if line.get_label().startswith("no finite pixel")]
    assert len(marks) == 1 and marks[0].get_xdata().tolist() == [o.starts[3]]


def test_plot_with_statistics_draws_their_median_and_mask(sector, tmp_path: Path) -> None:
    from astropy.io import fits

    from fficube.views.plot import mask_colours

    paths = sector(n_ffis=6, shape=(20, 24), no_wcs=())
    for path in paths:  # a dead pixel and a pixel without data
        with fits.open(path, mode="update") as ffi:
            ffi[1].data[3, 4] = 5.0
            ffi[1].data[7, 8] = np.nan
    cube, stats = tmp_path / "cube.fits", tmp_path / "stats.fits"
    fficube.make_cube(paths, cube, pixel_stats=stats, stats_ffis="all")
    result = fficube.plot_cube(cube, tmp_path / "with-stats.png", stats=stats)
    median = result.axes["median"].images[0].get_array()
    with fits.open(stats) as hdus:
        assert np.array_equal(np.ma.getdata(median), hdus["MEDIAN"].data, equal_nan=True)
        shown = result.axes["mask"].images[0].get_array()
        assert np.array_equal(shown, mask_colours(hdus["MASK"].data))
    assert tuple(shown[7, 8]) != tuple(shown[3, 4]) != tuple(shown[0, 0])  # NO_DATA, CONSTANT, none
    legend = [t.get_text() for t in result.axes["mask"].get_legend().get_texts()]
    assert legend == ["NO_DATA (1): 1 px", "CONSTANT (2): 1 px", "SPARSE (4): 0 px"]
    code, _out, err = run_cli("plot", str(cube), "-o", str(tmp_path / "cli.png"), "--stats", str(cube))
    assert code == 1 and "not a statistics file (no MEDIAN and MASK images)" in err
