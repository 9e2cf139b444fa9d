"""Stage 1: learn each FFI's layout from its headers, with small ranged reads.

A file is never opened with ``astropy.io.fits.open`` and never read whole: the scanner
reads the first header blocks, walks the HDU chain by computing each data size from
its header, and reads a later header (SPOC's HDU 2) at its computed offset.  Headers are parsed card
by card with astropy (:func:`fficube.fitsblocks.parse_cards`), each distinct card once
per process: a sector's FFIs share most of their cards.

The result per file is a frozen :class:`FfiInfo`: where each image layer's bytes are,
how to decode them, the raw header text the plan needs, and the sort key.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._aio import task_group
from .errors import FitsFormatError
from .ffiinfo import BITPIX_DTYPES, FfiInfo, ImageLayout
from .fitsblocks import BLOCK, HeaderWalk, Steps, data_bytes, drive, int_card, padded
from .products import Product, detect_product
from .redact import file_name
from .sources.base import BlockingReads, BlockingSource, ByteSource

__all__ = [
    "FfiInfo", "ImageLayout", "scan", "scan_file", "scan_steps", "scan_blocking", "image_layout", "time_value",
    "sector_of", "has_celestial_wcs",
    "BITPIX_DTYPES",  # FfiInfo, ImageLayout and BITPIX_DTYPES live in fficube.ffiinfo; the scan returns them
]

#: First read of a file: seven blocks are exactly the primary and image headers of 98 %
#: of SPOC FFIs (their science data starts at byte 20160; 14400 without WCS), so one
#: request usually suffices and no data byte is read twice.
FIRST_READ = 7 * BLOCK


# ----------------------------------------------------------------------------------
# Pure header rules


def image_layout(header: Mapping[str, Any], data_offset: int, *, path: str, hdu: int) -> ImageLayout:
    """Describe the 2-D image of one HDU, refusing what fficube would mis-read."""
    if header.get("ZIMAGE") is True:
        raise FitsFormatError(f"HDU {hdu} is a tile-compressed image, which fficube does not read", path=path)
    if hdu > 0 and header.get("XTENSION") != "IMAGE":
        raise FitsFormatError(
            f"HDU {hdu} is a {header.get('XTENSION')!r} extension, not an image: not an FFI", path=path
        )
    naxis = int_card(header, "NAXIS", None, path=path, hdu=hdu)
    if naxis != 2:
        kind = "a cube" if naxis > 2 else "not an image"
        raise FitsFormatError(f"HDU {hdu} has NAXIS = {naxis} ({kind}); an FFI image has 2", path=path)
    bitpix = int_card(header, "BITPIX", None, path=path, hdu=hdu)
    if bitpix not in BITPIX_DTYPES:
        raise FitsFormatError(f"HDU {hdu}: BITPIX = {bitpix} is not a FITS image type", path=path)
    scale: dict[str, float] = {}
    for key, default in (("BSCALE", 1.0), ("BZERO", 0.0)):
        value = header.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise FitsFormatError(f"HDU {hdu}: {key} = {value!r} is not a finite number", path=path)
        scale[key] = float(value)
    blank = header.get("BLANK") if bitpix > 0 else None
    if blank is not None and (isinstance(blank, bool) or not isinstance(blank, int)):
        raise FitsFormatError(f"HDU {hdu}: BLANK = {blank!r} is not an integer", path=path)
    return ImageLayout(
        hdu=hdu,
        offset=data_offset,
        rows=int_card(header, "NAXIS2", None, path=path, hdu=hdu),
        cols=int_card(header, "NAXIS1", None, path=path, hdu=hdu),
        bitpix=bitpix,
        bscale=scale["BSCALE"],
        bzero=scale["BZERO"],
        blank=blank,
    )


#: A sector in a TESS file name: SPOC ``tess...-s0001-1-1-...``, TICA ``..._ffi_s0027-o1-...``.
_SECTOR_IN_NAME = re.compile(r"[-_]s(\d{4})[-_]")


def sector_of(primary: Mapping[str, Any], path: str) -> int | None:
    """The FFI's sector: its primary header's ``SECTOR`` if it has one (TICA FFIs may),
    else the one in its file name (SPOC FFIs carry it there only); None if neither says."""
    value = primary.get("SECTOR")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SECTOR_IN_NAME.search(file_name(path))
    return int(match.group(1)) if match else None


def cadence_of(header: Mapping[str, Any], keyword: str) -> int | None:
    """The cadence number ``keyword`` of ``header``, if it is a whole number."""
    value = header.get(keyword)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def has_celestial_wcs(header: Mapping[str, Any]) -> bool:
    """Whether the header's WCS has celestial axes (``CTYPE1``/``CTYPE2`` RA and DEC)."""
    ctype1, ctype2 = str(header.get("CTYPE1", "")), str(header.get("CTYPE2", ""))
    return ctype1.startswith("RA") and ctype2.startswith("DEC")


