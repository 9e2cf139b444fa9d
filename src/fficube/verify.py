"""Check a finished cube: structure, size, table, time order and every HDU's checksums.

The cube is read once, by byte range, in chunks summed as they arrive (in any order:
ones' complement sums commute), so that verifying a 400 GB cube on S3 takes a few
chunks of memory and runs at the speed of the network.

With ``quality`` the quality gate (:mod:`fficube.quality`) is run again on the cube:
its sampled rows (at most 64) are read by byte range, in pieces of whole columns, and
judged as a build judges them, so a build's flags and a verify's agree.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from ._aio import closing, run_tasks
from .checksum import WORD, ZERO, add, data_sum, header_sum
from .cubeinfo import CubeInfo, scan_cube
from .errors import FficubeError, FitsFormatError
from .fitsblocks import data_bytes, header_end, padded
from .layout import pixel_bytes
from .quality import Quality, SampleStats, assess, choose_sample
from .sources import open_location
from .sources.base import ByteSource
from .sources.fsspec import Filesystems

__all__ = ["Check", "Verification", "verify_cube", "check_cube", "cube_quality"]

#: Bytes per read of the cube's data, and reads in flight.
CHUNK = 16 * 2**20
IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class Check:
    """One thing verified: ``status`` is ``"ok"``, ``"FAIL"`` or ``"skip"`` (cannot tell)."""

    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"


@dataclass(frozen=True, slots=True)
class Verification:
    """What :func:`verify_cube` found."""

    path: str
    checks: tuple[Check, ...]
    bytes_read: int = 0
    #: The quality gate's verdicts (asked for with ``quality=True``; None when not
    #: asked, or when the cube's structure or size is wrong).  Flags do not make a
    #: cube unsound: they are about its FFIs.
    quality: Quality | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not count against a cube)."""
        return not any(c.failed for c in self.checks)


def _ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def _fail(name: str, detail: str) -> Check:
    return Check(name, "FAIL", detail)


def _hdu_checks(hdu: int, header: bytes, datasum: int) -> list[Check]:
    """The DATASUM and CHECKSUM checks of one HDU, given its header bytes and data sum."""
    name = f"checksums of HDU {hdu}"
    parsed = fits.Header.fromstring(header.decode("ascii", "replace"))
    recorded = str(parsed.get("DATASUM", "")).strip()
    checksum = str(parsed.get("CHECKSUM", "")).strip()
    # astrocut's info tables carry DATASUM/CHECKSUM cards holding the FFIs' comments:
    # column descriptions, not checksums.
    has_datasum = recorded.isdigit()
    has_checksum = len(checksum) == 16 and checksum.isalnum()
    if not has_datasum and not has_checksum:
        return [Check(name, "skip", "no CHECKSUM or DATASUM (astrocut writes none)")]
    if has_datasum and recorded != str(datasum):
        return [_fail(name, f"DATASUM is {recorded} but the data sums to {datasum}")]
    if not has_checksum:
        return [_ok(name, f"DATASUM {datasum} matches (no CHECKSUM)")]
    if add(header_sum(header), datasum) != WORD:
        return [_fail(name, "CHECKSUM does not verify: the header was changed")]
    return [_ok(name, f"CHECKSUM and DATASUM ({datasum}) verify")]


async def _data_sum(
    source: ByteSource, path: str, start: int, stop: int, on_read: Callable[[int], None] | None
) -> int:
    """Sum bytes ``start:stop`` of ``path`` (``stop - start`` a multiple of 4)."""
    sums: list[int] = []
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(first: int) -> None:
        async with slots:  # bounds memory: IN_FLIGHT chunks at most
            buffer = bytearray(min(CHUNK, stop - first))
            await source.readinto(path, first, memoryview(buffer))
            sums.append(await asyncio.to_thread(data_sum, buffer))
            if on_read is not None:
                on_read(len(buffer))

    await run_tasks([one(first) for first in range(start, stop, CHUNK)])
    return add(ZERO, *sums)


