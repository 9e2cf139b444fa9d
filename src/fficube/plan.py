"""Stage 2: turn scanned headers and limits into a frozen build plan.

No I/O happens here.  :func:`make_plan` decides the time order, the template, the
cube's shape, how many rows each block holds within ``max_memory``, and encodes the
three header/table pieces that are written around the data.  Everything the later
stages do is fixed by the plan, which makes the plan the thing to test.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from astropy.io import fits

from ._version import __version__
from .checksum import ZERO, checksum_cards, seal_header
from .cubeinfo import CubeInfo, Provenance
from .errors import InputError, MemoryBudgetError, MixedInputError, NoInputsError, TemplateWarning
from .ffiinfo import FfiInfo
from .fitsblocks import BLOCK, header_columns, header_end, padded
from .info_table import (
    COMMENTARY,
    FILE_COLUMN,
    STRUCTURAL,
    ColumnSpec,
    encode_info_table,
    table_arrays,
    template_columns,
)
from .layout import VALUE_BYTES, row_bytes
from .pixelstats import stats_bytes
from .products import PRODUCTS, Product
from .quality import gate_bytes
from .units import format_bytes

__all__ = [
    "CubePlan", "BaseCube", "MemoryUse", "Limits", "make_plan", "plan_update", "plan_memory", "choose_template",
    "GROUP",
]

#: FFIs placed into a block together.  A block row holds ``n_ffis x layers`` values per
#: column, so placing one FFI at a time writes 4 bytes per 64-byte cache line and
#: rewrites every line once per FFI; a group writes ``group x layers`` values per pixel
#: at once.  Longer runs transpose faster (measured, 100 FFIs x 74 rows x 2136: groups of
#: 16 at 1.3 GB/s, 32 at 1.5, 50 at 1.8, 100 at 2.6; a 100-FFI build 5.1 -> 4.4 s user
#: with 64, for 90 MB more slab memory, within the budget).
GROUP = 64
#: Largest block when reading local files (measured, 100 full-size FFIs: 4.4 s with
#: blocks of 128 MB or 64 MB, 4.7 s with 256 MB, 12 s with 870 MB and 25 s as one
#: 3.6 GB block: the pipeline fills and drains faster, and huge fresh buffers cost a
#: page fault per 4 kB). Remote reads keep budget-sized blocks: bigger blocks mean
#: bigger, fewer requests.
LOCAL_MAX_BLOCK_BYTES = 128 * 10**6
#: ... but never so small that one read (an FFI layer's rows of a block) is under
#: 16 kB: with thousands of FFIs the cap would otherwise mean many tiny reads.  Reads
#: are batched per group of FFIs (fetch.py), so 16 kB reads cost little; larger minimums
#: only make larger fresh block buffers, whose first touch costs a page fault and a
#: zeroed page per 4 kB, and on a VM whose freed memory goes back to the host (this
#: project's machines: 2-7 s of sys per fresh GB, varying from run to run) far more.
#: Measured, 12,000 FFIs of 64 x 2136 at 4 GB, 4 runs each in alternation (medians):
#: 32 kB, blocks of 4 rows (820 MB), 18.2 s wall, 7.4 s user + 10.7 s sys, 2.0 GB RSS;
#: 24 kB, 18.3 s, 8.4 + 10.6 s, 1.6 GB; 16 kB, 2 rows, 11.6 s, 8.5 + 4.7 s, 1.2 GB; 8 kB
#: (3 runs) 15.2 s, 10.1 + 7.0 s, 0.8 GB: the reads' own cost then wins.  Where fresh
#: memory is cheap (an earlier session's runs) 16 kB cost about 1 s more than 32 kB.
LOCAL_MIN_READ = 16 * 1024
#: Largest read (one FFI layer's rows of a block) from a remote store.  A GET costs
#: about a millisecond of client CPU whatever its size, so reads are made as large as
#: the budget allows, up to this: beyond a few MB the per-GET cost is paid back, and
#: larger blocks would only lengthen the pipeline's fill and drain (and what one slow
#: GET holds up).  The budget left over goes to reading further ahead.
REMOTE_MAX_READ = 4 * 2**20
#: Blocks of reads a remote build may hold ahead of assembly, when the budget has room:
#: a slow GET then holds up only its own block's assembly while reads go on.
REMOTE_MAX_LOOKAHEAD = 8


@dataclass(frozen=True, slots=True)
class Limits:
    """What a plan must fit in: the memory budget and how the pipeline may use it."""

    max_memory: int  #: bytes the pipeline may hold
    read_ahead: int = 8  #: slab buffers: how many FFI reads may run ahead of assembly
    #: Slab buffers hold at most this many blocks' reads.  Remote reads get 2: with one,
    #: a single slow GET holds the only block being read and every read waits for it;
    #: with two, the next block is read meanwhile (measured, 1% of GETs held 2 s).
    lookahead: int = 1
    reserved: int = 0  #: bytes of the budget held elsewhere (an upload's part buffers)
    #: Largest block, whatever the budget.  For local files a few hundred MB are
    #: faster than multi-GB blocks: a huge fresh buffer costs a page fault per 4 kB
    #: at every build, and one block cannot overlap assembly with writing.
    max_block_bytes: int | None = None
    #: Smallest read per FFI layer per block that ``max_block_bytes`` may cause (with
    #: thousands of FFIs, a block cap would otherwise mean tiny reads).
    min_read: int = 0
    #: Largest read per FFI layer per block (None: as large as the budget allows).
    max_read: int | None = None
    #: Blocks of reads the pool may hold once the blocks are sized, if the budget has
    #: room beyond ``lookahead`` blocks (read-ahead measured in bytes, not in blocks).
    max_lookahead: int = 0
    #: The build runs the quality gate (:mod:`fficube.quality`): its statistics are held too.
    quality: bool = False
    #: The build makes per-pixel statistics (:mod:`fficube.pixelstats`): their images and scratch are held too.
    pixel_stats: bool = False

    @classmethod
    def for_build(
        cls, max_memory: int, concurrency: int, *, local: bool, reserved: int = 0, quality: bool = False,
        pixel_stats: bool = False,
    ) -> Limits:
        """The limits a build with ``concurrency`` requests in flight plans with.

        Slab buffers cover the reads in flight plus room for the assembler to gather
        whole groups (a group uses at most half the pool); local inputs get the
        block cap.  Remote reads are at most :data:`REMOTE_MAX_READ` each, and what
        the budget holds beyond two blocks of reads goes to reading further ahead.
        """
        return cls(
            max_memory=max_memory,
            # Remote reads get twice the slabs: room to read on while a slow GET holds a group.
            read_ahead=max(2 * concurrency, 2 * GROUP) * (1 if local else 2),
            lookahead=1 if local else 2,
            reserved=reserved,
            max_block_bytes=LOCAL_MAX_BLOCK_BYTES if local else None,
            min_read=LOCAL_MIN_READ if local else 0,
            max_read=None if local else REMOTE_MAX_READ,
            max_lookahead=0 if local else REMOTE_MAX_LOOKAHEAD,
            quality=quality,
            pixel_stats=pixel_stats,
        )


@dataclass(frozen=True, slots=True)
class MemoryUse:
    """How the plan spends ``max_memory``."""

    budget: int
    fixed: int  #: headers kept for the plan and the encoded info table
    reserved: int  #: held by the output (an upload's part buffers)
    block_bytes: int  #: one block buffer
    block_buffers: int  #: 2 when assembling overlaps writing, else 1
    slab_bytes: int  #: one FFI's rows of one block, all layers, as read
    slabs: int  #: slab buffers in the pool (fetched ahead of assembly)
    decode_bytes: int  #: scratch for decoding scaled or non-float32 input
    base_bytes: int = 0  #: an update's buffer for the old cube's rows of one block
    group: int = 1  #: FFIs placed together (see GROUP); slabs then come in arenas of a group
    quality_bytes: int = 0  #: the quality gate's per-FFI statistics and scratch
    stats_bytes: int = 0  #: the per-pixel statistics' images and scratch

    @property
    def read_ahead_bytes(self) -> int:
        """Bytes of reads the pool may hold ahead of assembly."""
        return self.slab_bytes * self.slabs

    @property
    def total(self) -> int:
        return (
            self.fixed
            + self.reserved
            + self.quality_bytes
            + self.stats_bytes
            + self.block_bytes * self.block_buffers
            + self.slab_bytes * self.slabs
            + self.decode_bytes
            + self.base_bytes
        )


@dataclass(frozen=True, slots=True)
class BaseCube:
    """The existing cube of an update: its rows are read block by block and interleaved."""

    path: str
    data_offset: int
    row_bytes: int
    slots: tuple[int, ...]  #: the new cube's FFI index of each old FFI, in order

    def row_range(self, start: int, stop: int) -> tuple[int, int]:
        return self.data_offset + start * self.row_bytes, self.data_offset + stop * self.row_bytes


@dataclass(frozen=True, slots=True)
class CubePlan:
    """Everything needed to write one cube, decided before any data is read."""

    product: Product
    files: tuple[FfiInfo, ...]  #: the FFIs to read, in time order
    template: FfiInfo | None  #: None for an update (the table keeps the cube's columns)
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    block_rows: int
    memory: MemoryUse
    primary_header: bytes  #: HDU 0, padded
    cube_header: bytes  #: HDU 1's header, padded
    info_table: bytes  #: HDU 2, header and padded data
    slots: tuple[int, ...] = ()  #: the cube's FFI index of each of ``files`` (default: in order)
    base: BaseCube | None = None  #: for an update, the cube whose rows are copied
    #: Rows to write, as ``(start, stop)`` ranges; all rows when None.  A resumed build
    #: writes only the rows its output does not have yet (perhaps none).
    row_ranges: tuple[tuple[int, int], ...] | None = None

    def slot(self, index: int) -> int:
        """The cube's FFI index of ``files[index]``."""
        return self.slots[index] if self.slots else index

    def cadences(self) -> list[int | None]:
        """Each cube FFI's cadence number from its scan (None for an update's old FFIs)."""
        numbers: list[int | None] = [None] * self.n_ffis
        for index, ffi in enumerate(self.files):
            numbers[self.slot(index)] = ffi.cadence
        return numbers

    @property
    def slabs_per_block(self) -> int:
        """Slabs the assembler gets per block: one per FFI, one for the base cube."""
        return len(self.files) + (self.base is not None)

    @property
    def n_ffis(self) -> int:
        return self.shape[2]

    @property
    def row_bytes(self) -> int:
        """Bytes of one cube row (all columns, FFIs and layers): contiguous in the file."""
        return row_bytes(self.shape)

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """Row ranges ``(start, stop)`` of the blocks, in file order."""
        ranges = ((0, self.shape[0]),) if self.row_ranges is None else self.row_ranges
        return [
            (r, min(r + self.block_rows, stop)) for start, stop in ranges for r in range(start, stop, self.block_rows)
        ]

    def row_of(self, offset: int) -> int:
        """The cube row holding byte ``offset`` of the output (clamped to the rows)."""
        return min(self.shape[0], max(0, offset - self.data_offset) // self.row_bytes)

    @property
    def data_bytes(self) -> int:
        return self.shape[0] * self.row_bytes

    @property
    def data_offset(self) -> int:
        """Byte offset of the first cube value in the output."""
        return len(self.primary_header) + len(self.cube_header)

    @property
    def table_offset(self) -> int:
        return self.data_offset + padded(self.data_bytes)

    @property
    def total_bytes(self) -> int:
        """Size of the finished cube file."""
        return self.table_offset + len(self.info_table)

    @property
    def input_bytes(self) -> int:
        """Bytes of image data the build reads (each once)."""
        base = self.base.row_bytes * self.shape[0] if self.base else 0
        return base + sum(lay.rows * lay.cols * lay.itemsize for f in self.files for lay in f.layers)

    def primary(self) -> fits.Header:
        """The cube's primary header, parsed (for display and tests)."""
        return fits.Header.fromstring(self.primary_header.decode("ascii"))


# ----------------------------------------------------------------------------------
# Checks


def _names(ffis: Sequence[FfiInfo], most: int = 3) -> str:
    shown = ", ".join(f.name for f in ffis[:most])
    return shown + (f" and {len(ffis) - most} more" if len(ffis) > most else "")


def refuse_mixed(ffis: Sequence[FfiInfo], what: str, key: Callable[[FfiInfo], Hashable]) -> None:
    """Raise MixedInputError when ``key`` differs between FFIs, naming the files."""
    groups: dict[Hashable, list[FfiInfo]] = defaultdict(list)
    for f in ffis:
        groups[key(f)].append(f)
    if len(groups) > 1:
        ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
        parts = "; ".join(f"{value}: {len(fs)} file(s) ({_names(fs)})" for value, fs in ranked)
        raise MixedInputError(f"the inputs do not make one cube: their {what} differ ({parts})")


def _check_inputs(ffis: Sequence[FfiInfo], sector: int | None = None) -> None:
    if not ffis:
        raise NoInputsError("no FFIs to build a cube from")
    refuse_mixed(ffis, "products", lambda f: f.product.upper())
    refuse_mixed(ffis, "cameras", lambda f: f.camera)
    refuse_mixed(ffis, "CCDs", lambda f: f.ccd)
    refuse_mixed(ffis, "image shapes", lambda f: "x".join(map(str, f.shape)))
    _check_sector([f for f in ffis if f.sector is not None], sector)
    by_start: dict[float, FfiInfo] = {}
    for f in ffis:
        other = by_start.setdefault(f.start, f)
        if other is not f:
            key = PRODUCTS[f.product].time_keyword
            raise InputError(
                f"{other.path} and {f.path} have the same {key} = {f.start!r}: "
                "two FFIs cannot share a start time (is one a copy of the other?)"
            )


def _check_sector(known: Sequence[FfiInfo], sector: int | None) -> None:
    """One sector per cube: the FFIs that say theirs (header or file name) agree with
    each other and with the ``sector`` given."""
    refuse_mixed(known, "sectors", lambda f: f.sector)
    if sector is not None and known and known[0].sector != sector:
        raise MixedInputError(
            f"sector={sector} was given, but the FFIs are of sector {known[0].sector} ({_names(known)})"
        )


# ----------------------------------------------------------------------------------
# Headers


def _card(header: fits.Header, key: str, ffi: FfiInfo, hdu: int) -> tuple[object, str]:
    if key not in header:
        raise InputError(f"HDU {hdu} has no {key}, which the cube's primary header needs", path=ffi.path)
    return header[key], header.comments[key]


def encode_primary(header: fits.Header, now: dt.datetime) -> bytes:
    """HDU 0 as written: normalised by astropy for a data-less primary HDU followed by
    extensions (for TICA: NAXIS = 0; EXTEND = T when missing)."""
    # The kept DATASUM describes this HDU's (empty) data; astrocut's cubes carry it
    # with the build time in its comment.  CHECKSUM is added: every HDU is sealed.
    checksum_cards(header, stamp(now))
    hdu = fits.PrimaryHDU(header=header)
    buf = io.BytesIO()
    fits.HDUList([hdu, fits.ImageHDU()]).writeto(buf, checksum=False)
    raw = buf.getvalue()
    end = header_end(raw, 0)
    assert end is not None
    return seal_header(raw[: padded(end)], ZERO)


def stamp(now: dt.datetime) -> str:
    """The time stamp in the checksum cards' comments."""
    return f"{now:%Y-%m-%dT%H:%M:%S}"


def primary_header(
    product: Product, earliest: FfiInfo, latest: FfiInfo, sector: object, now: dt.datetime
) -> fits.Header:
    """HDU 0 of the cube: the earliest FFI's primary header with astrocut's edits."""
    header = fits.Header.fromstring(earliest.primary_header)
    first_image = fits.Header.fromstring(earliest.image_header)
    header.remove("CHECKSUM", ignore_missing=True)
    header["ORIGIN"] = "STScI/MAST"
    header["DATE"] = now.date().isoformat()
    for key in product.camera_keywords:
        header[key] = _card(first_image, key, earliest, product.image_hdu)
    header["SECTOR"] = (sector, "Observing sector")
    set_last_file_keywords(header, product, latest)
    header["EXTNAME"] = "PRIMARY"
    return header


def set_last_file_keywords(header: fits.Header, product: Product, latest: FfiInfo) -> None:
    last_image = fits.Header.fromstring(latest.image_header)
    for key in product.last_file_keywords:
        header[key] = _card(last_image, key, latest, product.image_hdu)


def cube_header(shape: tuple[int, int, int, int], now: dt.datetime, provenance: Provenance | None = None) -> bytes:
    """HDU 1's header: a 4-D float32 image extension of ``shape``, with the provenance.

    Its ``DATASUM``/``CHECKSUM`` are placeholders until the data has streamed by
    (:func:`fficube.checksum.seal_header`).
    """
    header = fits.ImageHDU(data=np.zeros((1, 1, 1, 1), dtype=np.float32)).header
    header["NAXIS4"], header["NAXIS3"], header["NAXIS2"], header["NAXIS1"] = shape
    for keyword, value, comment in provenance.cards() if provenance else []:
        bare = fits.Card(keyword, value).image.rstrip()
        # A long value leaves no room for the comment: then the card goes without it.
        header[keyword] = (value, comment if len(bare) + 3 + len(comment) <= 80 else "")
    checksum_cards(header, stamp(now))
    encoded: bytes = header.tostring().encode("ascii")
    return encoded


# ----------------------------------------------------------------------------------
# Memory


def _size_blocks(
    shape: tuple[int, int, int, int], files: Sequence[FfiInfo], table: bytes, primary: bytes, limits: Limits,
    base_row_bytes: int = 0,
) -> tuple[int, MemoryUse]:
    """Rows per block for a plan that keeps these headers and encoded pieces in memory."""
    # The plan keeps every FFI's header text: count it, with the encoded pieces.
    fixed = sum(len(f.primary_header) + len(f.image_header) for f in files) + len(table) + len(primary)
    return plan_memory(
        shape, files, fixed, limits, base_row_bytes=base_row_bytes, group=GROUP if _groupable(files) else 1,
    )


def _groupable(files: Sequence[FfiInfo]) -> bool:
    """Whether the FFIs can be placed in groups: raw float32 input, read in cube order."""
    return all(lay.is_raw_float32 for f in files for lay in f.layers)


def plan_memory(
    shape: tuple[int, int, int, int], files: Sequence[FfiInfo], fixed: int, limits: Limits,
    base_row_bytes: int = 0, group: int = 1,
) -> tuple[int, MemoryUse]:
    """Choose the rows per block that fit ``limits``; return them with the accounting.

    Per row of a block the pipeline holds: the row in each block buffer (two, so that
    one is assembled while the other is written), the row of every slab in the pool,
    and decoding scratch when the input is not raw float32.
    """
    budget, reserved, max_block_bytes = limits.max_memory, limits.reserved, limits.max_block_bytes
    rows, cols, n, layers = shape
    row = row_bytes(shape)
    slab_row = cols * sum(max((f.layers[i].itemsize for f in files), default=4) for i in range(layers))
    needs_decode = any(not lay.is_raw_float32 for f in files for lay in f.layers)
    decode_row = cols * 8 if needs_decode else 0  # one layer, as float64 at most
    gate = gate_bytes(shape) if limits.quality else 0
    pixel = stats_bytes(shape) if limits.pixel_stats else 0
    slabs = max(1, min(limits.read_ahead, limits.lookahead * len(files)))
    # Groups need their slabs held at once: never more than half the pool.
    group = max(1, min(group, slabs // 2, len(files)))

    def use(block_rows: int, buffers: int) -> MemoryUse:
        return MemoryUse(
            budget=budget,
            fixed=fixed,
            reserved=reserved,
            block_bytes=block_rows * row,
            block_buffers=buffers,
            slab_bytes=block_rows * slab_row,
            slabs=slabs,
            decode_bytes=block_rows * decode_row,
            base_bytes=block_rows * base_row_bytes,
            group=group,
            quality_bytes=gate,
            stats_bytes=pixel,
        )

    available = budget - fixed - reserved - gate - pixel
    per_row_single = use(1, 1).total - fixed - reserved - gate - pixel
    if available < per_row_single:
        raise MemoryBudgetError(
            f"max_memory = {format_bytes(budget)} cannot hold one row of this cube: a row takes "
            f"{format_bytes(row)} ({cols} columns x {n} FFIs x {layers} layer(s) x 4 bytes), "
            f"{format_bytes(per_row_single)} with {slabs} read buffer(s), plus "
            f"{format_bytes(fixed)} of headers and info table"
            + (f" and {format_bytes(reserved)} of upload buffers" if reserved else "")
            + (f" and {format_bytes(gate)} of quality-gate statistics" if gate else "")
            + (f" and {format_bytes(pixel)} of per-pixel statistics" if pixel else "")
            + f"; give at least {format_bytes(fixed + reserved + gate + pixel + per_row_single)}"
        )
    # Blocks larger than max_block_bytes are slower, not faster (see make_plan); but not
    # so small that a block's read of one FFI layer falls under min_read bytes.
    cap_rows = rows
    if max_block_bytes is not None:
        cap_rows = max(1, max_block_bytes // row, -(-limits.min_read // (cols * VALUE_BYTES)))
    if limits.max_read is not None:
        cap_rows = min(cap_rows, max(1, limits.max_read // (cols * VALUE_BYTES)))
    if rows <= cap_rows and rows * per_row_single <= available:
        return rows, use(rows, 1)  # one block: nothing to overlap with
    per_row_double = use(1, 2).total - fixed - reserved - gate - pixel
    buffers = 2 if available >= per_row_double else 1
    block_rows = min(cap_rows, available // (per_row_double if buffers == 2 else per_row_single))
    # Even out the blocks, so that the last one is not a sliver.
    n_blocks = math.ceil(rows / block_rows)
    block_rows = math.ceil(rows / n_blocks)
    memory = use(block_rows, buffers)
    if limits.max_lookahead > limits.lookahead and n_blocks > limits.lookahead:
        # Blocks capped by the read size leave budget over: it buys reads further ahead,
        # in whole groups (the pool's buffers are arenas of ``group`` slabs).
        spare = budget - memory.total
        room = min(limits.max_lookahead, n_blocks) * len(files)
        more = min(room, slabs + spare // memory.slab_bytes)
        more -= more % group
        if more > slabs:
            memory = replace(memory, slabs=more)
    return block_rows, memory


# ----------------------------------------------------------------------------------


def make_plan(
    ffis: Sequence[FfiInfo],
    limits: Limits,
    *,
    sector: int | None = None,
    now: dt.datetime | None = None,
) -> CubePlan:
    """Plan a cube from scanned FFIs.

    Parameters
    ----------
    ffis
        Scan results, in input order (the template is the first that qualifies).
    limits
        The memory budget and how the pipeline may use it.
    sector
        Written as ``SECTOR`` in the primary header (undefined when ``None``).
    now
        The build time, for ``DATE`` and the DATASUM stamp (now when ``None``).

    Raises
    ------
    NoInputsError, MixedInputError, InputError
        If the FFIs do not make one cube.
    MemoryBudgetError
        If ``max_memory`` cannot hold even one row; the message has the numbers.
    """
    _check_inputs(ffis, sector)
    product = PRODUCTS[ffis[0].product]
    # Stable sort: equal times cannot happen (refused above), but keep input order anyway.
    files = tuple(sorted(ffis, key=lambda f: f.start))
    template = choose_template(product, ffis, files)
    rows, cols = files[0].shape
    shape = (rows, cols, len(files), product.layers)
    columns = template_columns(fits.Header.fromstring(template.image_header))
    now = now or dt.datetime.now()
    table = encode_info_table(columns, _values(columns, files), stamp(now))
    primary = encode_primary(primary_header(product, files[0], files[-1], sector, now), now)
    provenance = Provenance(version=__version__, product=product.name, template=template.name,
                            sector=sector, built=now.date().isoformat())
    return _planned(product, files, shape, table, primary, limits, now, provenance, template=template)


def choose_template(product: Product, ffis: Sequence[FfiInfo], files: Sequence[FfiInfo]) -> FfiInfo:
    """The FFI whose image header makes the info table's columns (and the cube's WCS for cutouts).

    SPOC, as astrocut: the first FFI in input order with ``WCSAXES = 2``.  TICA: the
    first in time order (``files``) with a celestial WCS; astrocut 1.2 takes the first
    input whatever it is, and a folder gives no say over the order, so a cube could
    have no WCS at all.  A TICA batch without any WCS gets the earliest FFI and a
    :class:`~fficube.errors.TemplateWarning`.

    Raises
    ------
    InputError
        If no FFI meets the product's template requirement.
    """
    qualified = [f for f in (files if product.template_by_time else ffis) if f.is_template]
    if not qualified:
        raise InputError(
            f"none of the {len(ffis)} FFIs can serve as the info-table template: "
            f"none has {product.template_rule} in HDU {product.image_hdu} (no WCS?)"
        )
    template = next((f for f in qualified if f.celestial_wcs), qualified[0])
    if not template.celestial_wcs:
        warnings.warn(
            f"{template.path}: the info-table template has no celestial WCS (no FFI has one); "
            "cutout tools will find no WCS in this cube",
            TemplateWarning,
            stacklevel=3,
        )
    return template


def _values(columns: Sequence[ColumnSpec], files: Sequence[FfiInfo]) -> dict[str, np.ndarray]:
    """The info table's columns for ``files``, from their image headers."""
    values = header_columns([f.image_header for f in files], [c.name for c in columns],
                            paths=[f.path for f in files])
    return table_arrays(columns, values, [f.name for f in files])


def _planned(
    product: Product, files: tuple[FfiInfo, ...], shape: tuple[int, int, int, int], table: bytes, primary: bytes,
    limits: Limits, now: dt.datetime, provenance: Provenance, *, template: FfiInfo | None = None,
    base: BaseCube | None = None, slots: tuple[int, ...] = (),
) -> CubePlan:
    """The plan of a cube whose pieces are encoded: its blocks sized within ``limits``."""
    cube = cube_header(shape, now, provenance)
    block_rows, memory = _size_blocks(shape, files, table, primary, limits,
                                      base_row_bytes=base.row_bytes if base else 0)
    assert len(primary) % BLOCK == 0 and len(cube) % BLOCK == 0
    return CubePlan(
        product=product, files=files, template=template, shape=shape, block_rows=block_rows, memory=memory,
        primary_header=primary, cube_header=cube, info_table=table, slots=slots, base=base,
    )


# ----------------------------------------------------------------------------------
# Updates


def _old_columns(table: fits.BinTableHDU) -> list[ColumnSpec]:
    """The info table's column specs, recovered from the cube (comments from its header)."""
    specs = []
    for column in table.columns:
        if column.name == FILE_COLUMN:
            continue
        fmt = column.format.upper()
        kind = "A" if fmt.endswith("A") else "J" if fmt.endswith(("J", "K")) else "D"
        comment = ""
        if column.name not in STRUCTURAL and column.name not in COMMENTARY and column.name in table.header:
            comment = str(table.header[column.name])
        specs.append(ColumnSpec(column.name, kind, comment))  # type: ignore[arg-type]
    return specs


def _check_update(cube: CubeInfo, ffis: Sequence[FfiInfo], product: Product, sector: int | None) -> None:
    primary = fits.Header.fromstring(cube.primary_header)
    checks: list[tuple[str, object, Callable[[FfiInfo], object]]] = [
        ("product", product.name.upper(), lambda f: f.product.upper()),
        ("camera", primary.get(product.camera_keywords[0]), lambda f: f.camera),
        ("CCD", primary.get(product.camera_keywords[1]), lambda f: f.ccd),
        ("image shape", f"{cube.shape[0]}x{cube.shape[1]}", lambda f: "x".join(map(str, f.shape))),
    ]
    for what, value, got in checks:
        odd = [f for f in ffis if got(f) != value]
        if odd:
            raise MixedInputError(
                f"{len(odd)} new FFI(s) do not match the cube {cube.path} ({what} {value}): "
                f"{_names(odd)} has {got(odd[0])}"
            )
    old_sector = primary.get("SECTOR")
    if sector is not None and isinstance(old_sector, int) and old_sector != sector:
        raise InputError(f"the cube is of sector {old_sector}, not {sector}", path=cube.path)


def plan_update(
    cube: CubeInfo,
    ffis: Sequence[FfiInfo],
    limits: Limits,
    *,
    sector: int | None = None,
    now: dt.datetime | None = None,
) -> CubePlan:
    """Plan the cube that a fresh build of the cube's FFIs and ``ffis`` would give.

    The old FFIs keep their data (copied from the cube, row block by row block) and
    their table rows; the new ones are read and interleaved in time order.  The table
    keeps the cube's columns (widened where a new value is longer).  The primary header
    is the cube's, with the last-file keywords of the latest FFI and HISTORY cards; or,
    when a new FFI is the earliest, that FFI's, as a build would make it.

    Raises
    ------
    MixedInputError, InputError
        If a new FFI does not belong in the cube, or shares a start time with another.
    MemoryBudgetError
        If ``max_memory`` cannot hold one row.
    """
    product = cube.product
    _check_update(cube, ffis, product, sector)
    old_primary = fits.Header.fromstring(cube.primary_header)
    old_sector = old_primary.get("SECTOR")
    _check_inputs(ffis, old_sector if isinstance(old_sector, int) and not isinstance(old_sector, bool) else sector)
    now = now or dt.datetime.now()
    old_table = cube.table.data
    old_starts = [float(t) for t in old_table[product.time_keyword]]
    taken = {start: name for start, name in zip(old_starts, cube.names, strict=True)}
    for f in ffis:
        if f.start in taken:
            raise InputError(
                f"{f.path} has {product.time_keyword} = {f.start!r}, as {taken[f.start]} in the cube: "
                "two FFIs cannot share a start time"
            )
    files = tuple(sorted(ffis, key=lambda f: f.start))
    # Merged time order: ("old", i) and ("new", j) entries sorted by start time.
    entries = sorted(
        [(s, 0, i) for i, s in enumerate(old_starts)] + [(f.start, 1, j) for j, f in enumerate(files)]
    )
    position = {(kind, i): slot for slot, (_, kind, i) in enumerate(entries)}
    old_slots = tuple(position[(0, i)] for i in range(len(old_starts)))
    new_slots = tuple(position[(1, j)] for j in range(len(files)))
    rows, cols, n_old, layers = cube.shape
    shape = (rows, cols, n_old + len(files), layers)

    columns = _old_columns(cube.table)
    new_arrays = _values(columns, files)
    order = np.argsort(np.array(old_slots + new_slots), kind="stable")
    arrays = {}
    for name in [c.name for c in columns] + [FILE_COLUMN]:
        old = np.asarray(old_table[name])
        if old.dtype.kind == "U":  # astropy may hand strings back as str
            old = np.char.encode(old, "ascii")
        merged = np.concatenate([old, new_arrays[name]])
        arrays[name] = merged[order]
    table = encode_info_table(columns, arrays, stamp(now))

    # The primary header a fresh build of all the FFIs would write: no card is added
    # (the update's provenance goes into HDU 1), so the data does not move.
    if files[0].start < old_starts[0]:
        header = primary_header(product, files[0], files[-1], old_sector, now)
        if files[-1].start < old_starts[-1]:  # the latest FFI is still an old one
            for key in product.last_file_keywords:
                header[key] = (old_primary[key], old_primary.comments[key])
    else:
        header = old_primary
        header["DATE"] = now.date().isoformat()
    if files[-1].start > old_starts[-1]:
        set_last_file_keywords(header, product, files[-1])
    if sector is not None:
        header["SECTOR"] = (sector, "Observing sector")
    primary = encode_primary(header, now)
    before = Provenance.of(fits.Header.fromstring(cube.cube_header)) or Provenance(
        version="", product=product.name, template=None, built=str(old_primary.get("DATE", "")),
        sector=old_sector if isinstance(old_sector, int) and not isinstance(old_sector, bool) else None,
    )
    base = BaseCube(cube.path, cube.data_offset, cube.row_bytes, old_slots)
    return _planned(product, files, shape, table, primary, limits, now, before.updated(now, files), base=base,
                    slots=new_slots)
