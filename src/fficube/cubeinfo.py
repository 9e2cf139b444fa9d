"""Existing cubes: what a cube says about itself (headers and info table, not the data).

:func:`scan_cube` reads a cube's headers and table by byte range from a byte source
it is given, for updates, ``verify`` and ``inspect``; :meth:`CubeDescription.of` turns
them into what people want to see.  Nothing here opens storage (that is
:mod:`fficube.access`, whose :func:`~fficube.access.describe_cube` opens a cube and
describes it), so the planner can use :class:`CubeInfo` and :class:`Provenance`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

from ._version import __version__
from .errors import FitsFormatError
from .ffiinfo import FfiInfo
from .fitsblocks import BLOCK, HeaderReader, data_bytes, padded
from .layout import cube_data_bytes, row_bytes
from .products import Product, product_of_cube

if TYPE_CHECKING:  # annotations only: the source is given, never opened here
    from .sources.base import ByteSource

__all__ = ["CubeInfo", "scan_cube", "Provenance", "PROVENANCE_KEYWORDS", "CubeDescription"]

#: First read of a cube: its primary and cube headers are one block each in most cubes.
FIRST_READ = 2 * BLOCK


@dataclass(frozen=True, slots=True)
class Provenance:
    """What made the cube, recorded in HDU 1's header where it moves nothing.

    The primary header of a SPOC cube is one 2880-byte block (readers such as
    tesscube take the data to start at byte 5760) and a TICA cube's is the size
    astrocut 1.2 makes it: cards added there could move the data.  HDU 1's header has
    room for some 24 more cards in its one block, so the provenance goes there, and
    the update history keeps its last :data:`MAX_UPDATES_SHOWN` entries.  Only what
    decides the cube's bytes is recorded (not the budget or the concurrency), so that
    builds with other budgets stay byte-identical.
    """

    version: str  #: fficube's version at the build
    product: str
    template: str | None  #: the FFI whose header made the info table (None: unknown)
    sector: int | None  #: the sector given to the build (None: not given)
    built: str  #: the build's date
    updates: tuple[str, ...] = ()  #: one line per update, oldest first (the last few)
    n_updates: int = 0

    def updated(self, when: dt.datetime, new: Sequence[FfiInfo]) -> Provenance:
        """This provenance after an update that added ``new`` FFIs."""
        line = f"{when:%Y-%m-%d} v{__version__} +{len(new)} {new[0].name}"
        return replace(self, updates=(*self.updates, line)[-MAX_UPDATES_SHOWN:], n_updates=self.n_updates + 1)

    def cards(self) -> list[tuple[str, object, str]]:
        """(keyword, value, comment) of the cards that record it."""
        cards: list[tuple[str, object, str]] = [
            ("FCVERSN", self.version, "fficube version that built the cube"),
            ("FCPROD", self.product, "product of the FFIs"),
            ("FCTEMPL", self.template or "", "FFI whose header made the info table"),
            ("FCSECTOR", self.sector if self.sector is not None else "", "sector given to the build"),
            ("FCBUILT", self.built, "date of the build"),
            ("FCNUPD", self.n_updates, "updates since the build"),
        ]
        return cards + [("FCUPD" + str(i + 1), line[:68], "update: date, version, +FFIs, first new")
                        for i, line in enumerate(self.updates)]

    @classmethod
    def of(cls, header: fits.Header) -> Provenance | None:
        """The provenance recorded in a cube header, if there is any (astrocut's cubes have none)."""
        if "FCVERSN" not in header:
            return None
        n = int(header.get("FCNUPD", 0))
        updates = tuple(str(header[f"FCUPD{i}"]) for i in range(1, MAX_UPDATES_SHOWN + 1) if f"FCUPD{i}" in header)
        sector = header.get("FCSECTOR", "")
        return cls(
            version=str(header["FCVERSN"]), product=str(header.get("FCPROD", "")),
            template=str(header.get("FCTEMPL", "")) or None,
            sector=sector if isinstance(sector, int) and not isinstance(sector, bool) else None,
            built=str(header.get("FCBUILT", "")), updates=updates, n_updates=n,
        )


#: Updates listed in a cube header (the count goes on): the header stays one block.
MAX_UPDATES_SHOWN = 8
#: Keywords of the provenance cards (what the cube header has that astrocut's has not).
PROVENANCE_KEYWORDS = (
    "FCVERSN", "FCPROD", "FCTEMPL", "FCSECTOR", "FCBUILT", "FCNUPD",
    *(f"FCUPD{i}" for i in range(1, MAX_UPDATES_SHOWN + 1)),
)


@dataclass(frozen=True, slots=True)
class CubeInfo:
    """An existing cube: its headers and table, and where its data is."""

    path: str
    size: int
    product: Product
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    data_offset: int
    primary_header: str
    cube_header: str  #: HDU 1's header (the cube's shape and fficube's provenance cards)
    table: fits.BinTableHDU
    header_bytes: int

    @property
    def row_bytes(self) -> int:
        return row_bytes(self.shape)

    @property
    def table_offset(self) -> int:
        """Where the info table's header starts: after the data and its padding."""
        return self.data_offset + padded(cube_data_bytes(self.shape))

    @property
    def names(self) -> list[str]:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in self.table.data["FFI_FILE"]]


