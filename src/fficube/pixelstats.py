"""Per-pixel statistics over time: a median image, a robust scatter, coverage and a mask.

A cube build is the one moment when every time sample of a block of pixels is in
memory at once, already transposed so that a pixel's time series is contiguous: the
statistics cost one more pass over memory that is already there, within the same
budget, and no byte is read twice.  ``fficube stats`` makes the same images from a
finished cube (any astrocut-format cube, MAST's included) in a bounded-memory pass by
row blocks; an interrupted and resumed build recomputes the rows it did not see
from the finished cube the same way.

The images (``STATS.fits``: :func:`stats_hdus`), each of the cube's rows x columns with
the cube's WCS (the info-table row astrocut takes for its cutouts):

``MEDIAN``
    ``numpy.nanmedian`` over time of the science layer, over the FFIs used (float32).
``SIGMA``
    1.4826 x the median absolute deviation from that median, same samples (float32):
    the standard deviation for Gaussian noise, untouched by a few outliers.
``NGOOD``
    Finite samples among the FFIs used (int16, int32 past 32,767 FFIs).
``MASK``
    Bits (uint8), documented in :data:`MASK_BITS`.

Which FFIs are used (``ffis="good"``, the default): those whose quality flags are 0
(``DQUALITY`` for SPOC, ``QUAL_BIT`` for TICA) and, row by row, not a frame that the
quality gate would call bad: a frame's cube row that is all zero or constant is left
out of that row's statistics (all-NaN rows count for nothing anyway).  Row by row,
not block by block, so that the result does not depend on how the cube was read: a
build, an update and ``fficube stats`` give the same images.  ``ffis="all"`` uses
every sample.  The ``FFIS`` table of the file says, per FFI, whether it was used and
how many of its rows the frame checks left out.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ._aio import task_group
from ._version import __version__
from .durable import sync_directory
from .errors import OptionError, OutputError, os_reason
from .layout import row_bytes
from .products import Product
from .quality import sorted_medians

__all__ = [
    "FFI_CHOICES", "MASK_BITS", "NO_DATA", "CONSTANT", "SPARSE", "SIGMA_SCALE",
    "STATS_THREADS", "FfiSelection", "select_ffis", "PixelStats", "stats_bytes", "stats_hdus", "write_stats",
    "cube_wcs", "stats_rows", "add_from_cube", "check_stats_target", "stats_writer", "StatsResult", "cube_stats",
]

#: What ``--stats-ffis`` takes.
FFI_CHOICES = ("good", "all")
#: The scale that makes a median absolute deviation a standard deviation for Gaussian noise.
SIGMA_SCALE = 1.4826
#: ``MASK`` bits.
NO_DATA = 1
CONSTANT = 2
SPARSE = 4
MASK_BITS: dict[int, str] = {
    NO_DATA: "NO_DATA: no finite sample among the FFIs used",
    CONSTANT: "CONSTANT: two or more finite samples, all equal (a dead or stuck pixel, or a filled gap)",
    SPARSE: "SPARSE: finite in fewer than half of the FFIs used (the statistics rest on few samples)",
}
#: Pixel samples (pixels x FFIs) worked on at once: the scratch is a few of these.
CHUNK_VALUES = 2**18
#: Scratch arrays of :data:`CHUNK_VALUES` float32 values held at once by one thread
#: (samples, sorted copy, deviations, their sorted copy).
SCRATCH_ARRAYS = 4
#: Threads that work on the rows of one block at once in a build (the sorts release the
#: GIL): on two cores, 100 full-size FFIs at 1 GB to disk, 1.75x -> 1.54x the build's
#: wall time without statistics.
STATS_THREADS = max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class FfiSelection:
    """Which of a cube's FFIs the statistics use, and why the others are not."""

    choice: str  #: "good" or "all"
    used: tuple[bool, ...]  #: per cube FFI, in time order
    reasons: tuple[str, ...]  #: per cube FFI: why it is not used ("" if it is)

    @property
    def n_used(self) -> int:
        return sum(self.used)


