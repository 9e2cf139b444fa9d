"""Target pixel files (TPFs) cut from a cube, local or behind any URL a build accepts.

Planning is pure: a target's pixel window comes from the cube's WCS as astrocut's
``cube_cut`` computes it (the WCS of the info-table row nearest the middle that has
one, the centre by the full SIP transform, each edge rounded half to even, a window
partly off the CCD padded with NaN and a zero aperture).  Execution is async: only
the cube rows the windows span are read, one ranged read per run of columns of a
row (a window's columns of one row are contiguous in the file), the runs of
overlapping targets merged so that each byte is read once, within the source's
limit on requests in flight and a memory budget that bounds the rows held at once
and the TPFs being built.

The TPFs have astrocut 1.4's structure and values (primary header, ``PIXELS`` table,
``APERTURE`` image), plus what astrocut stopped writing in 1.0: the FITS
image-array-in-table WCS of each image column (``WCAXn``, ``iCTYPn``, ``iCRPXn``, ...
and the physical ``WCSNnP``, ``iCTYnP``, ...), as SPOC's own TPFs carry it.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product as grid
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from astropy.io import fits

from .._version import __version__
from ..access import cube_location, cube_source
from ..checksum import data_sum, seal, seal_text
from ..cubeinfo import CubeInfo, scan_cube
from ..errors import FitsFormatError, MemoryBudgetError, OptionError, OutsideFootprintError
from ..fitsblocks import BLOCK
from ..layout import pixel_bytes
from ..sources.base import ByteSource, ReadRequest, read_batch
from ..sources.locations import is_url
from ..sources.policy import DEFAULT_LOCAL_CONCURRENCY, DEFAULT_REMOTE_CONCURRENCY
from ..units import parse_size

if TYPE_CHECKING:  # astropy.coordinates and astropy.wcs load on first use: fficube.sync imports this module
    from astropy.wcs import WCS

__all__ = [
    "Target", "Window", "CutReport", "cut_cube", "cut_targets", "targets_of", "cutout_size", "table_wcs",
    "plan_windows", "row_reads", "astrocut_file_name", "DEFAULT_MAX_MEMORY",
]

#: Memory for reads and TPFs being built when none is given.
DEFAULT_MAX_MEMORY = 1_000_000_000
#: The table column and value that mark a row with a full WCS (astrocut's test).
WCS_KEY, WCS_VALUE = "CTYPE2", "DEC--TAN-SIP"
#: Image columns of a TPF, which get a WCS of their own.
IMAGE_COLUMNS = ("RAW_CNTS", "FLUX", "FLUX_ERR", "FLUX_BKG", "FLUX_BKG_ERR")
#: Keywords of the FFI's image header that astrocut copies into the PIXELS header (with their comments).
IMAGE_KEYWORDS = {
    "BACKAPP": "background is subtracted", "CDPP0_5": "RMS CDPP on 0.5-hr time scales",
    "CDPP1_0": "RMS CDPP on 1.0-hr time scales", "CDPP2_0": "RMS CDPP on 2.0-hr time scales",
    "CROWDSAP": "Ratio of target flux to total flux in op. ap.", "DEADAPP": "deadtime applied",
    "DEADC": "deadtime correction", "EXPOSURE": "[d] time on source",
    "FLFRCSAP": "Frac. of target flux w/in the op. aperture", "FRAMETIM": "[s] frame time [INT_TIME + READTIME]",
    "FXDOFF": "compression fixed offset", "GAINA": "[electrons/count] CCD output A gain",
    "GAINB": "[electrons/count] CCD output B gain", "GAINC": "[electrons/count] CCD output C gain",
    "GAIND": "[electrons/count] CCD output D gain", "INT_TIME": "[s] photon accumulation time per frame",
    "LIVETIME": "[d] TELAPSE multiplied by DEADC", "MEANBLCA": "[count] FSW mean black level CCD output A",
    "MEANBLCB": "[count] FSW mean black level CCD output B", "MEANBLCC": "[count] FSW mean black level CCD output C",
    "MEANBLCD": "[count] FSW mean black level CCD output D", "NREADOUT": "number of read per cadence",
    "NUM_FRM": "number of frames per time stamp", "READNOIA": "[electrons] read noise CCD output A",
    "READNOIB": "[electrons] read noise CCD output B", "READNOIC": "[electrons] read noise CCD output C",
    "READNOID": "[electrons] read noise CCD output D", "READTIME": "[s] readout time per frame",
    "TIERRELA": "[d] relative time error", "TIMEDEL": "[d] time resolution of data",
    "TIMEPIXR": "bin time beginning=0 middle=0.5 end=1", "TMOFST11": "(s) readout delay for camera 1 and ccd 1",
    "VIGNAPP": "vignetting or collimator correction applied",
}
#: Primary keywords that describe one FFI rather than the stack (astrocut drops them), and prefixes of such.
DROPPED_PREFIXES = ("SC_", "RMS", "A_", "AP_", "B_", "BP", "GAIN", "TESS_", "CD", "CT", "CRPIX", "CRVAL", "MJD")
DROPPED = (
    "COMMENT", "FILTER", "TIME", "EXPTIME", "ACS_MODE", "DEC_TARG", "FLXWIN", "RA_TARG", "CCDNUM", "CAMNUM", "WCSGDF",
    "UNITS", "CADENCE", "SCIPIXS", "INT_TIME", "PIX_CAT", "REQUANT", "DIFF_HUF", "PRIM_HUF", "QUAL_BIT", "SPM",
    "STARTTJD", "ENDTJD", "CRM", "TJD_ZERO", "CRM_N", "ORBIT_ID", "MIDTJD",
)
#: Target keywords a TESSCut TPF carries with empty values (no catalogue is consulted).
TARGET_CARDS: tuple[tuple[str, object, str], ...] = (
    ("OBJECT", "", "string version of target ID"), ("TCID", 0, "unique TESS target identifier"),
    ("PXTABLE", 0, "pixel table ID"), ("PMRA", 0.0, "[mas/yr] RA proper motion"),
    ("PMDEC", 0.0, "[mas/yr] Dec proper motion"), ("PMTOTAL", 0.0, "[mas/yr] Total proper motion"),
    ("TESSMAG", 0.0, "[mag] TESS magnitude"), ("TEFF", 0.0, "[K] Effective temperature"),
    ("LOGG", 0.0, "[cm/s2] log10 surface gravity"), ("MH", 0.0, "[log10([M/H])] Metallicity"),
    ("RADIUS", 0.0, "[solar radii] Stellar radius"), ("TICVER", 0, "TIC version"),
    ("TICID", None, "unique TESS target identifier"),
)
#: Keywords an extension with INHERIT = T does not take from the primary header.
NOT_INHERITED = frozenset({"COMMENT", "SIMPLE", "BITPIX", "EXTEND", "NEXTEND"})
#: Most pixels the linear WCS of a cutout is fitted to (astrocut's sampling).
FIT_POINTS = 100


@dataclass(frozen=True, slots=True)
class Target:
    """A position to cut around (ICRS degrees), with an optional name for its file."""

    ra: float
    dec: float
    name: str | None = None

    @property
    def label(self) -> str:
        """How messages name the target."""
        where = f"ra={self.ra:.6f} dec={self.dec:.6f}"
        return f"{self.name} ({where})" if self.name else where


@dataclass(frozen=True, slots=True, eq=False)
class Window:
    """The pixels of one target: columns ``x0:x0+width`` and rows ``y0:y0+height`` of the
    cube, 0-based, which may reach past the CCD (those pixels are NaN, aperture 0)."""

    target: Target
    x0: int
    y0: int
    width: int
    height: int
    image_cols: int
    image_rows: int

    @property
    def cols(self) -> tuple[int, int]:
        """The columns read from the cube (those on the CCD)."""
        return max(0, self.x0), min(self.image_cols, self.x0 + self.width)

    @property
    def rows(self) -> tuple[int, int]:
        """The rows read from the cube (those on the CCD)."""
        return max(0, self.y0), min(self.image_rows, self.y0 + self.height)

    def aperture(self) -> np.ndarray:
        """1 on the CCD, 0 on padding: ``(height, width)`` int32, as astrocut's APERTURE."""
        aperture = np.zeros((self.height, self.width), dtype=np.int32)
        (c0, c1), (r0, r1) = self.cols, self.rows
        aperture[r0 - self.y0:r1 - self.y0, c0 - self.x0:c1 - self.x0] = 1
        return aperture


