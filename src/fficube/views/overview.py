"""What ``fficube plot`` shows, read from a cube with a bounded number of requests.

Reading is separate from drawing (:mod:`fficube.views.plot`), so the numbers behind the
figure can be checked and used without matplotlib.

**Requests.**  The headers and the info table are read as ``fficube inspect`` reads
them (a handful of ranged reads: :func:`fficube.cubeinfo.scan_cube`).  Pixels come from a
strided sample of cube rows, one request per row: a cube row is contiguous in the file
and holds every FFI of that row, so one read serves both the thumbnail (the asked
frame's pixels of that row) and the per-FFI levels (a sample of that row's pixels in
every FFI).  The number of row reads is at most::

    min(rows, max_rows, max(1, max_bytes // row_bytes))

which :func:`plan_sample` computes before anything is read; the bytes read are at most
``max(max_bytes, one row)`` plus the headers and table, and so is the memory, plus a
sample of :data:`LEVEL_PIXELS` pixels per FFI.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from astropy.io import fits

from .._aio import run_tasks
from ..access import CubeInfo, cube_path, cube_source, scan_cube
from ..errors import FitsFormatError, InputError
from ..layout import row_bytes
from ..quality import GAP_FACTOR, Gap, celestial_wcs, find_gaps
from ..report import QualityReport, ReportEntry, match_report, read_report
from ..units import format_bytes

__all__ = [
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MAX_BYTES",
    "LEVEL_PIXELS",
    "GAP_FACTOR",
    "SamplePlan",
    "Gap",
    "CubeOverview",
    "plan_sample",
    "find_gaps",
    "set_bits",
    "TESS_QUALITY_BITS",
    "bit_label",
    "wcs_header",
    "read_overview",
]

#: Cube rows read at most by default (one request each).
DEFAULT_MAX_ROWS = 64
#: Bytes of cube rows read at most by default.  A prime-mission row (2136 columns x
#: 1300 FFIs x 2 layers) is 22 MB, so this reads 23 of them.
DEFAULT_MAX_BYTES = 512 * 10**6
#: Pixels per FFI in the sample whose median is the FFI's level.
LEVEL_PIXELS = 1024
#: The TESS quality flags (SPOC's ``DQUALITY``), by bit value, as the TESS Science Data
#: Products Description Document (Table 28) and lightkurve's ``TessQualityFlags`` name them.
TESS_QUALITY_BITS = {
    1: "attitude tweak",
    2: "safe mode",
    4: "coarse point",
    8: "Earth point",
    16: "Argabrightening",
    32: "desaturation event",
    64: "aperture cosmic ray",
    128: "manual exclude",
    256: "discontinuity",
    512: "impulsive outlier",
    1024: "collateral cosmic ray",
    2048: "stray light",
    4096: "stray light 2",
    8192: "planet search exclude",
    16384: "bad calibration exclude",
    32768: "insufficient targets",
}
#: The flux unit of a product whose info table has no ``BUNIT`` (SPOC's calibrated FFIs
#: are in electrons per second).
_DEFAULT_UNIT = {"spoc": "e-/s"}
#: Table columns that are no WCS keyword, whatever their name (structure, text, checksums).
_NOT_WCS = frozenset({"XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "PCOUNT", "GCOUNT", "TFIELDS",
                      "SIMPLE", "EXTEND", "COMMENT", "HISTORY", "CHECKSUM", "DATASUM", "FFI_FILE"})


@dataclass(frozen=True, slots=True)
class SamplePlan:
    """Which cube rows are read, and which of their columns are kept."""

    rows: tuple[int, ...]  #: cube rows read, one request each, in increasing order
    row_step: int
    #: thumbnail columns: every ``col_step``-th from ``col_start``; the same stride as the
    #: rows, so that each thumbnail pixel stands for a square of the FFI
    col_step: int
    col_start: int
    level_col_step: int  #: level sample: every ``level_col_step``-th column of each row read
    bound: int  #: row reads at most (computed before reading)
    reason: str  #: which limit set the bound, in words


def plan_sample(shape: tuple[int, int, int, int], *, max_rows: int, max_bytes: int) -> SamplePlan:
    """Choose the rows to read: evenly spaced, centred, as many as the limits allow.

    The thumbnail keeps the columns at the rows' stride (square pixels), centred too.

    Parameters
    ----------
    shape
        The cube's (rows, cols, n_ffis, layers).
    max_rows
        Rows read at most.
    max_bytes
        Bytes of rows read at most; one row is read even if it is larger.

    Raises
    ------
    InputError
        If ``max_rows`` or ``max_bytes`` is not positive.
    """
    rows, cols = shape[0], shape[1]
    if max_rows < 1 or max_bytes < 1:
        raise InputError(f"max_rows and max_bytes must be positive, not {max_rows} and {max_bytes}")
    row = row_bytes(shape)
    by_bytes = max(1, max_bytes // row)
    bound = max(1, min(rows, max_rows, by_bytes))
    if bound == rows:
        reason = f"all {rows} rows"
    elif bound == max_rows and max_rows <= by_bytes:
        reason = f"max_rows = {max_rows} of {rows} rows"
    else:
        reason = f"max_bytes = {format_bytes(max_bytes)} / {format_bytes(row)} per row"
    step = -(-rows // bound)
    count = -(-rows // step)
    first = (rows - 1 - (count - 1) * step) // 2  # centred: equal margins top and bottom
    picked = tuple(range(first, rows, step))
    per_row = max(1, LEVEL_PIXELS // len(picked))
    col_count = -(-cols // step)
    return SamplePlan(
        rows=picked,
        row_step=step,
        col_step=step,
        col_start=(cols - 1 - (col_count - 1) * step) // 2,
        level_col_step=max(1, -(-cols // per_row)),
        bound=bound,
        reason=reason,
    )


def set_bits(values: np.ndarray) -> list[tuple[int, int]]:
    """(FFI index, bit number) for every bit set in each FFI's quality value (bit 0 = 1)."""
    ints = np.asarray(values).astype(np.int64)
    return [(int(i), b) for b in range(63) for i in np.flatnonzero(ints & (1 << b))]


