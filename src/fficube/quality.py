"""The quality gate: what is wrong with each FFI, found in the pass that builds the cube.

The builder sees every pixel once; the gate looks at a fixed sample of them as blocks
are assembled, and at the info table, and gives each FFI a list of flags (short
snake_case names, as in the JSON report of :mod:`fficube.report`):

``all_zero``
    Every finite sampled pixel is 0 (and at least one is finite).
``all_nonfinite``
    No sampled pixel is finite (all NaN or infinite).
``constant``
    Every finite sampled pixel has one and the same non-zero value (at least two are
    finite).  A frame of zeros is ``all_zero``, not ``constant``.
``bad_but_marked_good``
    One of the three above, while the FFI's quality column (``DQUALITY`` for SPOC,
    ``QUAL_BIT`` for TICA) is 0, "good".  A missing WCS is not counted here: FFIs
    without WCS are legitimately marked good.
``no_wcs``
    The FFI's header has no celestial WCS: ``CTYPE1``/``CTYPE2`` are not a
    longitude/latitude pair (``RA---TAN-SIP``/``DEC--TAN-SIP``).
``gap_before``
    The step from the previous FFI's start time is longer than :data:`GAP_FACTOR`
    (1.5) times the median step (the cadence).
``repeated_cadence``
    Another FFI of the cube has this FFI's cadence number (TICA: ``CADENCE``; SPOC:
    ``FFIINDEX``; 0, a missing value, is not compared): the same cadence delivered twice,
    under two names.  SPOC FFIs carry theirs in the primary header, which the info table
    does not hold: a build takes them from its scan; ``fficube verify --quality`` of a
    SPOC cube cannot make this check, and the result says so in its notes.

The gate is in three pure parts, which the build and ``fficube verify --quality`` share:

1. :func:`choose_sample`: the pixel sample, from the cube's shape alone (at most
   :data:`SAMPLE_ROWS` evenly spaced rows by :data:`SAMPLE_COLUMNS` evenly spaced
   columns of the science layer), so that a build and a later verify see the same
   pixels and give the same numbers.
2. :class:`SampleStats`: per-FFI accumulators fed a sampled row (or part of one) at a
   time, as big-endian values straight from a block or a cube row: the count of
   finite and of zero pixels, the smallest and largest finite value, and the values
   of a sub-grid of at most :data:`MEDIAN_PIXELS` pixels for the median.  Only the
   small sample is converted to native float32; about 4 kB per FFI
   (:func:`gate_bytes`, counted in the build's memory plan).
3. :func:`assess`: the statistics and the info table (the plan's encoded table at
   build time, the cube's at verify time) in, a frozen :class:`Quality` out.

:class:`QualityGate` is the build's observer: the assemble stage gives it each block
once the block is complete (in a worker thread, as the placement copies).  A resumed
build only sees the rows it writes: its sample is partial (:attr:`Quality.partial`),
and ``fficube verify --quality`` gives the full answer.  The gate never changes the cube.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ._version import __version__
from .products import Product
from .report import ReportEntry, report_document

__all__ = [
    "FLAGS",
    "PIXEL_FLAGS",
    "SAMPLE_ROWS",
    "SAMPLE_COLUMNS",
    "MEDIAN_PIXELS",
    "GAP_FACTOR",
    "PixelSample",
    "choose_sample",
    "SampleStats",
    "gate_bytes",
    "nanmedians",
    "sorted_medians",
    "QualityGate",
    "Gap",
    "find_gaps",
    "celestial_wcs",
    "FfiQuality",
    "Quality",
    "assess",
]

ALL_ZERO = "all_zero"
ALL_NONFINITE = "all_nonfinite"
CONSTANT = "constant"
BAD_BUT_MARKED_GOOD = "bad_but_marked_good"
NO_WCS = "no_wcs"
GAP_BEFORE = "gap_before"
REPEATED_CADENCE = "repeated_cadence"

#: Every flag the gate gives, in the order reports and summaries list them.
FLAGS: tuple[str, ...] = (ALL_ZERO, ALL_NONFINITE, CONSTANT, BAD_BUT_MARKED_GOOD, NO_WCS, GAP_BEFORE,
                          REPEATED_CADENCE)
#: The flags found in the pixels (the others come from the info table).
PIXEL_FLAGS: tuple[str, ...] = (ALL_ZERO, ALL_NONFINITE, CONSTANT)

#: Cube rows in the sample at most (evenly spaced, centred).
SAMPLE_ROWS = 64
#: Columns of each sampled row at most (evenly spaced, centred).
SAMPLE_COLUMNS = 256
#: Pixels per FFI whose values are kept for the median (a sub-grid of the sample).
MEDIAN_PIXELS = 1024
#: A step between consecutive start times longer than this many median cadences is a gap.
GAP_FACTOR = 1.5
#: FFIs converted at once: bounds the gate's scratch whatever the number of FFIs.
FFI_CHUNK = 1024
#: Scratch bytes per converted value (float32 values, finite and zero masks, masked copy).
SCRATCH_PER_VALUE = 12
#: FFIs whose medians are taken at once (nanmedian copies its input: about 1 MB).
MEDIAN_CHUNK = 256


# ----------------------------------------------------------------------------------
# The sample


def _spread(length: int, most: int) -> tuple[int, int, int]:
    """(first, step, count): at most ``most`` evenly spaced indices of ``range(length)``, centred."""
    if length <= 0:
        return 0, 1, 0
    step = -(-length // most)
    count = -(-length // step)
    first = (length - 1 - (count - 1) * step) // 2  # equal margins at both ends
    return first, step, count


@dataclass(frozen=True, slots=True)
class PixelSample:
    """The sampled pixels of the science layer: a grid of rows by columns.

    The median uses every ``median_step``-th sampled column of every sampled row.
    """

    rows: tuple[int, ...]  #: cube rows, increasing
    col_start: int
    col_step: int
    n_cols: int  #: sampled columns per row
    median_step: int

    @property
    def columns(self) -> range:
        """The sampled columns of each row."""
        return range(self.col_start, self.col_start + self.n_cols * self.col_step, self.col_step)

    @property
    def pixels(self) -> int:
        """Sampled pixels per FFI."""
        return len(self.rows) * self.n_cols

    @property
    def median_per_row(self) -> int:
        return len(range(0, self.n_cols, self.median_step))

    @property
    def median_pixels(self) -> int:
        """Pixels per FFI whose median is the FFI's level."""
        return len(self.rows) * self.median_per_row

    def rows_in(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(sample row index, cube row) of the sampled rows within ``start:stop``."""
        return [(i, row) for i, row in enumerate(self.rows) if start <= row < stop]

    def describe(self) -> dict[str, Any]:
        """The sample in words and numbers, for a report."""
        return {
            "layer": "science (0)",
            "rows": list(self.rows),
            "columns": {"start": self.col_start, "step": self.col_step, "count": self.n_cols},
            "pixels": self.pixels,
            "median_pixels": self.median_pixels,
            "median_every": self.median_step,  # the median's pixels: every k-th sampled column of each row
        }


def choose_sample(shape: Sequence[int]) -> PixelSample:
    """The pixel sample of a cube of ``shape`` (rows, cols, ...): from the shape alone."""
    rows, cols = int(shape[0]), int(shape[1])
    first_row, row_step, n_rows = _spread(rows, SAMPLE_ROWS)
    first_col, col_step, n_cols = _spread(cols, SAMPLE_COLUMNS)
    per_row = max(1, MEDIAN_PIXELS // max(1, n_rows))
    return PixelSample(
        rows=tuple(range(first_row, first_row + n_rows * row_step, row_step)),
        col_start=first_col, col_step=col_step, n_cols=n_cols, median_step=max(1, -(-n_cols // per_row)),
    )


# ----------------------------------------------------------------------------------
# Accumulators


class SampleStats:
    """Per-FFI statistics of the sampled pixels, accumulated a sampled row (or part) at a time.

    Each pixel must be added once; rows may come in any order (a resumed build, or
    reads that complete out of order).
    """

    def __init__(self, sample: PixelSample, n_ffis: int) -> None:
        self.sample = sample
        self.n_ffis = n_ffis
        self.finite = np.zeros(n_ffis, dtype=np.int32)
        self.zeros = np.zeros(n_ffis, dtype=np.int32)
        self.low = np.full(n_ffis, np.inf, dtype=np.float32)  #: smallest finite value
        self.high = np.full(n_ffis, -np.inf, dtype=np.float32)  #: largest finite value
        #: Values of the median sub-grid (NaN where not seen, or not finite).
        self.median_values = np.full((n_ffis, sample.median_pixels), np.nan, dtype=np.float32)
        self.seen = 0  #: sampled pixels seen (of every FFI)

    @staticmethod
    def nbytes(sample: PixelSample, n_ffis: int) -> int:
        """What the accumulators hold, and the scratch of one :meth:`add`."""
        per_ffi = 4 * 4 + 4 * sample.median_pixels
        return n_ffis * per_ffi + sample.n_cols * min(n_ffis, FFI_CHUNK) * SCRATCH_PER_VALUE

    def add(self, row_index: int, first_col: int, values: np.ndarray) -> None:
        """Add sampled pixels: ``values[k, f]`` is sampled column ``first_col + k`` of sample row
        ``row_index`` in FFI ``f`` (any float dtype and byte order; converted in chunks of FFIs)."""
        count, n = values.shape
        if count == 0:
            return
        step = self.sample.median_step
        first_median = -(-first_col // step) * step  # the first median column in this piece
        local = np.arange(first_median, first_col + count, step) - first_col
        positions = row_index * self.sample.median_per_row + (local + first_col) // step
        for f0 in range(0, n, FFI_CHUNK):
            f1 = min(n, f0 + FFI_CHUNK)
            chunk = np.asarray(values[:, f0:f1], dtype=np.float32)  # the one conversion: small
            finite = np.isfinite(chunk)
            self.finite[f0:f1] += finite.sum(axis=0, dtype=np.int32)
            self.zeros[f0:f1] += (chunk == 0).sum(axis=0, dtype=np.int32)
            masked = np.where(finite, chunk, np.float32(np.nan))
            with warnings.catch_warnings():  # all-NaN columns reduce to NaN, which fmin/fmax skip
                warnings.simplefilter("ignore", RuntimeWarning)
                np.fmin(self.low[f0:f1], np.fmin.reduce(masked, axis=0), out=self.low[f0:f1])
                np.fmax(self.high[f0:f1], np.fmax.reduce(masked, axis=0), out=self.high[f0:f1])
            if local.size:
                self.median_values[f0:f1, positions] = masked[local].T
        self.seen += count

    def medians(self) -> np.ndarray:
        """Each FFI's median of the finite values of its median sub-grid (NaN: none)."""
        out = np.full(self.n_ffis, np.nan)
        for f0 in range(0, self.n_ffis, MEDIAN_CHUNK):  # sorting copies: a few MB at a time
            out[f0 : f0 + MEDIAN_CHUNK] = nanmedians(self.median_values[f0 : f0 + MEDIAN_CHUNK])
        return out


def nanmedians(values: np.ndarray) -> np.ndarray:
    """Each row's ``np.nanmedian`` of a 2-D float array, bit for bit, in one sort.

    ``np.nanmedian(values, axis=1)`` computes rows of 600 values or more one at a time
    in Python (``apply_along_axis``): 0.24 s for 12,000 FFIs of 1,024 values, at the
    end of a build, against 0.02 s here.  (Its faster path for shorter rows averages
    an odd count's middle value with itself, which differs only past half the float32
    range.)  Every row is sorted at once (NaNs sort last) and its one or two middle
    values picked; two are averaged with ``np.mean`` as numpy's median averages them.
    """
    if values.shape[1] == 0:
        return np.full(len(values), np.nan)
    ordered = np.sort(values, axis=1)
    return sorted_medians(ordered, np.count_nonzero(~np.isnan(values), axis=1))


def sorted_medians(ordered: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Each row's ``np.nanmedian``, bit for bit, from the row sorted (NaNs last) and its
    number of finite values: the one or two middle values, two averaged with ``np.mean``
    as numpy's median averages them."""
    rows = np.arange(len(ordered))
    low = ordered[rows, np.maximum(count - 1, 0) // 2]
    high = ordered[rows, np.minimum(count // 2, ordered.shape[1] - 1)]
    with np.errstate(over="ignore", invalid="ignore"):  # inf (sum past float32) or NaN (inf - inf), as numpy
        pair = np.mean(np.stack([low, high], axis=1), axis=1)
    return np.where(count == 0, np.nan, np.where(count % 2 == 1, low, pair))


def gate_bytes(shape: Sequence[int]) -> int:
    """Memory the gate holds for a cube of ``shape`` (rows, cols, n_ffis, layers)."""
    return SampleStats.nbytes(choose_sample(shape), int(shape[2]))


class QualityGate:
    """The build's observer: feeds the sampled rows of each complete block to :class:`SampleStats`.

    The assemble stage calls :meth:`observe` once per block, in a worker thread, before
    the block goes to the writer; it reads the block and changes nothing.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.sample = choose_sample(shape)
        self.stats = SampleStats(self.sample, int(shape[2]))

    def wants(self, start: int, stop: int) -> bool:
        """Whether cube rows ``start:stop`` hold sampled rows."""
        return bool(self.sample.rows_in(start, stop))

    def observe(self, block: np.ndarray, start: int, stop: int) -> None:
        """Sample a block ``(rows, cols, n_ffis, layers)`` holding cube rows ``start:stop``."""
        s = self.sample
        columns = slice(s.col_start, s.col_start + s.n_cols * s.col_step, s.col_step)
        for index, row in s.rows_in(start, stop):
            self.stats.add(index, 0, block[row - start, columns, :, 0])

    def result(self, table: fits.BinTableHDU, product: Product,
               cadences: Sequence[int | None] | None = None) -> Quality:
        """The verdicts, given the cube's info table (and cadence numbers: :func:`assess`)."""
        return assess(self.stats, table, product, cadences)


# ----------------------------------------------------------------------------------
# Table checks


@dataclass(frozen=True, slots=True)
class Gap:
    """A pause in the time coverage: between FFI ``after`` and the next one."""

    after: int
    start: float  #: start time of FFI ``after``
    stop: float  #: start time of the next FFI

    @property
    def length(self) -> float:
        return self.stop - self.start


def find_gaps(starts: np.ndarray, factor: float = GAP_FACTOR) -> tuple[float, list[Gap]]:
    """The median cadence of ``starts`` (sorted) and the steps longer than ``factor`` times it."""
    steps = np.diff(np.asarray(starts, dtype=float))
    if steps.size == 0 or not np.isfinite(steps).any():
        return math.nan, []
    cadence = float(np.nanmedian(steps))
    return cadence, [
        Gap(int(i), float(starts[i]), float(starts[i + 1])) for i in np.flatnonzero(steps > factor * cadence)
    ]


def _axis_kind(ctype: str) -> str:
    kind = ctype.strip().upper().split("-")[0]
    if kind == "RA" or (len(kind) == 4 and kind.endswith("LON")):
        return "lon"
    if kind == "DEC" or (len(kind) == 4 and kind.endswith("LAT")):
        return "lat"
    return ""


def celestial_wcs(ctype1: str, ctype2: str) -> bool:
    """Whether ``CTYPE1``/``CTYPE2`` make a celestial WCS (a longitude and a latitude axis)."""
    return {_axis_kind(ctype1), _axis_kind(ctype2)} == {"lon", "lat"}


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


# ----------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True, slots=True)
class FfiQuality:
    """One FFI's verdict."""

    file: str
    time: float  #: start time (TSTART / STARTTJD), days
    flags: tuple[str, ...]
    median: float  #: median of the finite pixels of the median sub-grid (NaN: none, or not sampled)
    nan_fraction: float  #: non-finite share of the sampled pixels (NaN: none sampled)


@dataclass(frozen=True, slots=True)
class Quality:
    """What the gate found in a cube's FFIs (in time order)."""

    product: str
    ffis: tuple[FfiQuality, ...]
    cadence: float  #: median step between start times, days (NaN with fewer than 2 FFIs)
    sample: PixelSample
    pixels_seen: int  #: sampled pixels seen per FFI: ``sample.pixels`` unless partial
    quality_column: str | None  #: DQUALITY / QUAL_BIT, or None if the table has none
    #: Where the cadence numbers came from: an info-table column (CADENCE), the FFIs'
    #: headers (FFIINDEX), or None (not checked)
    cadence_column: str | None
    notes: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        """The pixel sample was not all seen (a resumed build writes only some rows)."""
        return self.pixels_seen < self.sample.pixels

    @property
    def counts(self) -> dict[str, int]:
        """FFIs per flag, every flag listed (in :data:`FLAGS` order)."""
        return {flag: sum(flag in f.flags for f in self.ffis) for flag in FLAGS}

    @property
    def flagged(self) -> list[FfiQuality]:
        """The FFIs with at least one flag."""
        return [f for f in self.ffis if f.flags]

    def summary(self) -> str:
        """One line: ``quality: 3 of 24 FFIs flagged: 1 all_zero (marked good), 1 no_wcs, 1 gap_before``."""
        counts = self.counts
        parts = []
        for flag in FLAGS:
            if flag == BAD_BUT_MARKED_GOOD or not counts[flag]:
                continue
            text = f"{counts[flag]} {flag}"
            if flag in PIXEL_FLAGS:
                good = sum(flag in f.flags and BAD_BUT_MARKED_GOOD in f.flags for f in self.ffis)
                if good:
                    text += " (marked good)" if good == counts[flag] else f" ({good} marked good)"
            parts.append(text)
        line = f"quality: {len(self.flagged)} of {len(self.ffis)} FFIs flagged" + (": " + ", ".join(parts)
                                                                                    if parts else "")
        if self.partial:
            rows = self.pixels_seen // max(1, self.sample.n_cols)
            line += (f" (partial pixel sample: {rows} of {len(self.sample.rows)} sampled rows were written "
                     "by this run; fficube verify --quality samples them all)")
        return line

    def report(self, **top: Any) -> dict[str, Any]:
        """The JSON report (:mod:`fficube.report`'s schema), ``top`` keys first (e.g. ``cube=``)."""
        entries = [ReportEntry(f.file, f.time, f.flags, f.median, f.nan_fraction) for f in self.ffis]
        summary = {
            "line": self.summary(),
            "ffis": len(self.ffis),
            "flagged": len(self.flagged),
            "counts": self.counts,
            "cadence_days": self.cadence,
            "gap_factor": GAP_FACTOR,
            "quality_column": self.quality_column,
            "cadence_column": self.cadence_column,
        }
        sample = {**self.sample.describe(), "pixels_seen": self.pixels_seen, "partial": self.partial}
        return report_document(entries, gate=f"fficube {__version__} quality gate", product=self.product,
                               **top, summary=summary, sample=sample, notes=list(self.notes))


def assess(stats: SampleStats | None, table: fits.BinTableHDU, product: Product,
           cadences: Sequence[int | None] | None = None) -> Quality:
    """Each FFI's flags from the sample statistics and the info table (one row per FFI).

    ``stats`` None (or with no pixel seen) makes no pixel check.  ``cadences``, each
    FFI's cadence number from its headers (None where unknown), serve where the info
    table has no cadence column (SPOC's ``FFIINDEX`` is in the primary header).
    """
    data = table.data
    names = table.columns.names
    n = len(data)
    files = [_text(v).strip() for v in data["FFI_FILE"]] if "FFI_FILE" in names else [""] * n
    starts = (np.asarray(data[product.time_keyword], dtype=float) if product.time_keyword in names
              else np.full(n, np.nan))
    flags: list[list[str]] = [[] for _ in range(n)]
    notes: list[str] = []
    sample = stats.sample if stats is not None else choose_sample((0, 0, n))
    seen = stats.seen if stats is not None else 0
    medians = np.full(n, np.nan)
    nan_fraction = np.full(n, np.nan)

    quality_column = product.quality_column if product.quality_column in names else None
    if quality_column is None:
        notes.append(f"no quality column ({product.quality_column or 'none for ' + product.name.upper()}) "
                     f"in the info table: {BAD_BUT_MARKED_GOOD} not checked")
    good = (np.asarray(data[quality_column]).astype(np.int64) == 0 if quality_column
            else np.zeros(n, dtype=bool))

    if stats is not None and seen:
        assert stats.n_ffis == n, "statistics of another cube"
        medians = stats.medians()
        nan_fraction = (seen - stats.finite) / seen
        pixel = {
            ALL_NONFINITE: stats.finite == 0,
            ALL_ZERO: (stats.finite > 0) & (stats.zeros == stats.finite),
            CONSTANT: (stats.finite > 1) & (stats.low == stats.high) & (stats.low != 0),
        }
        for flag in PIXEL_FLAGS:
            for i in np.flatnonzero(pixel[flag]):
                flags[i].append(flag)
        for i in np.flatnonzero(good & (pixel[ALL_NONFINITE] | pixel[ALL_ZERO] | pixel[CONSTANT])):
            flags[i].append(BAD_BUT_MARKED_GOOD)
    else:
        notes.append("no sampled pixel was seen: pixel checks not made")

    if "CTYPE1" in names and "CTYPE2" in names:
        for row, (c1, c2) in enumerate(zip(data["CTYPE1"], data["CTYPE2"], strict=True)):
            if not celestial_wcs(_text(c1), _text(c2)):
                flags[row].append(NO_WCS)
    else:
        notes.append("the info table has no CTYPE1/CTYPE2 columns: no FFI has a celestial WCS")
        for f in flags:
            f.append(NO_WCS)

    cadence, gaps = find_gaps(starts)
    for gap in gaps:
        flags[gap.after + 1].append(GAP_BEFORE)

    cadence_column = product.cadence_column if product.cadence_column in names else None
    numbers = None
    if cadence_column is not None:
        numbers = np.asarray(data[cadence_column]).astype(np.int64)
    elif cadences is not None and any(c is not None for c in cadences):
        assert len(cadences) == n, "cadence numbers of another cube"
        cadence_column = product.cadence_card[1]
        numbers = np.array([c or 0 for c in cadences], dtype=np.int64)
    else:
        where = (f"{product.cadence_column} is missing" if product.cadence_column else
                 f"{product.name.upper()} image headers carry none")
        notes.append(f"no cadence-number column in the info table ({where}): {REPEATED_CADENCE} not checked")
    if numbers is not None:
        values, counts = np.unique(numbers[numbers != 0], return_counts=True)
        repeated = values[counts > 1]
        for i in np.flatnonzero(np.isin(numbers, repeated)):
            flags[i].append(REPEATED_CADENCE)

    ffis = tuple(
        FfiQuality(files[i], float(starts[i]), tuple(f for f in FLAGS if f in flags[i]), float(medians[i]),
                   float(nan_fraction[i]))
        for i in range(n)
    )
    return Quality(product=product.name, ffis=ffis, cadence=cadence, sample=sample, pixels_seen=seen,
                   quality_column=quality_column, cadence_column=cadence_column, notes=tuple(notes))