@dataclass(slots=True)
class CutReport:
    """What :func:`cut_targets` did: the TPFs (or their files), the targets it could not
    cut and the reads it took."""

    targets: int
    tpfs: list[fits.HDUList] = field(default_factory=list)  #: in target order, when not written
    paths: list[str] = field(default_factory=list)  #: files written, in target order
    failed: list[tuple[Target, str]] = field(default_factory=list)  #: (target, why)
    requests: int = 0
    bytes_read: int = 0
    row_reads: int = 0  #: ranged reads of cube rows (the rest of the requests: headers and table)

    def summary(self) -> str:
        """One line for people."""
        from ..units import format_bytes

        made = f"{len(self.paths)} TPFs written" if self.paths or not self.tpfs else f"{len(self.tpfs)} TPFs made"
        bad = f", {len(self.failed)} failed" if self.failed else ""
        return (f"{self.targets} targets: {made}{bad}; {self.requests} requests "
                f"({self.row_reads} for rows), {format_bytes(self.bytes_read)} read")


# ------------------------------------------------------------------------------------
# Planning


def targets_of(coordinates: Any, names: Sequence[str | None] | None = None) -> list[Target]:
    """Targets from a ``SkyCoord`` (scalar or array), an ``(ra, dec)`` pair in degrees, an
    ``"ra dec"`` string, :class:`Target` objects, or a sequence of any of these.

    Raises
    ------
    OptionError
        If the coordinates cannot be read as positions, or ``names`` has another length.
    """
    from astropy.coordinates import SkyCoord

    targets: list[Target] = []

    def add(item: Any) -> None:
        if isinstance(item, Target):
            targets.append(item)
        elif isinstance(item, SkyCoord):
            icrs = item.icrs  # the cube's WCS is ICRS: a position in another frame is converted
            for ra, dec in zip(np.atleast_1d(icrs.ra.deg), np.atleast_1d(icrs.dec.deg), strict=True):
                targets.append(Target(float(ra), float(dec)))
        elif isinstance(item, str):
            coord = SkyCoord(item, unit="deg")
            targets.append(Target(float(coord.icrs.ra.deg), float(coord.icrs.dec.deg)))
        elif _is_pair(item):
            targets.append(Target(float(item[0]), float(item[1])))
        elif isinstance(item, Iterable):
            for each in item:
                add(each)
        else:
            raise OptionError("coordinates", f"not a position: {item!r} (a SkyCoord or (ra, dec) in degrees)")

    try:
        add(coordinates)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, OptionError):
            raise
        raise OptionError("coordinates", f"not a position: {coordinates!r} ({exc})") from exc
    if names is not None:
        if len(names) != len(targets):
            raise OptionError("names", f"{len(names)} names for {len(targets)} targets")
        targets = [Target(t.ra, t.dec, name or t.name) for t, name in zip(targets, names, strict=True)]
    bad = [t for t in targets if not (math.isfinite(t.ra) and math.isfinite(t.dec) and -90 <= t.dec <= 90)]
    if bad:
        raise OptionError("coordinates", f"not a position: {bad[0].label}")
    return targets


def _is_pair(item: Any) -> bool:
    """Whether ``item`` is an (ra, dec) pair of numbers."""
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence | np.ndarray) or len(item) != 2:
        return False
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in item)


def cutout_size(size: int | float | str | Sequence[int | float]) -> tuple[int | float, int | float]:
    """``(columns, rows)`` of a cutout size: ``N`` (N x N), ``"NxM"`` or ``(N, M)`` as astrocut
    takes it (its first number is the width, along the cube's columns).

    Raises
    ------
    OptionError
        If the size is not one or two positive numbers.
    """
    values: Sequence[Any]
    if isinstance(size, str):
        values = re.split(r"\s*[xX,]\s*", size.strip())
    elif isinstance(size, (int, float, np.integer, np.floating)):
        values = [size]
    else:
        values = list(size)
    try:
        numbers = [int(v) if isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.isdigit()) else float(v)
                   for v in values]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) not in (1, 2) or not all(n > 0 and math.isfinite(n) for n in numbers):
        raise OptionError("size", f"not a cutout size: {size!r} (N or NxM pixels, positive)")
    return (numbers[0], numbers[-1])