def select_ffis(table: fits.BinTableHDU | fits.FITS_rec, product: Product, choice: str = "good") -> FfiSelection:
    """The FFIs a statistics pass uses, from the cube's info table (one row per FFI).

    Raises
    ------
    OptionError
        If ``choice`` is not one of :data:`FFI_CHOICES`.
    """
    if choice not in FFI_CHOICES:
        raise OptionError("stats_ffis", f"{choice!r} is not one of {', '.join(FFI_CHOICES)}")
    data = table.data if isinstance(table, fits.BinTableHDU) else table
    n = len(data)
    column = product.quality_column
    if choice == "all" or not column or column not in data.columns.names:
        return FfiSelection(choice, (True,) * n, ("",) * n)
    flags = np.asarray(data[column]).astype(np.int64)
    reasons = tuple("" if f == 0 else f"{column} = {int(f)}" for f in flags)
    return FfiSelection(choice, tuple(f == 0 for f in flags), reasons)


def stats_bytes(shape: Sequence[int]) -> int:
    """Memory a statistics pass holds for a cube of ``shape``: the four images and the scratch."""
    rows, cols, n = int(shape[0]), int(shape[1]), int(shape[2])
    return rows * cols * (4 + 4 + 4 + 1) + STATS_THREADS * SCRATCH_ARRAYS * 4 * min(CHUNK_VALUES, rows * cols * n)