def bit_label(column: str | None, bit: int) -> str:
    """A quality bit's label: its TESS name and value for ``DQUALITY`` (``"desaturation
    event (32)"``), the value alone for other columns, whose bits TESS does not define."""
    value = 1 << bit
    name = TESS_QUALITY_BITS.get(value) if column == "DQUALITY" else None
    return f"{name} ({value})" if name else str(value)


def wcs_header(table: fits.FITS_rec, frame: int) -> tuple[fits.Header | None, int | None]:
    """The WCS cards of one row of the info table (its columns are header keywords).

    The frame's own row is used when its FFI had a WCS.  Otherwise the rows are tried
    from the middle of the table outwards (the middle row, then its neighbours, the
    earlier one first at equal distance) and the first with a WCS is used, as astrocut
    searches for its template: the row found is the one nearest the middle, not
    necessarily the one nearest the frame.

    Returns
    -------
    header, row
        ``(None, None)`` when no row has celestial ``CTYPE1``/``CTYPE2``.
    """
    names = table.columns.names
    if "CTYPE1" not in names or "CTYPE2" not in names:
        return None, None
    n = len(table)
    middle = n // 2
    around = sorted(range(n), key=lambda i: (abs(i - middle), i))
    for row in [frame, *around]:
        if celestial_wcs(*(str(table[k][row]) for k in ("CTYPE1", "CTYPE2"))):
            return _row_header(table, row), row
    return None, None


