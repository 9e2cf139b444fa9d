"""Helpers for tests that need a plan or a rewritten FFI."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from astropy.io import fits

from fficube.plan import CubePlan, make_plan
from fficube.scan import scan, scan_file
from fficube.storage import LocalSource


def _with_source(work):
    """Run ``work(source)`` with a fresh LocalSource, closed afterwards."""

    async def run():
        source = LocalSource(4)
        try:
            return await work(source), source.stats
        finally:
            await source.aclose()

    return asyncio.run(run())


def scan_paths(paths: list[str]):
    return _with_source(lambda source: scan(paths, source))[0]


def scan_one(path, product=None):
    """(FfiInfo, IOStats) of one file."""
    return _with_source(lambda source: scan_file(source, str(path), product))


def plan_of(paths: list[str], max_memory: int, **kw) -> CubePlan:
    return make_plan(scan_paths(paths), max_memory=max_memory, **kw)


def budget_for_rows(paths: list[str], rows: int, **kw) -> int:
    """The smallest max_memory whose plan uses blocks of exactly ``rows`` rows, found by
    bisection, planning as a local build with the default concurrency does."""
    from fficube.build import DEFAULT_CONCURRENCY, plan_options

    kw = {**plan_options(DEFAULT_CONCURRENCY, local=True), **kw}
    ffis = scan_paths(paths)
    lo, hi = 1, 1 << 40
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            got = make_plan(ffis, max_memory=mid, **kw).block_rows
        except ValueError:
            got = 0
        if got >= rows:
            hi = mid
        else:
            lo = mid + 1
    assert make_plan(ffis, max_memory=lo, **kw).block_rows == rows, "no budget gives that block size"
    return lo


def rewrite_ffi(path: str, new_path: str, *, image_cards: dict | None = None, scale: dict | None = None) -> str:
    """Copy an FFI, changing image-header cards (both layers) or storing the layers scaled.

    ``scale`` is passed to ``ImageHDU.scale`` (``type``, ``bscale``, ``bzero``).
    """
    with fits.open(path) as hdus:
        for hdu in hdus[1:]:
            for key, value in (image_cards or {}).items():
                hdu.header[key] = value
            if scale:
                hdu.scale(**scale)
        hdus.writeto(new_path, checksum=True, overwrite=True)
    if new_path != path and os.path.exists(path):
        os.remove(path)
    return new_path


def data_and_header_bytes(paths: list[str], hdus: tuple[int, ...] = (0, 1, 2)) -> tuple[int, int]:
    """Image data bytes and header bytes of the HDUs a build reads, as astropy sees them."""
    data = header = 0
    for path in paths:
        with fits.open(path) as hdul:
            for i in hdus:
                info = hdul.fileinfo(i)
                header += info["datLoc"] - info["hdrLoc"]
                if hdul[i].header.get("NAXIS") == 2:
                    data += hdul[i].header["NAXIS1"] * hdul[i].header["NAXIS2"] * abs(hdul[i].header["BITPIX"]) // 8
    return data, header


async def cancel_after_blocks(blocks: int, start: Callable[[Callable], Awaitable]) -> None:
    """Run ``start(progress)`` (a build or an update given that progress callback) as a
    task and cancel it once ``blocks`` blocks are written; it must end cancelled."""
    task: asyncio.Task | None = None

    def progress(p) -> None:
        if p.stage == "write" and p.done == blocks:
            task.cancel()

    task = asyncio.ensure_future(start(progress))
    try:
        await task
    except asyncio.CancelledError:
        return
    raise AssertionError("the build ended before it could be cancelled")