class PixelStats:
    """Per-pixel statistics of a cube, filled block by block (any blocks, any order).

    Parameters
    ----------
    shape
        The cube's ``(rows, cols, n_ffis, layers)``.
    selection
        The FFIs to use (:func:`select_ffis`).
    """

    def __init__(self, shape: Sequence[int], selection: FfiSelection) -> None:
        rows, cols, n = int(shape[0]), int(shape[1]), int(shape[2])
        if len(selection.used) != n:
            raise ValueError(f"a selection of {len(selection.used)} FFIs for a cube of {n}")
        self.shape = (rows, cols, n)
        self.selection = selection
        self.used = np.flatnonzero(selection.used)
        # Big-endian, as FITS stores them: the file is written without a swapped copy.
        self.median = np.full((rows, cols), np.nan, dtype=">f4")
        self.sigma = np.full((rows, cols), np.nan, dtype=">f4")
        self.ngood = np.zeros((rows, cols), dtype=">i2" if self.used.size <= np.iinfo(np.int16).max else ">i4")
        self.mask = np.zeros((rows, cols), dtype=np.uint8)
        self.seen = np.zeros(rows, dtype=bool)  #: rows whose statistics are made
        self.rows_left_out = np.zeros(n, dtype=np.int64)  #: per FFI, rows the frame checks left out
        self.error: Exception | None = None  #: what stopped them during a build (the cube is not affected)
        self._lock = threading.Lock()

    def missing(self) -> list[tuple[int, int]]:
        """Row ranges ``(start, stop)`` not seen yet."""
        edges = np.flatnonzero(np.diff(np.concatenate([[True], self.seen, [True]]).astype(np.int8)))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]

    def add(self, block: np.ndarray, start: int, stop: int, stop_event: threading.Event | None = None) -> None:
        """Make the statistics of cube rows ``start:stop`` from ``block``
        ``(>= stop - start rows, cols, n_ffis, layers)`` (any byte order; only read).

        Blocking, in chunks of :data:`CHUNK_VALUES` samples; returns early once
        ``stop_event`` is set (a cancelled build).  Threads may work on different rows
        at once (numpy's sorts release the GIL).
        """
        _rows, cols, _n = self.shape
        used = self.used
        science = block[: stop - start, :, :, 0]
        if used.size == 0:
            self.mask[start:stop] = NO_DATA
            self.seen[start:stop] = True
            return
        # Frames whose row is all zero or constant (the quality gate's frame checks), row by row.
        check = self.selection.choice == "good"
        every = used.size == self.shape[2]  # all FFIs used: slices, not an index, so one copy

        def samples(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
            window = science[r0:r1, c0:c1]
            return window if every else window[:, :, used]

        for r0, r1, windows in _chunks(stop - start, cols, used.size):
            if stop_event is not None and stop_event.is_set():
                return
            first = samples(r0, r1, *windows[0]).astype(np.float32)  # a native-order copy
            bad = None
            if check:
                lo, hi = np.fmin.reduce(first, axis=1), np.fmax.reduce(first, axis=1)
                for c0, c1 in windows[1:]:  # a row wider than a chunk: its other columns first
                    more = samples(r0, r1, c0, c1)
                    lo, hi = np.fmin(lo, np.fmin.reduce(more, axis=1)), np.fmax(hi, np.fmax.reduce(more, axis=1))
                bad = np.asarray(lo == hi)  # (rows, FFIs used); a row of one finite value is constant too
                if bad.any():
                    with self._lock:  # the one array that threads working on other rows share
                        np.add.at(self.rows_left_out, used, bad.sum(axis=0))
            # FFIs used in each row: SPARSE is judged against these.
            in_row = np.full(r1 - r0, used.size) if bad is None else used.size - bad.sum(axis=1)
            for i, (c0, c1) in enumerate(windows):
                values = first if i == 0 else samples(r0, r1, c0, c1).astype(np.float32)
                if bad is not None and bad.any():
                    values[np.broadcast_to(bad[:, None, :], values.shape)] = np.nan
                self._chunk(values, in_row, start + r0, c0)
        self.seen[start:stop] = True

    def _chunk(self, values: np.ndarray, in_row: np.ndarray, r0: int, c0: int) -> None:
        """The statistics of samples ``values`` (rows, cols, FFIs used) of the window at cube
        row ``r0``, column ``c0``; ``in_row``: the FFIs used in each of its rows."""
        n_rows, n_cols, n_used = values.shape
        r1, c1 = r0 + n_rows, c0 + n_cols
        flat = values.reshape(-1, n_used)
        # The sort gives the median, the count and the extremes (CONSTANT) at once.
        ordered = np.sort(flat, axis=1)
        finite = n_used - np.count_nonzero(np.isnan(ordered), axis=1)
        median = sorted_medians(ordered, finite).astype(np.float32)
        pixels = np.arange(len(ordered))
        lo, hi = ordered[:, 0], ordered[pixels, np.maximum(finite - 1, 0)]  # NaNs sort last
        with np.errstate(invalid="ignore"):
            deviation = np.subtract(flat, median[:, None])
            np.abs(deviation, out=deviation)
        spread = finite
        if np.isinf(lo).any() or np.isinf(hi).any():
            # inf - inf is NaN: a sample numpy's median of the deviations drops.
            spread = np.count_nonzero(~np.isnan(deviation), axis=1)
        deviation.sort(axis=1)
        sigma = (sorted_medians(deviation, spread) * SIGMA_SCALE).astype(np.float32)
        mask = np.where(finite == 0, NO_DATA, 0) | np.where((finite >= 2) & (lo == hi), CONSTANT, 0)
        mask |= np.where((finite > 0) & (2 * finite < np.repeat(in_row, n_cols)), SPARSE, 0)
        window = (slice(r0, r1), slice(c0, c1))
        self.median[window] = median.reshape(n_rows, n_cols)
        self.sigma[window] = sigma.reshape(n_rows, n_cols)
        self.ngood[window] = finite.reshape(n_rows, n_cols)
        self.mask[window] = mask.reshape(n_rows, n_cols)


def _chunks(rows: int, cols: int, n_used: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Row ranges ``(r0, r1)`` with their column windows, each of at most about
    :data:`CHUNK_VALUES` samples: whole rows when one fits, else one row in runs of columns."""
    per_row = cols * n_used
    if per_row <= CHUNK_VALUES:
        step = max(1, CHUNK_VALUES // per_row)
        return [(r, min(r + step, rows), [(0, cols)]) for r in range(0, rows, step)]
    width = max(1, CHUNK_VALUES // n_used)
    windows = [(c, min(c + width, cols)) for c in range(0, cols, width)]
    return [(r, r + 1, windows) for r in range(rows)]


# ----------------------------------------------------------------------------------
# The file


def stats_hdus(stats: PixelStats, *, cube: str, table: fits.BinTableHDU, product: Product,
               wcs: fits.Header | None, time_column: str | None = None,
               now: dt.datetime | None = None) -> fits.HDUList:
    """``STATS.fits``: the four images with the cube's WCS, and the ``FFIS`` table.

    Parameters
    ----------
    stats
        Complete statistics (every row seen).
    cube
        The cube's location, recorded in the primary header.
    table
        The cube's info table (FFI names and times).
    wcs
        WCS cards for the images (None: none).
    """
    selection = stats.selection
    primary = fits.PrimaryHDU()
    header = primary.header
    header["ORIGIN"] = ("fficube", "per-pixel statistics over time")
    header["CREATOR"] = f"fficube {__version__}"
    header["DATE"] = (now or dt.datetime.now()).replace(microsecond=0).isoformat()
    header["PRODUCT"] = (product.name.upper(), "product of the cube's FFIs")
    header["CUBE"] = (os.path.basename(cube.rstrip("/")) or cube, "the cube")
    header["STATFFIS"] = (selection.choice, "FFIs used: good or all (see FFIS)")
    header["NFFIS"] = (stats.shape[2], "FFIs in the cube")
    header["NUSED"] = (selection.n_used, "FFIs used")
    header["SIGSCALE"] = (SIGMA_SCALE, "SIGMA = SIGSCALE x median absolute deviation")
    for bit, text in MASK_BITS.items():
        header[f"MASKB{bit.bit_length() - 1}"] = (text.split(":")[0], f"MASK bit value {bit}")
    header.add_comment("MEDIAN, SIGMA, NGOOD and MASK are over the science layer, per pixel, over time.")
    for bit, text in MASK_BITS.items():
        header.add_comment(f"MASK {bit}: {text}")

    def image(name: str, data: np.ndarray, comment: str, unit: str | None = None) -> fits.ImageHDU:
        hdu = fits.ImageHDU(data=data, name=name)
        if wcs is not None:
            hdu.header.extend(wcs, update=True)
        if unit:
            hdu.header["BUNIT"] = unit
        hdu.header["COMMENT"] = comment
        return hdu

    unit = _unit(table)
    names = [_text(v) for v in table.data["FFI_FILE"]]
    n = len(names)
    times = (np.asarray(table.data[time_column], dtype=np.float64) if time_column and time_column in
             table.columns.names else np.full(n, np.nan))
    ffis = fits.BinTableHDU.from_columns([
        fits.Column(name="FFI_FILE", format=f"{max(1, *(len(s) for s in names))}A", array=names),
        fits.Column(name="TIME", format="D", array=times, unit="d"),
        fits.Column(name="USED", format="L", array=np.array(selection.used, dtype=bool)),
        fits.Column(name="REASON", format=f"{max(1, *(len(s) for s in selection.reasons))}A",
                    array=list(selection.reasons)),
        fits.Column(name="ROWS_OUT", format="J", array=stats.rows_left_out.astype(np.int32)),
    ], name="FFIS")
    ffis.header["COMMENT"] = "USED: quality flags allow it; ROWS_OUT: rows left out as all zero or constant"
    return fits.HDUList([
        primary,
        image("MEDIAN", stats.median, "median over time of the FFIs used (NaN-aware)", unit),
        image("SIGMA", stats.sigma, "1.4826 x median absolute deviation from MEDIAN", unit),
        image("NGOOD", stats.ngood, "finite samples among the FFIs used"),
        image("MASK", stats.mask, "bits: see the primary header"),
        ffis,
    ])


def _text(value: Any) -> str:
    return (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip()


def _unit(table: fits.BinTableHDU) -> str | None:
    """The FFIs' BUNIT (e-/s for SPOC and TICA), if the info table carries it."""
    if "BUNIT" not in table.columns.names or not len(table.data):
        return None
    unit = _text(table.data["BUNIT"][len(table.data) // 2])
    return unit or None


async def write_stats(hdus: fits.HDUList, target: str, put: Callable[[str], Any] | None = None) -> None:
    """Write ``hdus`` to the local file ``target``, atomically: into a temporary file beside
    it, flushed, then renamed.  With ``put`` (the writer of a remote location), the
    temporary file is local and ``put`` uploads it.  Never a copy of the file in memory.

    Raises
    ------
    OutputError
        If the file cannot be written.
    """
    import tempfile

    def write(path: str) -> None:
        hdus.writeto(path, checksum=True, overwrite=True)
        with open(path, "rb+") as f:
            os.fsync(f.fileno())

    try:
        if put is not None:
            with tempfile.TemporaryDirectory(prefix="fficube-stats-") as scratch:
                local = os.path.join(scratch, "stats.fits")
                await asyncio.to_thread(write, local)
                await put(local)
            return
        directory = os.path.dirname(os.path.abspath(target))
        await asyncio.to_thread(os.makedirs, directory, exist_ok=True)
        temp = f"{target}.{os.getpid()}.tmp"
        try:
            await asyncio.to_thread(write, temp)
            os.replace(temp, target)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        await asyncio.to_thread(sync_directory, target)
    except OSError as exc:
        raise OutputError(f"cannot write the pixel statistics: {os_reason(exc)}", path=target) from exc


# ----------------------------------------------------------------------------------
# Statistics of a finished cube


def cube_wcs(table: fits.BinTableHDU) -> fits.Header | None:
    """The WCS cards for the images: the info-table row astrocut takes for its cutouts
    (the nearest to the middle with a celestial WCS), as astropy writes them (SIP kept)."""
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    from .views.overview import wcs_header

    header, _row = wcs_header(table.data, len(table.data) // 2)
    if header is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # the table row is an FFI header's cards: as astrocut
        cards: fits.Header = WCS(header).to_header(relax=True)
    for keyword in ("DATE-OBS", "MJD-OBS", "DATE-END", "MJD-END", "MJDREF", "TIMESYS"):
        cards.remove(keyword, ignore_missing=True)  # of one FFI, not of statistics over time
    return cards


def stats_rows(shape: Sequence[int], budget: int) -> int:
    """Cube rows per read when statistics are made from a finished cube within ``budget``
    bytes: two blocks (one read while the other is worked on) beside the images.

    Raises
    ------
    MemoryBudgetError
        If ``budget`` cannot hold the images and two rows.
    """
    from .errors import MemoryBudgetError
    from .units import format_bytes

    rows = int(shape[0])
    row = row_bytes(shape)
    available = budget - stats_bytes(shape)
    if available < 2 * row:
        raise MemoryBudgetError(
            f"max_memory = {format_bytes(budget)} cannot hold the statistics of this cube: give at least "
            f"{format_bytes(stats_bytes(shape) + 2 * row)} ({format_bytes(stats_bytes(shape))} of images "
            f"and scratch, two rows of {format_bytes(row)})")
    return max(1, min(rows, available // (2 * row)))


async def add_from_cube(stats: PixelStats, source: Any, info: Any, budget: int,
                        ranges: Sequence[tuple[int, int]] | None = None) -> int:
    """Make the statistics of rows ``ranges`` (default: all) of the cube ``info``
    (:class:`~fficube.cubeinfo.CubeInfo`) read from ``source``, one block of rows per
    request, the next read while the last is worked on.  Returns the bytes read.
    """
    from .errors import FitsFormatError

    rows, cols, n, layers = info.shape
    step = stats_rows(info.shape, budget)
    blocks = [(r, min(r + step, stop)) for start, stop in (ranges or [(0, rows)]) for r in range(start, stop, step)]

    async def read(block: tuple[int, int]) -> np.ndarray:
        first, last = (info.data_offset + r * info.row_bytes for r in block)
        data = await source.read(info.path, first, last)
        if len(data) < last - first:
            raise FitsFormatError("the cube's data is cut short: truncated", path=info.path, byte_range=(first, last))
        return np.frombuffer(data, dtype=">f4").reshape(block[1] - block[0], cols, n, layers)

    stop_event = threading.Event()
    total = 0
    if not blocks:
        return total
    try:
        async with task_group() as tg:
            pending = tg.create_task(read(blocks[0]))
            for i, (start, stop) in enumerate(blocks):
                values = await pending
                total += values.nbytes
                if i + 1 < len(blocks):
                    pending = tg.create_task(read(blocks[i + 1]))
                await asyncio.to_thread(stats.add, values, start, stop, stop_event)
    finally:
        stop_event.set()  # a cancelled pass: the worker thread stops at its next chunk
    return total


def check_stats_target(target: str | None, output: str, inputs: Sequence[str] = ()) -> None:
    """Refuse a statistics file that is the cube or one of its inputs, or that cannot be
    written (local: its directory), before anything is read.

    Raises
    ------
    OptionError
        If ``target`` is the output or an input, or its directory cannot be written.
    """
    if target is None:
        return
    from .sources.locations import is_url

    def same(a: str, b: str) -> bool:
        return a == b if is_url(a) or is_url(b) else os.path.realpath(a) == os.path.realpath(b)

    if same(target, output) or any(same(target, path) for path in inputs):
        raise OptionError("pixel_stats", f"{target} is the cube or one of its inputs; give the statistics a file "
                          "of their own")
    if is_url(target):
        return
    parent = os.path.dirname(os.path.abspath(target))
    while not os.path.exists(parent):  # missing directories are created
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise OptionError("pixel_stats", f"{target}: cannot write here ({parent} is not a writable directory)")


async def stats_writer(target: str, filesystems: Any) -> Callable[[str], Any] | None:
    """How :func:`write_stats` uploads a local file to a remote ``target`` (None: a local target),
    with the output's credentials."""
    from .sources.fsspec import fs_call
    from .sources.locations import is_url, protocol_of

    if not is_url(target):
        return None
    fs = await filesystems.get(protocol_of(target), output=True)

    async def put(local: str) -> None:
        await fs_call(fs, "put_file", local, target)

    return put


@dataclass(frozen=True)
class StatsResult:
    """What :func:`cube_stats` made and what it took."""

    hdus: fits.HDUList  #: ``STATS.fits`` (:func:`stats_hdus`)
    output: str | None  #: where it was written (None: not written)
    shape: tuple[int, int, int, int]  #: the cube's
    n_used: int  #: FFIs used
    bytes_read: int
    requests: int
    seconds: float

    def summary(self) -> str:
        """One line for people."""
        rows, cols, n, _layers = self.shape
        where = f"{self.output}: " if self.output else ""
        from .units import format_bytes

        return (f"{where}pixel statistics of {rows}x{cols} pixels over {self.n_used} of {n} FFIs in "
                f"{self.seconds:.1f} s; read {format_bytes(self.bytes_read)} in {self.requests} requests")


async def cube_stats(
    cube: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    stats_ffis: str = "good",
    max_memory: int | float | str = "1GB",
    anon: bool | None = None,
    storage_options: Any = None,
) -> StatsResult:
    """Per-pixel statistics of an existing cube (local or URL; any astrocut-format cube),
    in one bounded-memory pass by row blocks.

    Parameters
    ----------
    cube
        The cube: a path or a URL (``s3://...``).
    output
        Where to write ``STATS.fits`` (local or URL); None: only return it.
    stats_ffis
        ``"good"`` or ``"all"`` (see the module's documentation).
    max_memory
        What the pass may hold: the images, and two blocks of rows.
    anon, storage_options
        As for :func:`fficube.build_cube`.

    Returns
    -------
    StatsResult
        The HDUs (``result.hdus``) and what the pass read.

    Raises
    ------
    FitsFormatError
        If the file is not a cube in astrocut's format.
    MemoryBudgetError
        If ``max_memory`` cannot hold the images and two rows.
    OptionError, ReadError, OutputError
        A bad option; reading the cube or writing the file failed.
    """
    import time

    from .access import cube_path
    from .cubeinfo import scan_cube
    from .sources import open_location
    from .sources.fsspec import Filesystems
    from .units import parse_size

    started = time.monotonic()
    try:
        budget = parse_size(max_memory)
    except ValueError as exc:
        raise OptionError("max_memory", str(exc)) from None
    path = cube_path(cube)
    target = os.fspath(output) if output is not None else None
    check_stats_target(target, path)
    async with Filesystems(anon=anon, storage_options=storage_options) as filesystems:
        source = await open_location(path, filesystems, 4)
        try:
            info = await scan_cube(source, path)
            stats = PixelStats(info.shape, select_ffis(info.table, info.product, stats_ffis))
            stats_rows(info.shape, budget)  # the budget is checked before any row is read
            await add_from_cube(stats, source, info, budget)
        finally:
            await asyncio.shield(source.aclose())
        hdus = await asyncio.to_thread(stats_hdus, stats, cube=path, table=info.table, product=info.product,
                                       wcs=cube_wcs(info.table), time_column=info.product.time_keyword)
        if target is not None:
            await write_stats(hdus, target, await stats_writer(target, filesystems))
    return StatsResult(hdus, target, info.shape, stats.selection.n_used, source.stats.bytes_read,
                       source.stats.requests, time.monotonic() - started)
