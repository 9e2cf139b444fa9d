"""The quality gate's pure parts (fficube.quality): the sample, the accumulators, the verdicts.

Small numpy arrays and hand-made info tables; builds are in test_quality_gate.py.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from astropy.io import fits

from fficube.errors import InputError
from fficube.plan import Limits, plan_memory
from fficube.products import SPOC, TICA
from fficube.quality import (
    FLAGS,
    MEDIAN_PIXELS,
    SAMPLE_COLUMNS,
    SAMPLE_ROWS,
    QualityGate,
    SampleStats,
    assess,
    celestial_wcs,
    choose_sample,
    gate_bytes,
    nanmedians,
)
from fficube.report import parse_report, read_report, write_report

CADENCE = 30 / 1440


def table(n: int, *, starts=None, dquality=None, ctype=None, cadence=None, product=SPOC) -> fits.BinTableHDU:
    """An info table of ``n`` FFIs with the columns the gate reads."""
    starts = np.arange(n) * CADENCE + 1325.0 if starts is None else np.asarray(starts, dtype=float)
    ctype1, ctype2 = ctype if ctype is not None else (["RA---TAN-SIP"] * n, ["DEC--TAN-SIP"] * n)
    columns = [
        fits.Column(name=product.time_keyword, format="D", array=starts),
        fits.Column(name="CTYPE1", format="A12", array=np.array(ctype1, dtype="S12")),
        fits.Column(name="CTYPE2", format="A12", array=np.array(ctype2, dtype="S12")),
        fits.Column(name=product.quality_column, format="J",
                    array=np.zeros(n, np.int32) if dquality is None else np.asarray(dquality, np.int32)),
        fits.Column(name="FFI_FILE", format="A12", array=np.array([f"ffi{i:03d}.fits" for i in range(n)], "S12")),
    ]
    if cadence is not None:
        columns.append(fits.Column(name="CADENCE", format="J", array=np.asarray(cadence, np.int32)))
    return fits.BinTableHDU.from_columns(columns)


def cube_of(frames: list[np.ndarray], layers: int = 2) -> np.ndarray:
    """A big-endian cube ``(rows, cols, n, layers)`` whose science layer holds ``frames``."""
    science = np.stack(frames, axis=-1)
    cube = np.empty((*science.shape, layers), dtype=">f4")
    cube[..., 0] = science
    cube[..., 1:] = 7.0
    return cube


def judged(frames, **kw) -> dict[str, tuple[str, ...]]:
    cube = cube_of(frames)
    gate = QualityGate(cube.shape)
    gate.observe(cube, 0, cube.shape[0])
    quality = gate.result(table(len(frames), **kw), kw.get("product", SPOC))
    return {f.file: f.flags for f in quality.ffis}


# ------------------------------------------------------------------------------------
# The sample


def test_the_sample_depends_on_the_shape_alone_and_is_bounded() -> None:
    full = choose_sample((2078, 2136, 1300, 2))
    assert full == choose_sample((2078, 2136, 5, 1))  # FFIs and layers do not matter
    assert len(full.rows) <= SAMPLE_ROWS and full.n_cols <= SAMPLE_COLUMNS and full.median_pixels <= MEDIAN_PIXELS
    assert len(full.rows) >= SAMPLE_ROWS // 2 and full.n_cols >= SAMPLE_COLUMNS // 2
    # Evenly spaced, centred: equal margins at both ends (within a step).
    steps = set(np.diff(full.rows))
    assert len(steps) == 1 and abs(full.rows[0] - (2077 - full.rows[-1])) <= 1
    assert full.columns[-1] < 2136 and abs(full.columns[0] - (2135 - full.columns[-1])) <= 1
    small = choose_sample((26, 30, 7, 2))
    assert small.rows == tuple(range(26)) and list(small.columns) == list(range(30))
    assert small.rows_in(10, 13) == [(10, 10), (11, 11), (12, 12)]


def test_accumulators_are_small_and_counted_in_the_memory_plan() -> None:
    # A 200-s sector: 12,000 FFIs.  A few kB per FFI, scratch bounded whatever the FFIs.
    assert gate_bytes((2078, 2136, 12000, 2)) / 12000 < 5000
    assert gate_bytes((2078, 2136, 12000, 2)) - gate_bytes((2078, 2136, 11000, 2)) < 1000 * 5000

    class Layer:
        itemsize, is_raw_float32 = 4, True

    class Ffi:
        layers = (Layer(), Layer())

    shape = (100, 120, 40, 2)
    on = plan_memory(shape, [Ffi()] * 40, 1000, Limits(max_memory=10**6, quality=True))[1]
    off = plan_memory(shape, [Ffi()] * 40, 1000, Limits(max_memory=10**6))[1]
    assert on.quality_bytes == gate_bytes(shape) and off.quality_bytes == 0
    assert on.total <= 10**6 and on.block_bytes <= off.block_bytes


# ------------------------------------------------------------------------------------
# Accumulators


def stats_of(values: np.ndarray, pieces: list[tuple[int, int, int]]) -> SampleStats:
    """``values`` (sample rows, sampled cols, n) added piece by piece: (row, first col, count)."""
    rows, cols, n = values.shape
    sample = choose_sample((rows, cols, n))
    stats = SampleStats(sample, n)
    for row, first, count in pieces:
        stats.add(row, first, values[row, first : first + count])
    return stats


def test_rows_in_pieces_and_any_order_give_the_same_statistics() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(100, 5, size=(12, 50, 9)).astype(np.float32)
    values[3, 7, 2] = np.nan
    values[5, :, 4] = np.inf
    values[:, :, 6] = 0
    whole = stats_of(values, [(r, 0, 50) for r in range(12)])
    pieces = [(r, a, b - a) for r in range(12) for a, b in ((0, 13), (13, 14), (14, 37), (37, 50))]
    rng.shuffle(pieces)
    split = stats_of(values.astype(">f4"), pieces)  # big-endian input, as in a block
    for name in ("finite", "zeros", "low", "high"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(split, name))
    np.testing.assert_array_equal(whole.medians(), split.medians())
    assert whole.seen == split.seen == 12 * 50
    assert whole.finite[2] == 12 * 50 - 1 and whole.finite[4] == 12 * 50 - 50 and whole.zeros[6] == 600
    # The median: of the finite values of the median sub-grid (here all of the sample).
    assert whole.sample.median_step == 1
    assert whole.medians()[0] == np.float32(np.median(values[:, :, 0]))


def test_the_gate_reads_the_sampled_rows_only_and_changes_nothing() -> None:
    rows, cols, n = 200, 40, 3
    sample = choose_sample((rows, cols, n))
    frames = [np.full((rows, cols), np.nan, np.float32) for _ in range(n)]
    for frame in frames:
        frame[list(sample.rows)] = 5.0 + np.arange(cols)  # only the sampled rows hold values
    cube = cube_of(frames)
    before = cube.copy()
    gate = QualityGate(cube.shape)
    for start in range(0, rows, 70):  # blocks of 70 rows, the last one short
        stop = min(rows, start + 70)
        assert gate.wants(start, stop)
        gate.observe(cube[start:stop], start, stop)
    np.testing.assert_array_equal(cube.view(np.uint32), before.view(np.uint32))
    quality = gate.result(table(n), SPOC)
    assert not quality.partial and all(f.flags == () and f.nan_fraction == 0 for f in quality.ffis)


# ------------------------------------------------------------------------------------
# Verdicts


def test_each_pixel_defect_is_flagged() -> None:
    rng = np.random.default_rng(2)
    shape = (20, 30)
    normal = rng.normal(150, 5, shape).astype(np.float32)
    zero = np.zeros(shape, np.float32)
    nan = np.full(shape, np.nan, np.float32)
    nan_and_inf = nan.copy()
    nan_and_inf[::3] = -np.inf
    constant = np.full(shape, 42.0, np.float32)
    zero_with_nans = zero.copy()
    zero_with_nans[:5] = np.nan
    constant_with_nans = constant.copy()
    constant_with_nans[1::2] = np.nan
    almost_zero = zero.copy()
    almost_zero[10, 10] = 1e-3
    flags = judged([normal, zero, nan, nan_and_inf, constant, zero_with_nans, constant_with_nans, almost_zero],
                   dquality=[0, 0, 128, 0, 0, 1, 0, 0])
    assert flags == {
        "ffi000.fits": (),
        "ffi001.fits": ("all_zero", "bad_but_marked_good"),
        "ffi002.fits": ("all_nonfinite",),  # marked bad: nothing hidden
        "ffi003.fits": ("all_nonfinite", "bad_but_marked_good"),
        "ffi004.fits": ("constant", "bad_but_marked_good"),
        "ffi005.fits": ("all_zero",),
        "ffi006.fits": ("constant", "bad_but_marked_good"),
        "ffi007.fits": (),
    }


def test_median_and_nan_fraction() -> None:
    frame = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    frame[:5] = np.nan  # a quarter of the rows
    cube = cube_of([frame, np.full((20, 30), np.nan, np.float32)])
    gate = QualityGate(cube.shape)
    gate.observe(cube, 0, 20)
    first, second = gate.result(table(2), SPOC).ffis
    assert first.nan_fraction == 0.25 and first.median == float(np.nanmedian(frame))
    assert second.nan_fraction == 1.0 and np.isnan(second.median)


def test_wcs_gaps_and_repeated_cadences_come_from_the_table() -> None:
    frames = [np.full((4, 5), float(i + 1), np.float32) + np.eye(4, 5, dtype=np.float32) for i in range(6)]
    starts = np.array([0, 1, 2, 3.4, 4.4, 6.0]) * CADENCE + 1325.0  # steps 1, 1, 1.4, 1, 1.6 cadences
    ctype = (["RA---TAN-SIP", "", "RA---TAN", "GLON-TAN", "RAWX", "DEC--TAN-SIP"],
             ["DEC--TAN-SIP", "", "DEC--TAN", "GLAT-TAN", "RAWY", "RA---TAN-SIP"])
    spoc = judged(frames, starts=starts, ctype=ctype)
    assert spoc == {
        "ffi000.fits": (), "ffi001.fits": ("no_wcs",), "ffi002.fits": (), "ffi003.fits": (),
        "ffi004.fits": ("no_wcs",), "ffi005.fits": ("gap_before",),  # 1.6 > 1.5 median cadences; 1.4 is not
    }
    tica = judged(frames, product=TICA, cadence=[100, 101, 101, 0, 0, 104])  # 0: no number, not compared
    assert [f for f, flags in tica.items() if "repeated_cadence" in flags] == ["ffi001.fits", "ffi002.fits"]
    assert celestial_wcs("DEC--TAN", "RA---TAN") and not celestial_wcs("RA---TAN", "RA---TAN")


def test_notes_say_what_was_not_checked() -> None:
    cube = cube_of([np.ones((4, 5), np.float32)] * 2)
    spoc = QualityGate(cube.shape)
    spoc.observe(cube, 0, 4)
    assert any("repeated_cadence not checked" in note and "SPOC" in note for note in spoc.result(table(2), SPOC).notes)
    bare = fits.BinTableHDU.from_columns([
        fits.Column(name="TSTART", format="D", array=[1.0, 2.0]),
        fits.Column(name="FFI_FILE", format="A5", array=["a", "b"]),
    ])
    quality = assess(None, bare, SPOC)
    assert [f.flags for f in quality.ffis] == [("no_wcs",), ("no_wcs",)]
    assert any("DQUALITY" in n for n in quality.notes) and any("pixel checks not made" in n for n in quality.notes)


def test_a_partial_sample_says_so() -> None:
    frames = [np.zeros((40, 10), np.float32), np.ones((40, 10), np.float32) + np.eye(40, 10, dtype=np.float32)]
    cube = cube_of(frames)
    gate = QualityGate(cube.shape)
    gate.observe(cube[20:], 20, 40)  # a resumed build wrote only these rows
    quality = gate.result(table(2), SPOC)
    assert quality.partial and quality.pixels_seen == 20 * 10
    assert "partial pixel sample: 20 of 40 sampled rows" in quality.summary()
    assert quality.ffis[0].flags == ("all_zero", "bad_but_marked_good")


def test_the_summary_line_counts_flags() -> None:
    zero = np.zeros((6, 8), np.float32)
    normal = np.arange(48, dtype=np.float32).reshape(6, 8)
    cube = cube_of([zero, zero, normal, normal])
    gate = QualityGate(cube.shape)
    gate.observe(cube, 0, 6)
    starts = np.array([0, 1, 2, 5]) * CADENCE
    ctype = (["RA---TAN"] * 3 + [""], ["DEC--TAN"] * 3 + [""])
    quality = gate.result(table(4, starts=starts, dquality=[0, 8, 0, 0], ctype=ctype), SPOC)
    assert quality.summary() == "quality: 3 of 4 FFIs flagged: 2 all_zero (1 marked good), 1 no_wcs, 1 gap_before"
    assert quality.counts == {"all_zero": 2, "all_nonfinite": 0, "constant": 0, "bad_but_marked_good": 1,
                              "no_wcs": 1, "gap_before": 1, "repeated_cadence": 0}
    assert list(quality.counts) == list(FLAGS)


# ------------------------------------------------------------------------------------
# The report: written in report.py's schema, read back by its reader


def test_the_report_round_trips_through_the_reader(tmp_path) -> None:
    frames = [np.zeros((6, 8), np.float32), np.full((6, 8), np.nan, np.float32),
              np.arange(48, dtype=np.float32).reshape(6, 8)]
    cube = cube_of(frames)
    gate = QualityGate(cube.shape)
    gate.observe(cube, 0, 6)
    quality = gate.result(table(3), SPOC)
    path = tmp_path / "report.json"
    write_report(path, quality.report(cube="cube.fits"))
    text = path.read_text()
    assert "NaN" not in text and text.count("\n") > 3  # strict JSON; one line per FFI
    read = read_report(path)
    assert [(e.file, e.flags) for e in read.entries] == [(f.file, f.flags) for f in quality.ffis]
    assert [e.time for e in read.entries] == [f.time for f in quality.ffis]
    assert read.entries[0].median == 0.0 and read.entries[1].median is None and read.entries[1].nan_fraction == 1.0
    assert read.entries[2].median == quality.ffis[2].median
    assert read.meta["summary"]["counts"]["all_zero"] == 1 and read.meta["cube"] == "cube.fits"
    assert read.meta["sample"]["pixels"] == 48 and read.meta["sample"]["partial"] is False
    json.loads(text)


def test_the_reader_still_takes_minimal_reports_and_checks_the_numbers() -> None:
    minimal = parse_report({"ffis": [{"file": "a.fits", "time": 1.0, "flags": ["x"]}]}, source="r.json")
    assert minimal.entries[0].median is None and minimal.meta == {}
    with pytest.raises(InputError, match=r'"ffis"\[0\]: "median" must be a number or null'):
        parse_report({"ffis": [{"file": "a.fits", "time": 1.0, "flags": [], "median": "high"}]}, source="r.json")


@pytest.mark.parametrize("width", [0, 1, 2, 5, 64, 599, 600, 601, 1024])
def test_nanmedians_equal_numpys_nanmedian_bit_for_bit(width: int) -> None:
    """Each row's median is numpy's of that row. Every row: no NaN, some, all; odd and even counts; ties, infinities and values
    whose sum overflows float32 (numpy's mean of the two middle values then gives inf)."""
    rng = np.random.default_rng(width)
    values = rng.normal(100, 30, size=(400, width)).astype(np.float32)
    values[:, : width // 3] = np.round(values[:, : width // 3])  # ties
    for row in range(len(values)):
        share = rng.choice([0.0, 0.0, 0.1, 0.5, 0.99, 1.0])
        values[row, rng.random(width) < share] = np.nan
    values[rng.random(values.shape) < 0.01] = np.inf
    values[rng.random(values.shape) < 0.01] = -np.inf
    values[-4:] = np.float32(3e38)  # the middle pair overflows
    values[-2:, ::2] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.array([np.nanmedian(row) if width else np.nan for row in values])
    got = nanmedians(values)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype.kind == "f"
    assert np.array_equal(got.astype(np.float32), np.asarray(expected, dtype=np.float32), equal_nan=True)