def time_value(header: Mapping[str, Any], product: Product, *, path: str) -> float:
    """The FFI's sort key, which must be a finite number."""
    key = product.time_keyword
    if key not in header:
        raise FitsFormatError(
            f"no {key} in HDU {product.image_hdu}: cannot place this FFI in time", path=path
        )
    value = header[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FitsFormatError(f"{key} = {value!r} in HDU {product.image_hdu} is not a finite number", path=path)
    return float(value)


def scan_steps(path: str, size: int, product: Product | None = None) -> Steps[FfiInfo]:
    """Scan one FFI of ``size`` bytes, sans I/O: yields the byte ranges it needs.

    Driven by :func:`scan_file` (awaited reads from any source) or, for local files,
    by :func:`scan_blocking` in a worker thread.  Raises as :func:`scan_file`.
    """
    walk = HeaderWalk(path, size)
    yield from walk.start(FIRST_READ)
    primary, primary_raw, offset = yield from walk.cards_at(0, FIRST_READ)
    detected = detect_product(primary, path=path)
    if product is not None and detected is not product:
        raise FitsFormatError(
            f"this is a {detected.name.upper()} FFI, not {product.name.upper()} "
            f"(use product={detected.name!r} or 'auto')",
            path=path,
        )
    product = detected

    headers = {0: (primary, primary_raw, offset)}
    layers: dict[int, ImageLayout] = {}
    hdu_offset = offset + padded(data_bytes(primary, path=path, hdu=0))
    guess = FIRST_READ
    for hdu in range(max(product.layer_hdus) + 1):
        if hdu > 0:
            if hdu_offset >= size:
                raise FitsFormatError(
                    f"the file ends after HDU {hdu - 1}; a {product.name.upper()} FFI has an image in "
                    f"HDU {hdu}", path=path,
                )
            header, raw, data_offset = yield from walk.cards_at(hdu_offset, guess)
            headers[hdu] = (header, raw, data_offset)
            guess = data_offset - hdu_offset  # the next header is most likely the same size
            hdu_offset = data_offset + padded(data_bytes(header, path=path, hdu=hdu))
        if hdu in product.layer_hdus:
            # Judge each image as soon as its header is known: a table or a cube in
            # HDU 1 is reported as such, not as a missing HDU 2.
            header, _, data_offset = headers[hdu]
            layout = image_layout(header, data_offset, path=path, hdu=hdu)
            end = data_offset + layout.rows * layout.cols * layout.itemsize
            if end > size:
                raise FitsFormatError(
                    f"HDU {hdu} image needs bytes up to {end} but the file has {size}: truncated",
                    path=path,
                    byte_range=(data_offset, end),
                )
            layers[hdu] = layout
    first = layers[product.layer_hdus[0]]
    if any((lay.rows, lay.cols) != (first.rows, first.cols) for lay in layers.values()):
        shapes = ", ".join(f"HDU {lay.hdu}: {lay.rows}x{lay.cols}" for lay in layers.values())
        raise FitsFormatError(f"image layers differ in shape ({shapes})", path=path)

    image, image_raw, _ = headers[product.image_hdu]
    cam_key, ccd_key = product.camera_keywords
    return FfiInfo(
        path=path,
        size=size,
        product=product.name,
        start=time_value(image, product, path=path),
        camera=image.get(cam_key),
        ccd=image.get(ccd_key),
        layers=tuple(layers[h] for h in product.layer_hdus),
        primary_header=primary_raw,
        image_header=image_raw,
        header_bytes=walk.bytes_used,
        is_template=all(image.get(k) == v for k, v in product.template_requirements.items()),
        celestial_wcs=has_celestial_wcs(image),
        sector=sector_of(primary, path),
        cadence=cadence_of(headers[product.cadence_card[0]][0], product.cadence_card[1]),
    )


async def scan_file(source: ByteSource, path: str, product: Product | None = None) -> FfiInfo:
    """Scan one FFI.

    Parameters
    ----------
    source
        Where to read from.
    path
        The file.
    product
        The expected product, or ``None`` to detect it from the headers.

    Raises
    ------
    FitsFormatError
        If the file is not a complete FFI of the product.
    """
    size = await source.size(path)
    return await drive(scan_steps(path, size, product), lambda start, stop: source.read(path, start, stop))


def scan_blocking(reads: BlockingReads, *, paths: Sequence[str], product: Product | None = None) -> list[FfiInfo]:
    """Scan ``paths`` with blocking reads (in a worker thread), in lockstep: the first
    reads of every file, then their parses, then the next reads, and so on.

    Reads of many files in a row keep the thread out of Python (and off the GIL) for
    longer, so that threads scanning side by side take turns less often.
    """
    steps = [scan_steps(path, reads.size(path), product) for path in paths]
    wanted = [next(step) for step in steps]
    found: dict[int, FfiInfo] = {}
    active = list(range(len(paths)))
    while active:
        for i in active:  # the reads of a round are announced first: the disk serves them side by side
            reads.prefetch(paths[i], *wanted[i])
        data = [reads.read(paths[i], *wanted[i]) for i in active]
        waiting = []
        for i, got in zip(active, data, strict=True):
            try:
                wanted[i] = steps[i].send(got)
            except StopIteration as done:
                found[i] = done.value
            else:
                waiting.append(i)
        active = waiting
    return [found[i] for i in range(len(paths))]


#: Files scanned per job of a local source's threads: one thread hop per batch, not
#: one per read (scanning 12,000 FFIs, the hops and their awaits cost twice the CPU
#: of parsing the headers).
SCAN_BATCH = 32
#: Most batches scanned at a time.  One runs at first: parsing holds the GIL, so a
#: second job parsing beside it only takes turns (12,000 cached FFIs: one job 1.8 s and
#: 1.8 CPU-s, two 2.3 s and 2.5 CPU-s).  Another starts when a job spent most of its
#: time waiting (:func:`waits`: slow opens or reads, a cluster's filesystem or a cold
#: disk), so that the disk works while a job parses.  Each round of reads is announced
#: to the kernel first (prefetch).
SCAN_JOBS = 2


#: Seconds a scan job must have waited, at least, for :func:`waits`: a batch of cached
#: files parses in a few milliseconds, and a wait of that order is the GIL's turn
#: going to the event loop, not the disk (a slow filesystem waits 1 ms or more per file).
WAIT_FLOOR = 0.02


def waits(elapsed: float, cpu: float) -> bool:
    """Whether a scan job that took ``elapsed`` seconds, ``cpu`` of them on a CPU,
    mostly waited (for the disk), so that another job can run beside it."""
    waited = elapsed - cpu
    return waited > 0.5 * elapsed and waited > WAIT_FLOOR


def _timed_scan(reads: BlockingReads, *, paths: Sequence[str], product: Product | None
                ) -> tuple[list[FfiInfo], bool]:
    """:func:`scan_blocking`, and whether it mostly waited (:func:`waits`)."""
    started, cpu = time.perf_counter(), time.thread_time()
    infos = scan_blocking(reads, paths=paths, product=product)
    return infos, waits(time.perf_counter() - started, time.thread_time() - cpu)


async def scan(
    paths: Sequence[str],
    source: ByteSource,
    *,
    product: Product | None = None,
    workers: int = 8,
    on_scanned: Callable[[int], None] | None = None,
) -> list[FfiInfo]:
    """Scan ``paths`` concurrently (``workers`` files at a time), results in input order.

    A source that can run blocking jobs (:class:`~fficube.sources.base.BlockingSource`)
    scans batches of up to :data:`SCAN_BATCH` files per job instead: one job at a time,
    up to :data:`SCAN_JOBS` while the jobs mostly wait for the disk.  ``on_scanned(count)``
    is called with the number of files scanned so far.
    """
    blocking = isinstance(source, BlockingSource)
    most = min(SCAN_JOBS, source.concurrency) if blocking else workers
    # Batches small enough that each job takes at least four (progress stays smooth,
    # and a few files are reported one by one).
    batch = max(1, min(SCAN_BATCH, len(paths) // (4 * most))) if blocking else 1
    jobs = iter(range(0, len(paths), batch))
    found: dict[int, list[FfiInfo]] = {}
    done = 0
    running = 1 if blocking else max(1, min(most, len(paths)))  # workers started

    async def one(start: int) -> tuple[list[FfiInfo], bool]:
        chunk = paths[start : start + batch]
        if isinstance(source, BlockingSource):
            result: tuple[list[FfiInfo], bool] = await source.run_blocking(
                functools.partial(_timed_scan, paths=chunk, product=product))
            return result
        return [await scan_file(source, chunk[0], product)], False

    async def worker(tg: asyncio.TaskGroup) -> None:
        nonlocal done, running
        for start in jobs:
            found[start], waited = await one(start)
            done += len(found[start])
            if on_scanned is not None:
                on_scanned(done)
            if waited and running < most:  # the disk is the limit: read beside this job
                running += 1
                tg.create_task(worker(tg))

    async with task_group() as tg:
        for _ in range(running):
            tg.create_task(worker(tg))
    return [info for start in range(0, len(paths), batch) for info in found[start]]