def _row_header(table: fits.FITS_rec, row: int) -> fits.Header:
    header = fits.Header()
    for name in table.columns.names:
        if name in _NOT_WCS or len(name) > 8:
            continue
        value: Any = table[name][row]
        if isinstance(value, (bytes, np.bytes_)):
            value = value.decode("ascii", "replace")
        if isinstance(value, str):
            value = value.strip()
        elif isinstance(value, (np.bool_, bool)):
            value = bool(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            if not np.isfinite(value):
                continue  # the keyword was missing from this FFI's header
            value = float(value)
        else:
            continue
        try:
            header[name] = value
        except (ValueError, KeyError):  # not a valid card: not a WCS keyword either
            continue
    return header


@dataclass(frozen=True)
class CubeOverview:
    """The numbers behind the overview figure of one cube."""

    path: str
    product: str
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    sector: object
    camera: object
    ccd: object
    files: list[str]  #: FFI file names, in time order
    starts: np.ndarray  #: start times (TSTART / STARTTJD), days
    stops: np.ndarray  #: stop times (TSTOP / ENDTJD), days
    time_columns: tuple[str, str]
    time_scale: str  #: what the times count: ``"BTJD"`` (SPOC: BJD - 2457000) or ``"TJD"`` (TICA)
    unit: str  #: the flux unit: the frame's ``BUNIT`` (TICA: ``UNITS``), else the product's; "" if unknown
    cadence: float  #: median step between start times, days
    gaps: list[Gap]
    quality_column: str | None  #: DQUALITY (SPOC), QUAL_BIT (TICA) or None
    quality: np.ndarray | None  #: each FFI's quality value
    frame: int
    thumbnail: np.ndarray  #: the frame's flux at ``thumbnail_rows`` x ``thumbnail_cols``
    thumbnail_rows: np.ndarray
    thumbnail_cols: np.ndarray
    levels: np.ndarray  #: per FFI: median flux of the pixel sample
    level_pixels: int  #: pixels in that sample
    wcs_header: fits.Header | None
    wcs_row: int | None  #: the table row the WCS comes from
    report: QualityReport | None
    report_flags: list[tuple[int, str]]  #: (FFI index, flag)
    report_unmatched: list[ReportEntry]
    plan: SamplePlan
    header_requests: int  #: requests for headers and table
    requests: int  #: all requests (retries included)
    bytes_read: int
    notes: tuple[str, ...] = field(default=())

    @property
    def n_ffis(self) -> int:
        return self.shape[2]

    @property
    def sample_rows(self) -> tuple[int, ...]:
        return self.plan.rows

    @property
    def row_request_bound(self) -> int:
        return self.plan.bound

    @property
    def bound_reason(self) -> str:
        return self.plan.reason

    @property
    def set_bits(self) -> list[tuple[int, int]]:
        """(FFI index, bit number) of every quality bit set."""
        return [] if self.quality is None else set_bits(self.quality)

    @property
    def no_level(self) -> np.ndarray:
        """Indices of the FFIs whose level is NaN: no finite pixel in their sample."""
        return np.flatnonzero(np.isnan(self.levels))


def _frame_index(frame: int | None, n: int, path: str) -> int:
    if frame is None:
        return n // 2
    index = frame + n if frame < 0 else frame
    if not 0 <= index < n:
        raise InputError(f"frame {frame} is out of range: the cube has {n} FFIs (0 to {n - 1})", path=path)
    return index


def _unit(cube: CubeInfo, frame: int) -> str:
    for key in ("BUNIT", "UNITS"):
        if key in cube.table.columns.names:
            value = cube.table.data[key][frame]
            text = (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()
            if text:
                return text
    return _DEFAULT_UNIT.get(cube.product.name, "")


def _column(cube: CubeInfo, name: str) -> np.ndarray:
    if name in cube.table.columns.names:
        return np.asarray(cube.table.data[name], dtype=float)
    return np.full(cube.shape[2], np.nan)


async def read_overview(
    cube: str | os.PathLike[str],
    *,
    frame: int | None = None,
    report: str | os.PathLike[str] | QualityReport | None = None,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    concurrency: int = 8,
) -> CubeOverview:
    """Read what the overview figure shows: headers, table and a sample of rows.

    Parameters
    ----------
    cube
        A cube file or URL (``s3://...``).
    frame
        The FFI (0-based, time order; negative counts from the end) of the thumbnail;
        default the middle one.
    report
        A quality report (path or :class:`~fficube.report.QualityReport`), or None.
    anon, storage_options
        As for :func:`fficube.build_cube`.
    max_rows, max_bytes
        Limits of the row sample (see :func:`plan_sample`).
    concurrency
        Requests in flight at most.

    Returns
    -------
    CubeOverview

    Raises
    ------
    InputError
        If ``frame`` is out of range or the report does not fit its schema.
    FitsFormatError
        If the file is not a cube in fficube's (astrocut's) format.
    """
    path = cube_path(cube)
    loaded = read_report(report) if report is not None and not isinstance(report, QualityReport) else report
    async with cube_source(path, anon=anon, storage_options=storage_options, concurrency=concurrency) as source:
        info = await scan_cube(source, path)
        header_requests = source.stats.requests
        _rows, cols, n, layers = info.shape
        index = _frame_index(frame, n, path)
        plan = plan_sample(info.shape, max_rows=max_rows, max_bytes=max_bytes)
        thumb_cols = np.arange(plan.col_start, cols, plan.col_step)
        level_cols = np.arange(0, cols, plan.level_col_step)
        thumbnail = np.empty((len(plan.rows), thumb_cols.size), dtype=np.float32)
        sample = np.empty((len(plan.rows), level_cols.size, n), dtype=np.float32)

        async def read_row(i: int, row: int) -> None:
            start = info.data_offset + row * info.row_bytes
            data = await source.read(path, start, start + info.row_bytes)
            if len(data) < info.row_bytes:
                raise FitsFormatError("the cube's data is cut short: truncated", path=path,
                                      byte_range=(start, start + info.row_bytes))
            pixels = np.frombuffer(data, dtype=">f4").reshape(cols, n, layers)
            thumbnail[i] = pixels[plan.col_start::plan.col_step, index, 0]
            sample[i] = pixels[::plan.level_col_step, :, 0]

        await run_tasks(read_row(i, row) for i, row in enumerate(plan.rows))
        requests, bytes_read = source.stats.requests, source.stats.bytes_read

    with warnings.catch_warnings():  # an FFI whose sample is all NaN gets NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        levels = np.nanmedian(sample.reshape(-1, n), axis=0)
    start_key, stop_key = info.product.time_keyword, info.product.stop_keyword
    starts, stops = _column(info, start_key), _column(info, stop_key)
    cadence, gaps = find_gaps(starts)
    names = info.table.columns.names
    quality_column = info.product.quality_column if info.product.quality_column in names else None
    quality = np.asarray(info.table.data[quality_column]) if quality_column else None
    header, wcs_row = wcs_header(info.table.data, index)
    notes = []
    if quality_column is None:
        notes.append(f"no quality column ({info.product.quality_column}) in the info table")
    if header is None:
        notes.append("no FFI of the cube has a celestial WCS: the thumbnail is on pixel axes")
    flags: list[tuple[int, str]] = []
    unmatched: list[ReportEntry] = []
    if loaded is not None:
        flags, unmatched = match_report(loaded, info.names, starts)
        if unmatched:
            notes.append(f"{len(unmatched)} report entr{'y' if len(unmatched) == 1 else 'ies'} name no FFI of "
                         f"the cube (first: {unmatched[0].file})")
    primary = fits.Header.fromstring(info.primary_header)
    cam_key, ccd_key = info.product.camera_keywords
    return CubeOverview(
        path=path, product=info.product.name, shape=info.shape, sector=primary.get("SECTOR"),
        camera=primary.get(cam_key), ccd=primary.get(ccd_key), files=info.names, starts=starts, stops=stops,
        time_columns=(start_key, stop_key), time_scale=info.product.time_units.split()[0],
        unit=_unit(info, index), cadence=cadence, gaps=gaps, quality_column=quality_column,
        quality=quality, frame=index, thumbnail=thumbnail, thumbnail_rows=np.asarray(plan.rows),
        thumbnail_cols=thumb_cols, levels=levels, level_pixels=int(sample.shape[0] * sample.shape[1]),
        wcs_header=header, wcs_row=wcs_row, report=loaded, report_flags=flags, report_unmatched=unmatched,
        plan=plan, header_requests=header_requests, requests=requests, bytes_read=bytes_read, notes=tuple(notes),
    )