def table_wcs(table: fits.FITS_rec, path: str = "") -> tuple[WCS, fits.Header]:
    """The WCS cutouts use and the header it was made of: from the info-table row nearest
    the middle whose ``CTYPE2`` is ``DEC--TAN-SIP``, searching forwards then from the
    start (astrocut's choice, so that both cut the same pixels).

    Raises
    ------
    FitsFormatError
        If no row has a WCS.
    """
    from astropy.wcs import WCS, FITSFixedWarning

    n = len(table)
    middle = n // 2
    order = [*range(middle, n), *range(0, middle)]
    column = table[WCS_KEY] if WCS_KEY in table.columns.names else None
    found = next((i for i in order if column is not None and str(column[i]).strip() == WCS_VALUE), None)
    if found is None:
        raise FitsFormatError("no FFI of the cube has a WCS (no info-table row with CTYPE2 = 'DEC--TAN-SIP')",
                              path=path)
    row = table[found]
    header = fits.Header()
    for name in table.columns.names:
        value = row[name]
        if isinstance(value, (str, bytes)):
            header[name] = value.decode() if isinstance(value, bytes) else value
        elif not np.isnan(value):
            header[name] = value.item() if isinstance(value, np.generic) else value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header, relax=True), header


def _limits(center: float, size: int | float) -> tuple[int, int]:
    """Start and stop of a window along one axis, rounded as astrocut rounds them (half to even)."""
    lo, hi = int(np.round(center - size / 2)), int(np.round(center + size / 2))
    if lo == hi:  # a window smaller than a pixel: the pixel of the centre
        lo = int(np.floor(center))
        hi = lo + 1
    return lo, hi