async def check_cube(
    source: ByteSource, path: str, *, read_data: bool = True, on_read: Callable[[int], None] | None = None
) -> tuple[list[Check], CubeInfo | None]:
    """The checks of the cube at ``path``, and its headers and table (None if it has no structure).

    Without ``read_data`` the cube's data is not read: the cube header's CHECKSUM is
    checked against its own DATASUM (a header sealed when the data was complete), which
    with the size and the table tells a complete cube from a cut or unsealed one in a
    few small reads.
    """
    try:
        cube = await scan_cube(source, path)
    except FficubeError as exc:
        return [_fail("structure", str(exc))], None
    rows, cols, n, layers = cube.shape
    checks = [_ok("structure", f"primary HDU, {rows}x{cols}x{n}x{layers} float32 cube, info table")]

    heads = await source.read(path, 0, cube.data_offset)
    primary_end = padded(header_end(heads, 0) or 0)
    table_offset = cube.table_offset
    table = await source.read(path, table_offset, cube.size)
    table_header_end = padded(header_end(table, 0) or 0)
    table_length = data_bytes(fits.Header.fromstring(table[:table_header_end].decode("ascii", "replace")),
                              path=path, hdu=2)
    expected = table_offset + table_header_end + padded(table_length)
    if cube.size == expected:
        checks.append(_ok("size", f"{cube.size:,} bytes, as the headers say"))
    else:
        checks.append(_fail("size", f"{cube.size:,} bytes, but the headers say {expected:,}"))

    n_rows = len(cube.table.data)
    checks.append(
        _ok("table rows", f"{n_rows} rows, one per FFI") if n_rows == n
        else _fail("table rows", f"{n_rows} rows for {n} FFIs")
    )
    product = cube.product
    if product.time_keyword in cube.table.columns.names:
        times = np.asarray(cube.table.data[product.time_keyword], dtype=float)
        steps = np.diff(times)
        if np.all(steps > 0):
            checks.append(_ok("time order", f"{product.time_keyword} increases over all {n} FFIs"))
        else:
            bad = int(np.flatnonzero(~(steps > 0))[0])
            checks.append(_fail("time order", f"FFI {bad + 1} ({cube.names[bad + 1]}) does not start after "
                                              f"FFI {bad} ({cube.names[bad]})"))
    else:
        checks.append(Check("time order", "skip", f"no {product.time_keyword} column"))

    checks += _hdu_checks(0, heads[:primary_end], ZERO)
    cube_header = heads[primary_end: cube.data_offset]
    if read_data:
        cube_sum = await _data_sum(source, path, cube.data_offset, min(table_offset, cube.size) // 4 * 4, on_read)
        checks += _hdu_checks(1, cube_header, cube_sum)
    else:
        recorded = str(fits.Header.fromstring(cube_header.decode("ascii", "replace")).get("DATASUM", "")).strip()
        sealed = _hdu_checks(1, cube_header, int(recorded)) if recorded.isdigit() else [
            _fail("checksums of HDU 1", "no DATASUM: the cube header was never sealed")]
        checks += [Check(c.name + " (header only)", c.status, c.detail) for c in sealed]
    table_data = table[table_header_end: table_header_end + padded(table_length)]
    checks += _hdu_checks(2, table[:table_header_end], data_sum(table_data[: len(table_data) // 4 * 4]))
    return checks, cube


async def cube_quality(source: ByteSource, cube: CubeInfo) -> Quality:
    """Run the quality gate on a finished cube: read its sampled rows and judge them with its table.

    Each sampled row is read from its first to its last sampled column, in pieces of
    at most :data:`CHUNK` bytes (at least one column), :data:`IN_FLIGHT` at a time.

    Raises
    ------
    FitsFormatError
        If the cube's data is cut short.
    """
    _rows, _cols, n, layers = cube.shape
    sample = choose_sample(cube.shape)
    stats = SampleStats(sample, n)
    column_bytes = pixel_bytes(n, layers)
    per_read = max(1, CHUNK // (column_bytes * sample.col_step))  # sampled columns per read
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def piece(index: int, row: int, first: int, count: int) -> None:
        span = (count - 1) * sample.col_step + 1  # columns read: the sampled ones and those between
        start = cube.data_offset + row * cube.row_bytes + (sample.col_start + first * sample.col_step) * column_bytes
        async with slots:
            data = await source.read(cube.path, start, start + span * column_bytes)
            if len(data) < span * column_bytes:
                raise FitsFormatError("the cube's data is cut short: truncated", path=cube.path,
                                      byte_range=(start, start + span * column_bytes))
            pixels = np.frombuffer(data, dtype=">f4").reshape(span, n, layers)
            stats.add(index, first, pixels[:: sample.col_step, :, 0])

    await run_tasks(
        piece(index, row, first, min(per_read, sample.n_cols - first))
        for index, row in enumerate(sample.rows) for first in range(0, sample.n_cols, per_read)
    )
    return assess(stats, cube.table, cube.product)


async def verify_cube(
    path: str | os.PathLike[str], *, anon: bool | None = None, storage_options: Mapping[str, Any] | None = None,
    on_read: Callable[[int], None] | None = None, read_data: bool = True, quality: bool = False,
) -> Verification:
    """Verify the cube at ``path`` (local, ``s3://`` or any ranged fsspec URL).

    Checks the structure (primary HDU, 4-D float32 image, info table with an
    ``FFI_FILE`` column), that the file's size is what its headers say, one table row
    per FFI, strictly increasing start times, and every HDU's ``DATASUM`` and
    ``CHECKSUM`` (skipped, not failed, for cubes without them, such as astrocut's).
    ``on_read`` is called with the size of each chunk of data read.  With
    ``read_data=False`` the data is not read (see :func:`check_cube`): a quick check
    that the cube is complete, not that its pixels are intact.  With ``quality=True``
    the quality gate is run on the cube too (:func:`cube_quality`; ``result.quality``),
    unless its structure or size is wrong.
    """
    path = os.fspath(path)
    async with Filesystems(anon=anon, storage_options=storage_options) as filesystems:
        source = await open_location(path, filesystems, IN_FLIGHT)
        async with closing(source):
            checks, cube = await check_cube(source, path, read_data=read_data, on_read=on_read)
            verdicts = None
            if quality and cube is not None and not any(c.failed for c in checks if c.name in ("structure", "size")):
                verdicts = await cube_quality(source, cube)
        return Verification(path, tuple(checks), source.stats.bytes_read, verdicts)

