"""Helpers shared by the tests: plans, rewritten FFIs, the CLI in-process, cubes compared.

Fixtures live in ``conftest.py``; everything a test imports lives here (or in
``cube_compare.py``, ``s3_proxy.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from astropy.io import fits

from fficube.cli import main
from fficube.cubeinfo import CubeInfo, scan_cube
from fficube.plan import CubePlan, Limits, make_plan
from fficube.scan import scan, scan_file
from fficube.sources.local import LocalSource
from fficube.sources.policy import DEFAULT_LOCAL_CONCURRENCY, DEFAULT_REMOTE_CONCURRENCY
from fficube.synthetic import SectorSpec, make_sector

STAMPS = [
    (re.compile(rb"DATE    = '\d{4}-\d\d-\d\d'"), b"DATE    = 'YYYY-MM-DD'"),
    (re.compile(rb"checksum updated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"), b"checksum updated YYYY-MM-DDThh:mm:ss"),
    # A header's CHECKSUM covers its own time stamps, so it changes with them.
    (re.compile(rb"CHECKSUM= '[0-9A-Za-z]{16}'"), b"CHECKSUM= '................'"),
    # fficube's provenance cards in HDU 1 (build date, template, updates): the template
    # follows the input order, which does not change the data or the table.
    (re.compile(rb"(FC[A-Z0-9]{1,6} *= ).{70}"), rb"\1" + b"." * 70),
]


def without_build_stamps(data: bytes) -> bytes:
    """Cube bytes with the build date, the checksums' time stamps and CHECKSUM blanked.

    Those cards hold (or depend on) the time of the build; all other bytes of two
    cubes of the same FFIs must be equal.
    """
    for pattern, replacement in STAMPS:
        data = pattern.sub(replacement, data)
    return data


def astrocut_cube(paths: list[str], output: Path, sector: int | None = 1) -> bytes:
    """The cube astrocut's CubeFactory makes of ``paths``, as bytes."""
    from astrocut import CubeFactory

    CubeFactory().make_cube(list(paths), str(output), sector=sector, verbose=False)
    return output.read_bytes()


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


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


def scan_cube_at(path) -> CubeInfo:
    """The CubeInfo of a cube file (its headers and table)."""
    return _with_source(lambda source: scan_cube(source, str(path)))[0]


def scan_one(path, product=None):
    """(FfiInfo, IOStats) of one file."""
    return _with_source(lambda source: scan_file(source, str(path), product))


def plan_of(paths: list[str], max_memory: int, **kw) -> CubePlan:
    return make_plan(scan_paths(paths), Limits(max_memory, **kw))


def budget_for_rows(paths: list[str], rows: int, *, remote: bool = False, **kw) -> int:
    """The smallest max_memory whose plan uses blocks of exactly ``rows`` rows, found by
    bisection, planning as a local build (``remote``: a build from remote inputs) with
    the default concurrency does (``kw`` overrides fields of its :class:`Limits`)."""
    concurrency = DEFAULT_REMOTE_CONCURRENCY if remote else DEFAULT_LOCAL_CONCURRENCY
    build = Limits.for_build(1, concurrency, local=not remote, quality=True)  # the gate is on by default
    ffis = scan_paths(paths)

    def rows_at(budget: int) -> int:
        try:
            return make_plan(ffis, dataclasses.replace(build, max_memory=budget, **kw)).block_rows
        except ValueError:
            return 0

    lo, hi = 1, 1 << 40
    while lo < hi:
        mid = (lo + hi) // 2
        if rows_at(mid) >= rows:
            hi = mid
        else:
            lo = mid + 1
    assert rows_at(lo) == rows, "no budget gives that block size"
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


def build(paths: list[str], out: Path, *, sector: int = 1) -> str:
    """A cube of ``paths`` at ``out`` (several blocks: a small budget)."""
    import fficube

    fficube.make_cube(paths, out, sector=sector, max_memory="1MB", overwrite=True)
    return str(out)


def make_public(s3, key: str) -> None:
    """Let anonymous clients read ``key``, as the TESS bucket does."""
    s3.client.put_bucket_acl(Bucket=s3.bucket, ACL="public-read")
    s3.client.put_object_acl(Bucket=s3.bucket, Key=key, ACL="public-read")


def make_archive(root: Path, targets, *, n_ffis: int = 4, shape=(24, 30)) -> dict[tuple[int, int], list[str]]:
    """Synthetic FFIs in the archive's layout: root/s0001/YYYY/DDD/C-D/tess...ffic.fits."""
    made = {}
    for camera, ccd in targets:
        flat = make_sector(root / "flat" / f"{camera}-{ccd}",
                           SectorSpec(n_ffis=n_ffis, shape=shape, camera=camera, ccd=ccd, seed=camera * 10 + ccd,
                                      no_wcs=()))
        placed = []
        for path in flat:
            name = Path(path).name  # tess{YYYY}{DDD}{hhmmss}-s0001-C-D-...
            year, day = name[4:8], name[8:11]
            target = root / "ffi" / "s0001" / year / day / f"{camera}-{ccd}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
            placed.append(str(target))
        made[(camera, ccd)] = sorted(placed)  # as a glob or a directory gives them (the template is the first)
    return made