async def scan_cube(source: ByteSource, path: str) -> CubeInfo:
    """Read a cube's primary header, cube header and info table (not its data).

    Raises
    ------
    FitsFormatError
        If the file is not a complete cube in the astrocut format.
    """
    reader = await HeaderReader.open(source, path, FIRST_READ)
    size = reader.size
    _primary, primary_raw, offset = await reader.header_at(0, FIRST_READ)
    cube, cube_raw, data_offset = await reader.header_at(offset, BLOCK)
    axes = [cube.get(f"NAXIS{i}") for i in range(1, 5)]
    if cube.get("XTENSION") != "IMAGE" or cube.get("NAXIS") != 4 or cube.get("BITPIX") != -32:
        raise FitsFormatError("HDU 1 is not a 4-D float32 image: not an FFI cube", path=path)
    layers, n, cols, rows = axes
    table_offset = data_offset + padded(data_bytes(cube, path=path, hdu=1))
    table_header, table_raw, table_data = await reader.header_at(table_offset, 4 * BLOCK)
    if table_header.get("XTENSION") != "BINTABLE":
        raise FitsFormatError("HDU 2 is not the info table: not an FFI cube", path=path)
    length = data_bytes(table_header, path=path, hdu=2)
    if table_data + length > size:
        raise FitsFormatError("the info table is cut short: truncated", path=path,
                              byte_range=(table_data, table_data + length))
    data = await source.read(path, table_data, table_data + length)
    table = fits.BinTableHDU.fromstring(table_raw.encode("ascii").ljust(padded(len(table_raw)), b" ") + data)
    if "FFI_FILE" not in table.columns.names or len(table.data) != n:
        raise FitsFormatError(f"the info table has no FFI_FILE column or not {n} rows: not an FFI cube", path=path)
    product = product_of_cube(cube.get("FCPROD"), layers, path=path)
    return CubeInfo(
        path=path, size=size, product=product, shape=(rows, cols, n, layers), data_offset=data_offset,
        primary_header=primary_raw, cube_header=cube_raw, table=table, header_bytes=reader.bytes_used + length,
    )



@dataclass(frozen=True, slots=True)
class CubeDescription:
    """A cube's shape, product, time range and origin, for ``fficube inspect``."""

    product: str
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    start: float
    stop: float
    path: str
    size: int
    sector: object
    camera: object
    ccd: object
    first_file: str
    last_file: str
    template: str | None  #: the FFI the build took as template (recorded; else guessed)
    template_rule: str
    date: str
    provenance: Provenance | None = None  #: what fficube recorded (None: another tool built it)

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a short table."""
        rows, cols, n, layers = self.shape
        return [
            ("file", self.path),
            ("size", f"{self.size:,} bytes"),
            ("product", self.product.upper()),
            ("shape", f"{rows} rows x {cols} cols x {n} FFIs x {layers} layer(s)"),
            ("FFIs", str(n)),
            ("time", f"{self.start:.6f} .. {self.stop:.6f} TJD ({self.stop - self.start:.3f} d)"),
            ("sector", "undefined" if self.sector in (None, "") or isinstance(self.sector, fits.card.Undefined)
             else str(self.sector)),
            ("camera/CCD", f"{self.camera}/{self.ccd}"),
            ("first FFI", self.first_file),
            ("last FFI", self.last_file),
            ("template", self._template()),
            ("built", self.date),
            *self._provenance(),
        ]

    def _template(self) -> str:
        if self.provenance is not None and self.provenance.template:
            return f"{self.template} (recorded by the build)"
        if self.template:
            return f"{self.template} (not recorded: the earliest meeting {self.template_rule})"
        return f"none ({self.template_rule} in no FFI)"

    def _provenance(self) -> list[tuple[str, str]]:
        p = self.provenance
        if p is None:
            return [("built by", "not fficube (no provenance cards)")]
        given = f"sector {p.sector}" if p.sector is not None else "no sector given"
        rows = [("built by", f"fficube {p.version or '(unknown)'} on {p.built or '?'}, {given}"),
                ("updates", str(p.n_updates) + (f" (last {len(p.updates)} shown)" if p.updates else ""))]
        return rows + [("", line) for line in p.updates]

    @classmethod
    def of(cls, cube: CubeInfo) -> CubeDescription:
        """The description of ``cube``, from its headers and info table."""
        primary = fits.Header.fromstring(cube.primary_header)
        product = cube.product
        table = cube.table.data
        columns = cube.table.columns.names
        stop_key = product.stop_keyword
        start = float(np.nanmin(table[product.time_keyword])) if product.time_keyword in columns else float("nan")
        stop = float(np.nanmax(table[stop_key])) if stop_key in columns else float("nan")
        files = cube.names
        provenance = Provenance.of(fits.Header.fromstring(cube.cube_header))
        template = provenance.template if provenance else None
        for key, value in product.template_requirements.items() if template is None else ():
            if key in columns:  # no record: the earliest FFI meeting the rule is the best guess
                hits = np.flatnonzero(table[key] == value)
                template = files[hits[0]] if hits.size else None
        cam_key, ccd_key = product.camera_keywords
        return cls(
            path=cube.path,
            size=cube.size,
            product=product.name,
            shape=cube.shape,
            start=start,
            stop=stop,
            sector=primary.get("SECTOR"),
            camera=primary.get(cam_key),
            ccd=primary.get(ccd_key),
            first_file=files[0] if files else "",
            last_file=files[-1] if files else "",
            template=template,
            template_rule=product.template_rule,
            date=str(primary.get("DATE", "")),
            provenance=provenance,
        )