def plan_windows(
    targets: Sequence[Target], wcs: WCS, size: tuple[int | float, int | float], image: tuple[int, int]
) -> list[Window | str]:
    """The window of each target on an image of ``(rows, cols)``, or why it has none.

    A window that reaches past the CCD is kept (the pixels off it are padding); one that
    does not touch the CCD at all, or whose centre the WCS cannot place, is off the
    footprint: its entry says why.
    """
    from astropy.coordinates import SkyCoord
    from astropy.wcs import NoConvergence

    rows, cols = image
    coords = SkyCoord([t.ra for t in targets], [t.dec for t in targets], unit="deg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            xs, ys = coords.to_pixel(wcs)
        except NoConvergence:  # some target is far off: place each on its own
            xs, ys = np.full(len(targets), np.nan), np.full(len(targets), np.nan)
            for i, coord in enumerate(coords):
                try:
                    xs[i], ys[i] = coord.to_pixel(wcs)
                except NoConvergence:
                    pass
    plans: list[Window | str] = []
    for target, x, y in zip(targets, np.atleast_1d(xs), np.atleast_1d(ys), strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            plans.append("the cube's WCS cannot place it")
            continue
        (x0, x1), (y0, y1) = _limits(float(x), size[0]), _limits(float(y), size[1])
        if x1 <= 0 or y1 <= 0 or x0 >= cols or y0 >= rows:
            plans.append(f"its window (columns {x0}:{x1}, rows {y0}:{y1}) misses the CCD ({cols} x {rows} pixels)")
            continue
        plans.append(Window(target, x0, y0, x1 - x0, y1 - y0, cols, rows))
    return plans


def row_reads(windows: Sequence[Window]) -> dict[int, list[tuple[int, int]]]:
    """For each cube row the windows span, the runs of columns to read: the windows'
    columns merged where they overlap or touch, so that no byte is read twice."""
    spans: dict[int, list[tuple[int, int]]] = {}
    for window in windows:
        (c0, c1), (r0, r1) = window.cols, window.rows
        for row in range(r0, r1):
            spans.setdefault(row, []).append((c0, c1))
    merged: dict[int, list[tuple[int, int]]] = {}
    for row in sorted(spans):
        runs: list[tuple[int, int]] = []
        for c0, c1 in sorted(spans[row]):
            if runs and c0 <= runs[-1][1]:
                runs[-1] = (runs[-1][0], max(runs[-1][1], c1))
            else:
                runs.append((c0, c1))
        merged[row] = runs
    return merged


def astrocut_file_name(cube: str, target: Target, size: tuple[int | float, int | float]) -> str:
    """The file name astrocut gives the TPF of ``target`` (``<cube>_<ra>_<dec>_<w>-x-<h>_astrocut.fits``)."""
    stem = os.path.basename(cube.rstrip("/"))
    stem = stem[: -len(".fits")] if stem.endswith(".fits") else os.path.splitext(stem)[0]
    stem = stem.removesuffix("-cube")
    return f"{stem}_{target.ra:.7f}_{target.dec:.7f}_{size[0]}-x-{size[1]}_astrocut.fits"


def _file_name(target: Target) -> str:
    """A file name from a target's name: characters that are unsafe in paths become '_'."""
    assert target.name is not None
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", target.name.strip()).strip("._") or "target"
    return name if name.lower().endswith(".fits") else name + ".fits"


# ------------------------------------------------------------------------------------
# TPFs


@dataclass(frozen=True, slots=True)
class _CubeParts:
    """What every TPF of one cube shares: built once, not once per target."""

    path: str
    info: CubeInfo
    wcs: WCS
    primary: fits.Header  #: the TPF primary header but for the target's position
    columns: list[fits.Column]  #: TIME, TIMECORR (SPOC), CADENCENO
    tail: list[fits.Column]  #: QUALITY, POS_CORR1/2, FFI_FILE
    image_cards: list[tuple[str, object, str]]
    unit: str
    has_errors: bool
    image_columns: tuple[int, ...]  #: 1-based numbers of the image columns in the PIXELS table
    templates: dict[tuple[int, int], _Template] = field(default_factory=dict)  #: by (width, height)


def _cube_parts(info: CubeInfo, path: str) -> _CubeParts:
    table = info.table.data
    wcs, row = table_wcs(table, path)
    spoc = info.product.name == "spoc"
    n = info.shape[2]
    zeros = np.zeros(n, dtype=np.float32)

    def column(name: str) -> np.ndarray:
        if name not in table.columns.names:
            raise FitsFormatError(f"the info table has no {name} column, which a TPF needs", path=path)
        return np.asarray(table[name])

    start, stop = ("TSTART", "TSTOP") if spoc else ("STARTTJD", "ENDTJD")
    columns = [fits.Column(name="TIME", format="D", unit="BJD - 2457000, days", disp="D14.7",
                           array=(column(start) + column(stop)) / 2)]
    if spoc:  # TICA has no barycentric correction per FFI: astrocut wrote no TIMECORR for it
        columns.append(fits.Column(name="TIMECORR", format="E", unit="d", disp="E14.7", array=column("BARYCORR")))
    cadence = np.zeros(n, dtype=np.int32) if spoc else column("CADENCE")
    columns.append(fits.Column(name="CADENCENO", format="J", disp="I10", array=cadence))
    tail = [fits.Column(name="QUALITY", format="J", disp="B16.16", array=column("DQUALITY" if spoc else "QUAL_BIT"))]
    tail += [fits.Column(name=name, format="E", unit="pixel", disp="E14.7", array=zeros)
             for name in ("POS_CORR1", "POS_CORR2")]
    # astrocut's format: file names longer than 38 characters would be cut (none of TESS's are).
    names = np.asarray(info.names)
    tail.append(fits.Column(name="FFI_FILE", format=f"{max(38, names.dtype.itemsize // 4)}A", unit="pixel",
                            array=names))
    image_cards: list[tuple[str, object, str]] = [(k, row.get(k), c) for k, c in IMAGE_KEYWORDS.items()]
    image_cards.append(("WCS_FFI", row.get("FFI_FILE"), "FFI used for cutout WCS"))
    return _CubeParts(
        path=path, info=info, wcs=wcs, primary=_primary_header(info, spoc), columns=columns, tail=tail,
        image_cards=image_cards, unit="e-/s" if spoc else "e-", has_errors=info.shape[3] > 1,
        image_columns=tuple(range(len(columns) + 1, len(columns) + 1 + len(IMAGE_COLUMNS))),
    )


def _primary_header(info: CubeInfo, spoc: bool) -> fits.Header:
    """The cube's primary header with astrocut's edits for a TPF (the target's RA_OBJ and
    DEC_OBJ are set per target)."""
    header = fits.PrimaryHDU(header=fits.Header.fromstring(info.primary_header)).header
    header.update({
        "CREATOR": ("fficube", "software used to produce this file"),
        "PROCVER": (__version__, "software version"),
        "FFI_TYPE": ("SPOC" if spoc else "TICA", "the FFI type used to make the cutouts"),
        "RA_OBJ": (0.0, "[deg] right ascension"),
        "DEC_OBJ": (0.0, "[deg] declination"),
        "TIMEREF": ("SOLARSYSTEM" if spoc else None, "barycentric correction applied to times"),
        "TASSIGN": ("SPACECRAFT" if spoc else None, "where time is assigned"),
        "TIMESYS": ("TDB", "time system is Barycentric Dynamical Time (TDB)"),
        "BJDREFI": (2457000, "integer part of BTJD reference date"),
        "BJDREFF": (0.0, "fraction of the day in BTJD reference date"),
        "TIMEUNIT": ("d", "time unit for TIME, TSTART, and TSTOP"),
    })
    if not spoc:  # a TICA primary header names these its own way (as astrocut 1.2 filled them in)
        from astropy.time import Time

        header.update({
            "EXTVER": ("1", "extension version number (not format version)"),
            "SIMDATA": (False, "file is based on simulated data"),
            "NEXTEND": ("2", "number of standard extensions"),
            "TSTART": (header.get("STARTTJD"), "observation start time in TJD of first FFI"),
            "TSTOP": (header.get("ENDTJD"), "observation stop time in TJD of last FFI"),
            "CAMERA": (header.get("CAMNUM"), "Camera number"),
            "CCD": (header.get("CCDNUM"), "CCD chip number"),
            "ASTATE": (None, "archive state F indicates single orbit processing"),
            "CRMITEN": (header.get("CRM"), "spacecraft cosmic ray mitigation enabled"),
            "CRBLKSZ": (None, "[exposures] s/c cosmic ray mitigation block siz"),
            "FFIINDEX": (header.get("CADENCE"), "number of FFI cadence interval of first FFI"),
            "DATA_REL": (None, "data release version number"),
            "FILEVER": (None, "file format version"),
            "RADESYS": (None, "reference frame of celestial coordinates"),
            "SCCONFIG": (None, "spacecraft configuration ID"),
            "TIMVERSN": (None, "OGIP memo number for file format"),
        })
        for key, value, what in (("DATE-OBS", header["TSTART"], "TSTART"), ("DATE-END", header["TSTOP"], "TSTOP")):
            iso = Time(float(value) + 2457000, format="jd").iso if isinstance(value, (int, float)) else None
            header[key] = (iso, f"{what} as Julian Date of {'first' if what == 'TSTART' else 'last'} FFI")
    for key in [k for k in header if k.startswith(DROPPED_PREFIXES) or k in DROPPED]:
        header.remove(key, ignore_missing=True, remove_all=True)
    header["TELAPSE"] = (_number(header.get("TSTOP")) - _number(header.get("TSTART")), "[d] TSTOP - TSTART")
    header["DATE"] = (header.get("DATE"), "FFI cube creation date")
    if spoc:
        for key, comment in (("TSTART", "observation start time in TJD of first FFI"),
                             ("TSTOP", "observation stop time in TJD of last FFI"),
                             ("DATE-OBS", "TSTART as UTC calendar date of first FFI"),
                             ("DATE-END", "TSTOP as UTC calendar date of last FFI"),
                             ("FFIINDEX", "number of FFI cadence interval of first FFI")):
            header[key] = (header.get(key), comment)
    for key, value, comment in TARGET_CARDS:
        header[key] = (value, comment)
    return header


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _linear_wcs(parts: _CubeParts, window: Window) -> tuple[WCS, float, float]:
    """The linear (TAN) WCS fitted to the cube's SIP WCS over the window, as astrocut fits
    it (at most about 100 pixels, evenly spaced, the last row and column included), and
    the largest and the root-sum-square separation (degrees) between the two over all pixels."""
    width, height = window.width, window.height
    step = 1
    while (width / step) * (height / step) > FIT_POINTS:
        step += 1
    xs = list(range(0, width, step)) + ([width - 1] if (width - 1) % step else [])
    ys = list(range(0, height, step)) + ([height - 1] if (height - 1) % step else [])
    pixels = np.array(list(grid(xs, ys)), dtype=float)
    offset = np.array([window.x0, window.y0], dtype=float)  # cutout pixel -> cube pixel
    world = parts.wcs.all_pix2world(pixels + offset, 0)
    linear = _fit_tan(pixels[:, 0], pixels[:, 1], world[:, 0], world[:, 1])
    every = np.array(list(grid(range(width), range(height))), dtype=float)
    distances = _separation(parts.wcs.all_pix2world(every + offset, 0), linear.wcs_pix2world(every, 0))
    return linear, float(distances.max()), float(np.sqrt(np.sum(distances**2)))


def _fit_tan(x: np.ndarray, y: np.ndarray, ra: np.ndarray, dec: np.ndarray) -> WCS:
    """The TAN WCS (CD matrix and reference pixel) that best maps pixels ``x, y`` (0-based)
    to ``ra, dec`` (degrees), projected at the point astropy's ``fit_wcs_from_points``
    takes for ``proj_point="center"`` (the midpoint of the box's corners).

    astropy fits by iterative least squares in sky coordinates; with the projection point
    fixed the mapping from pixels to the tangent plane is linear, so one linear least-squares
    solve in the plane finds the same WCS (to ~1e-9 pixel) some ten times faster.
    """
    import astropy.units as u
    from astropy.coordinates import ICRS, SkyCoord
    from astropy.wcs import WCS
    from astropy.wcs.utils import celestial_frame_to_wcs

    corner1 = SkyCoord(ra.min() * u.deg, dec.max() * u.deg)
    corner2 = SkyCoord(ra.max() * u.deg, dec.min() * u.deg)
    middle = corner1.directional_offset_by(corner1.position_angle(corner2), corner1.separation(corner2) / 2)
    plane = WCS(naxis=2)
    plane.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    plane.wcs.crval = (middle.ra.deg, middle.dec.deg)
    plane.wcs.crpix = (0.0, 0.0)  # with unit scale, "pixels" (1-based) are the plane's coordinates in degrees
    xi, eta = plane.wcs_world2pix(ra, dec, 1)
    design = np.column_stack([x + 1, y + 1, np.ones_like(x)])
    (a1, a2, a3), (b1, b2, b3) = (np.linalg.lstsq(design, v, rcond=None)[0] for v in (xi, eta))
    cd = np.array([[a1, a2], [b1, b2]])
    fitted = celestial_frame_to_wcs(ICRS(), projection="TAN")
    fitted.wcs.crval = plane.wcs.crval
    fitted.wcs.cd = cd
    fitted.wcs.crpix = -np.linalg.solve(cd, [a3, b3])
    return fitted


def _separation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (degrees) between rows of (ra, dec) in degrees (haversine: exact at small angles)."""
    ra1, dec1, ra2, dec2 = (np.radians(v) for v in (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    angles: np.ndarray = np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))
    return angles


def _column_wcs_cards(n: int, linear: fits.Header, window: Window) -> list[tuple[str, object, str]]:
    """The WCS of table column ``n`` (FITS image arrays in binary tables), celestial and physical."""
    cards: list[tuple[str, object, str]] = [("WCAX{n}", 2, "number of WCS axes")]
    for axis, what in ((1, "right ascension"), (2, "declination")):
        cards += [
            (f"{axis}CTYP{{n}}", linear[f"CTYPE{axis}"], f"{what} coordinate type"),
            (f"{axis}CRPX{{n}}", linear[f"CRPIX{axis}"], f"[pixel] reference pixel along image axis {axis}"),
            (f"{axis}CRVL{{n}}", linear[f"CRVAL{axis}"], f"[deg] {what} at reference pixel"),
            (f"{axis}CUNI{{n}}", linear[f"CUNIT{axis}"], f"physical unit in {('column', 'row')[axis - 1]} dimension"),
            (f"{axis}CDLT{{n}}", linear[f"CDELT{axis}"], f"[deg] pixel scale in {('RA', 'DEC')[axis - 1]} dimension"),
        ]
    cards += [(f"{i}{j}PC{{n}}", linear.get(f"PC{i}_{j}", float(i == j)), "linear transformation matrix element")
              for i in (1, 2) for j in (1, 2)]
    cards += [
        ("WCSN{n}P", "PHYSICAL", "table column WCS name"),
        ("WCAX{n}P", 2, "table column physical WCS dimensions"),
        ("1CTY{n}P", "RAWX", "table column physical WCS axis 1 type, CCD col"),
        ("2CTY{n}P", "RAWY", "table column physical WCS axis 2 type, CCD row"),
        ("1CUN{n}P", "PIXEL", "table column physical WCS axis 1 unit"),
        ("2CUN{n}P", "PIXEL", "table column physical WCS axis 2 unit"),
        ("1CRV{n}P", window.x0 + 1, "table column physical WCS ax 1 ref value"),
        ("2CRV{n}P", window.y0 + 1, "table column physical WCS ax 2 ref value"),
        ("1CDL{n}P", 1.0, "table column physical WCS a1 step"),
        ("2CDL{n}P", 1.0, "table column physical WCS a2 step"),
        ("1CRP{n}P", 1, "table column physical WCS a1 reference"),
        ("2CRP{n}P", 1, "table column physical WCS a2 reference"),
    ]
    return [(key.format(n=n), value, comment) for key, value, comment in cards]


#: Comments of the column keywords (astrocut's words).
_COLUMN_COMMENTS = {"TTYPE": "column name", "TFORM": "column format", "TUNIT": "unit", "TDISP": "display format",
                    "TDIM": "multi-dimensional array spec", "TNULL": "null value"}


def _inherit(hdus: fits.HDUList) -> None:
    """Copy the primary cards into each extension with INHERIT = T that lacks them (astrocut does)."""
    primary = hdus[0].header
    for hdu in hdus[1:]:
        if hdu.header.get("INHERIT", False):
            for card in primary.cards:
                if card.keyword not in hdu.header and card.keyword not in NOT_INHERITED:
                    hdu.header.append((card.keyword, card.value, card.comment))


@dataclass(frozen=True, slots=True)
class _Template:
    """A TPF as written, for windows of one size: its headers (with checksum cards), as
    astropy headers and as the bytes written, with where each card is; and its table's
    records (big-endian, as in the file)."""

    headers: tuple[fits.Header, fits.Header, fits.Header]
    texts: tuple[bytes, bytes, bytes]
    cards: tuple[dict[str, tuple[int, str]], ...]  #: per header: keyword -> (offset, comment)
    records: np.ndarray


def _template(parts: _CubeParts, window: Window, n: int) -> _Template:
    hdus = _build_tpf(parts, window, np.zeros((n, window.height, window.width), dtype=np.float32), None)
    buffer = io.BytesIO()
    hdus.writeto(buffer, checksum=True)
    with fits.open(io.BytesIO(buffer.getvalue())) as written:
        headers = (written[0].header.copy(), written[1].header.copy(), written[2].header.copy())
        records = np.asarray(written[1].data).copy()
    texts = tuple(h.tostring().encode("ascii") for h in headers)
    cards = tuple({card.keyword: (80 * i, card.comment) for i, card in enumerate(h.cards)} for h in headers)
    return _Template(headers, texts, cards, records)


@functools.lru_cache(maxsize=4096)
def _card_tail(kind: str, value: Any, comment: str) -> bytes | None:
    """Bytes 8-80 of the card of ``value`` and ``comment`` as astropy formats it (they do
    not depend on a standard keyword, which fills bytes 0-8), or None if it needs more
    than one card.  Cached: the image columns' WCS cards repeat the same values, and
    astropy's formatting of one card costs some 30 us."""
    image = fits.Card("KEYWORD", value, comment).image
    return image[8:].encode("ascii") if len(image) == 80 else None


def _splice(text: bytes, cards: dict[str, tuple[int, str]], values: Sequence[tuple[str, object]]) -> bytes | None:
    """``text`` with the cards of ``values`` replaced in place (their comments kept), or
    None when one is not in the template or needs more than one card (a long string)."""
    spliced = bytearray(text)
    for keyword, value in values:
        where = cards.get(keyword)
        # The type is part of the key: 1, 1.0 and True are equal keys but different cards.
        tail = _card_tail(type(value).__name__, value, where[1]) if where is not None else None
        if where is None or tail is None or len(keyword) > 8:
            return None
        offset = where[0]
        spliced[offset : offset + 80] = keyword.encode("ascii").ljust(8) + tail
    return bytes(spliced)


def build_tpf(parts: _CubeParts, window: Window, flux: np.ndarray, errors: np.ndarray | None) -> bytes:
    """The TPF of one window, as the bytes of its file: ``flux`` (and ``errors``) are
    ``(n_ffis, height, width)`` float32.

    Building a TPF's headers card by card (and its table column by column) costs far
    more than its pixels, and all the TPFs of one cube and size share all but a few
    values: so the first TPF of each size, written once, is the template of the others.
    Their headers are the template's bytes with the target's cards written over in place
    (its position, its WCS; astropy formats each card), their table a copy of the
    template's records with its pixels, and their checksums computed here
    (:mod:`fficube.checksum`).
    """
    with warnings.catch_warnings():
        # A long value (WCS_FFI, a file name) leaves its comment no room: astropy cuts it and says so.
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        key = (window.width, window.height)
        if key not in parts.templates:
            parts.templates[key] = _template(parts, window, flux.shape[0])
        template = parts.templates[key]
        linear, max_sep, sigma = _linear_wcs(parts, window)
        linear_header = linear.to_header()
        target = [("RA_OBJ", window.target.ra), ("DEC_OBJ", window.target.dec)]
        columns = [(keyword, value) for n in parts.image_columns
                   for keyword, value, _comment in _column_wcs_cards(n, linear_header, window)]
        aperture = [(card.keyword, card.value) for card in linear_header.cards]
        aperture += [("WCS_MSEP", max_sep), ("WCS_SIG", sigma)]
        values = (target, target + columns, target + aperture)
        records = template.records.copy()
        records["FLUX"] = flux
        if errors is not None:
            records["FLUX_ERR"] = errors
        pieces = []
        datas = (b"", records.tobytes(), window.aperture().astype(">i4").tobytes())
        for i, data in enumerate(datas):
            data += bytes(-len(data) % BLOCK)
            text = _splice(template.texts[i], template.cards[i], values[i])
            if text is None:  # not the template's cards: set them on a copy of its header
                header = template.headers[i].copy()
                for keyword, value in values[i]:
                    header[keyword] = value
                sealed = seal(header, data_sum(data))
            else:
                sealed = seal_text(text, data_sum(data))
            pieces += [sealed, data]
        return b"".join(pieces)


def _build_tpf(parts: _CubeParts, window: Window, flux: np.ndarray, errors: np.ndarray | None) -> fits.HDUList:
    target = window.target
    primary = fits.PrimaryHDU(header=parts.primary.copy())
    primary.header["RA_OBJ"] = target.ra
    primary.header["DEC_OBJ"] = target.dec
    n = flux.shape[0]
    fmt, dim = f"{window.width * window.height}E", f"({window.width}, {window.height})"
    zeros = np.zeros_like(flux)
    images = {
        "RAW_CNTS": fits.Column(name="RAW_CNTS", format=fmt.replace("E", "J"), unit="count", dim=dim, disp="I8",
                                array=np.full(flux.shape, -1, dtype=np.int32), null=-1),
        "FLUX": fits.Column(name="FLUX", format=fmt, dim=dim, unit=parts.unit, disp="E14.7", array=flux),
        # A cube without uncertainties (TICA): zeros, as astrocut wrote them.
        "FLUX_ERR": fits.Column(name="FLUX_ERR", format=fmt, dim=dim, unit=parts.unit, disp="E14.7",
                                array=errors if errors is not None else zeros),
        **{name: fits.Column(name=name, format=fmt, dim=dim, unit=parts.unit, disp="E14.7", array=zeros)
           for name in ("FLUX_BKG", "FLUX_BKG_ERR")},
    }
    table = fits.BinTableHDU.from_columns([*parts.columns, *images.values(), *parts.tail], nrows=n)
    header = table.header
    header["EXTNAME"] = "PIXELS"
    header["INHERIT"] = True
    for card in header.cards:
        key = card.keyword.rstrip("0123456789")
        if key in _COLUMN_COMMENTS:
            card.comment = _COLUMN_COMMENTS[key]
    linear, max_sep, sigma = _linear_wcs(parts, window)
    linear_header = linear.to_header()
    for index, name in enumerate(header["TTYPE*"].values(), start=1):
        if name in images:  # after the column's TDIM, where SPOC's TPFs have it
            anchor = f"TDIM{index}"
            for card in reversed(_column_wcs_cards(index, linear_header, window)):
                header.insert(anchor, card, after=True)
    for key, value, comment in parts.image_cards:
        header[key] = (value, comment)
    aperture = fits.ImageHDU(data=window.aperture())
    aperture.header["EXTNAME"] = "APERTURE"
    for card in linear_header.cards:
        aperture.header.set(card.keyword, card.value, card.comment)
    aperture.header.set("NPIXMISS", None, "Number of op. aperture pixels not collected")
    aperture.header.set("NPIXSAP", None, "Number of pixels in optimal aperture")
    aperture.header["WCS_MSEP"] = (max_sep, "[deg] Max offset between cutout WCS and FFI WCS")
    aperture.header["WCS_SIG"] = (sigma, "[deg] Error measurement of cutout WCS fit")
    aperture.header["INHERIT"] = True
    hdus = fits.HDUList([primary, table, aperture])
    _inherit(hdus)
    return hdus


# ------------------------------------------------------------------------------------
# Execution


def _tpf_bytes(window: Window, n: int) -> int:
    """Memory one TPF takes while it is built: its five image columns, the table they are
    copied into, and the pixels read for it."""
    return 12 * window.width * window.height * n * 4


def _batches(windows: Sequence[Window], n: int, pixel_bytes: int, budget: int) -> list[list[Window]]:
    """Windows in groups whose TPFs and at least one row read fit ``budget`` together.

    Windows are taken in row order, so that targets that share rows share a group (and
    those rows are read once).
    """
    batches: list[list[Window]] = []
    current: list[Window] = []
    used = 0
    for window in sorted(windows, key=lambda w: (w.y0, w.x0)):
        cost = _tpf_bytes(window, n)
        row = (window.cols[1] - window.cols[0]) * pixel_bytes
        if cost + row > budget:
            raise MemoryBudgetError(
                f"max_memory: {budget:,} bytes cannot hold the TPF of {window.target.label} "
                f"({cost + row:,} bytes with one row read); give more, or a smaller size")
        if current and used + cost + row > budget:
            batches.append(current)
            current, used = [], 0
        current.append(window)
        used += cost
    if current:
        batches.append(current)
    return batches


async def _read_windows(
    source: ByteSource, info: CubeInfo, windows: Sequence[Window], budget: int
) -> tuple[list[np.ndarray], int]:
    """The pixels of each window, ``(layers, n_ffis, height, width)`` float32 with NaN off
    the CCD, and the number of ranged reads: each run of :func:`row_reads` read once, as
    many runs at once as ``budget`` bytes hold."""
    _rows, _cols, n, layers = info.shape
    pixel = pixel_bytes(n, layers)
    out = [np.full((layers, n, w.height, w.width), np.nan, dtype=np.float32) for w in windows]
    by_row: dict[int, list[int]] = {}
    for i, window in enumerate(windows):
        for row in range(*window.rows):
            by_row.setdefault(row, []).append(i)
    runs = [(row, c0, c1) for row, spans in row_reads(windows).items() for c0, c1 in spans]
    reads = start = 0
    while start < len(runs):
        # As many runs as the budget holds (at least one), read in one batch.
        stop, held = start, 0
        while stop < len(runs) and (stop == start or held + (runs[stop][2] - runs[stop][1]) * pixel <= budget):
            held += (runs[stop][2] - runs[stop][1]) * pixel
            stop += 1
        buffer = bytearray(held)
        view = memoryview(buffer)
        requests: list[ReadRequest] = []
        offset = 0
        for row, c0, c1 in runs[start:stop]:
            length = (c1 - c0) * pixel
            requests.append((info.path, info.data_offset + row * info.row_bytes + c0 * pixel,
                             view[offset:offset + length]))
            offset += length
        await read_batch(source, requests)
        reads += len(requests)
        pixels = np.frombuffer(buffer, dtype=">f4")
        offset = 0
        for row, c0, c1 in runs[start:stop]:
            run = pixels[offset:offset + (c1 - c0) * n * layers].reshape(c1 - c0, n, layers)
            offset += (c1 - c0) * n * layers
            for i in by_row[row]:
                window = windows[i]
                a, b = max(c0, window.cols[0]), min(c1, window.cols[1])
                if a < b:  # run[col, ffi, layer] -> out[layer, ffi, row, col]
                    out[i][:, :, row - window.y0, a - window.x0:b - window.x0] = run[a - c0:b - c0].transpose(2, 1, 0)
        del requests, pixels, view, buffer
        start = stop
    return out, reads


def _write(tpf: bytes, path: str) -> None:
    with open(path, "wb") as f:
        f.write(tpf)


async def cut_targets(
    cube: str | os.PathLike[str],
    targets: Sequence[Target],
    size: int | float | str | Sequence[int | float],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    file_names: Sequence[str] | None = None,
    max_memory: int | float | str = DEFAULT_MAX_MEMORY,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CutReport:
    """Cut every target it can and report the others, rather than stop at the first.

    The arguments are :func:`cut_cube`'s, but for ``targets`` (:func:`targets_of` makes
    them) and ``file_names`` (one per target, in ``out_dir``; by default a target's name
    plus ``.fits``, or astrocut's name for it).  The report lists the TPFs (or the files
    written), the targets off the cube's footprint, and the requests and bytes read.

    Raises
    ------
    FitsFormatError
        If ``cube`` is not a cube, or none of its FFIs has a WCS.
    ReadError
        If the cube cannot be read.
    MemoryBudgetError
        If ``max_memory`` cannot hold one TPF.
    """
    path = os.fspath(cube)
    if not is_url(path):
        path = cube_location(path)
    width_height = cutout_size(size)
    try:
        budget = parse_size(max_memory)
    except ValueError as exc:
        raise OptionError("max_memory", str(exc)) from exc
    if file_names is not None and len(file_names) != len(targets):
        raise OptionError("file_names", f"{len(file_names)} file names for {len(targets)} targets")
    if concurrency is not None and concurrency < 1:
        raise OptionError("concurrency", f"must be at least 1, not {concurrency}")
    report = CutReport(targets=len(targets))
    if out_dir is not None:
        names = list(file_names) if file_names is not None else [
            _file_name(t) if t.name else astrocut_file_name(path, t, width_height) for t in targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise OptionError("file_names", f"two targets would write the same file: {duplicates[0]}")
        os.makedirs(out_dir, exist_ok=True)
        destinations = [os.path.join(os.fspath(out_dir), name) for name in names]
    limit = concurrency or (DEFAULT_REMOTE_CONCURRENCY if is_url(path) else DEFAULT_LOCAL_CONCURRENCY)
    async with cube_source(path, anon=anon, storage_options=storage_options, concurrency=limit) as source:
        info = await scan_cube(source, path)
        parts = _cube_parts(info, path)
        plans = plan_windows(targets, parts.wcs, width_height, info.shape[:2])
        windows = [p for p in plans if isinstance(p, Window)]
        report.failed = [(t, p) for t, p in zip(targets, plans, strict=True) if isinstance(p, str)]
        index = {id(p): i for i, p in enumerate(plans)}  # a window's target's place in the list
        n, layers = info.shape[2], info.shape[3]
        made: dict[int, fits.HDUList | str] = {}
        for batch in _batches(windows, n, pixel_bytes(n, layers), budget):
            held = sum(_tpf_bytes(w, n) for w in batch)
            pixels, reads = await _read_windows(source, info, batch, max(1, budget - held))
            report.row_reads += reads
            for window, cube_pixels in zip(batch, pixels, strict=True):
                tpf = build_tpf(parts, window, cube_pixels[0], cube_pixels[1] if parts.has_errors else None)
                i = index[id(window)]
                if out_dir is not None:
                    await asyncio.to_thread(_write, tpf, destinations[i])
                    made[i] = destinations[i]
                else:
                    made[i] = fits.HDUList.fromstring(tpf)
                if progress is not None:
                    progress(len(made), len(windows))
        report.requests, report.bytes_read = source.stats.requests, source.stats.bytes_read
    for i in sorted(made):
        item = made[i]
        if isinstance(item, str):
            report.paths.append(item)
        else:
            report.tpfs.append(item)
    return report


@overload
async def cut_cube(
    cube: str | os.PathLike[str], coordinates: Any, size: int | float | str | Sequence[int | float], *,
    out_dir: None = None, names: Sequence[str | None] | None = None, max_memory: int | float | str = ...,
    anon: bool | None = None, storage_options: Mapping[str, Any] | None = None, concurrency: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[fits.HDUList]: ...


@overload
async def cut_cube(
    cube: str | os.PathLike[str], coordinates: Any, size: int | float | str | Sequence[int | float], *,
    out_dir: str | os.PathLike[str], names: Sequence[str | None] | None = None, max_memory: int | float | str = ...,
    anon: bool | None = None, storage_options: Mapping[str, Any] | None = None, concurrency: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]: ...


async def cut_cube(
    cube: str | os.PathLike[str],
    coordinates: Any,
    size: int | float | str | Sequence[int | float],
    *,
    out_dir: str | os.PathLike[str] | None = None,
    names: Sequence[str | None] | None = None,
    max_memory: int | float | str = DEFAULT_MAX_MEMORY,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[fits.HDUList] | list[str]:
    """Cut target pixel files around ``coordinates`` from ``cube``.

    Each TPF has astrocut 1.4's structure and values (its ``cube_cut`` of the same cube
    and position), plus a WCS for each image column of its table.  Only the cube rows
    the cutouts span are read, each once, one ranged request per run of columns.

    Parameters
    ----------
    cube
        The cube: a local path or any URL a build reads (``s3://``, ``https://``...).
    coordinates
        A ``SkyCoord`` (scalar or array), an ``(ra, dec)`` pair in degrees, or a
        sequence of either.
    size
        Pixels: ``N`` (N x N), ``"NxM"`` or ``(N, M)`` as astrocut takes it (N columns
        wide, M rows high).
    out_dir
        Write the TPFs into this folder (created if needed) and return their paths;
        by default they are returned as ``HDUList`` objects.
    names
        A name per target: its file is ``<name>.fits`` (astrocut's file name otherwise).
    max_memory
        Bytes (or ``"2GB"``...) for the rows read and the TPFs being built at once.
    anon, storage_options
        How to reach a remote cube, as for a build.
    concurrency
        Requests in flight at most (default: 4 for a local cube, 32 for a remote one).
    progress
        Called with (TPFs done, TPFs to make) after each TPF.

    Returns
    -------
    list of astropy.io.fits.HDUList or list of str
        The TPFs in target order, or the paths written when ``out_dir`` is given.

    Raises
    ------
    OutsideFootprintError
        If a target is off the cube's footprint (the message names each one); the other
        targets' files are written first.
    FitsFormatError, ReadError, MemoryBudgetError, OptionError
        As :func:`cut_targets`.
    """
    targets = targets_of(coordinates, names)
    report = await cut_targets(
        cube, targets, size, out_dir=out_dir, max_memory=max_memory, anon=anon, storage_options=storage_options,
        concurrency=concurrency, progress=progress,
    )
    if report.failed:
        raise OutsideFootprintError.of_many(report.failed, path=os.fspath(cube))
    return report.paths if out_dir is not None else report.tpfs
