"""The async API: :func:`build_cube` and :func:`update_cube`.

Both resolve and scan their inputs, then go down one private path, :func:`_build`:
find an interrupted build of the output, plan within the limits, check that a
resumed build has the same plan, and run the pipeline (:mod:`fficube.pipeline`) into
the output's sink (:mod:`fficube.sinks`).  They differ only in the planner
(:func:`~fficube.plan.make_plan` or :func:`~fficube.plan.plan_update`) and in the
base source an update copies the old cube's rows from.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from astropy.io import fits

from ._aio import closing
from .cubeinfo import scan_cube
from .errors import DuplicateInputWarning, InputError, OptionError, OutputError, OutputExistsError, ResumeError
from .inputs import Inputs, InputsLike, Version, resolve_inputs, version_of
from .journal import Identity, Journal
from .layout import cube_data_bytes
from .pipeline import execute
from .pixelstats import (
    FFI_CHOICES,
    PixelStats,
    add_from_cube,
    check_stats_target,
    cube_wcs,
    select_ffis,
    stats_hdus,
    stats_writer,
    write_stats,
)
from .plan import CubePlan, Limits, make_plan, plan_update
from .products import Product, get_product
from .quality import QualityGate
from .redact import file_name
from .results import BuildResult, Progress, Reporter
from .scan import FfiInfo, scan
from .sinks import Output, complete_cube, interrupted_build, open_output
from .sources import open_location, open_source
from .sources.base import ByteSource, IOStats
from .sources.fsspec import Filesystems
from .sources.locations import protocol_or_local
from .sources.policy import IOPolicy
from .stage import Staged, remove_staged, stage_inputs
from .units import format_bytes, parse_size

__all__ = ["build_cube", "update_cube", "BuildOptions", "cube_size_estimate"]

log = logging.getLogger("fficube")

#: GETs in flight while staging, unless ``concurrency`` says otherwise.
DEFAULT_STAGE_GETS = 32

#: A planner: limits and the build time in, a plan out.
Planner = Callable[[Limits, dt.datetime], CubePlan]


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """The options common to builds and updates, checked."""

    product: Product | None  #: None: detected from each file
    max_memory: int  #: bytes
    concurrency: int | None  #: None: the source's default
    resume: bool
    restart: bool
    quality: bool = True  #: run the quality gate
    pixel_stats: str | None = None  #: where to write per-pixel statistics (None: not made)
    stats_ffis: str = "good"  #: which FFIs they use
    #: How storage is used (retries, hedges, requests, connections): carried to the
    #: build's filesystems, and from them to every source, sink and connection pool.
    policy: IOPolicy = field(default_factory=IOPolicy)

    @classmethod
    def check(
        cls, *, product: str = "auto", max_memory: int | float | str, concurrency: int | None, resume: bool,
        restart: bool, quality: bool = True, pixel_stats: str | os.PathLike[str] | None = None,
        stats_ffis: str = "good",
    ) -> BuildOptions:
        """The options, or an :class:`~fficube.errors.OptionError` naming the one that is wrong."""
        try:
            budget = parse_size(max_memory)
        except ValueError as exc:
            raise OptionError("max_memory", str(exc)) from None
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):
            raise OptionError("concurrency", f"must be a whole number of at least 1, not {concurrency!r}")
        if resume and restart:
            raise OptionError("resume", "resume and restart exclude each other: give one of them")
        if stats_ffis not in FFI_CHOICES:
            raise OptionError("stats_ffis", f"{stats_ffis!r} is not one of {', '.join(FFI_CHOICES)}")
        return cls(get_product(product), budget, concurrency, bool(resume), bool(restart), bool(quality),
                   os.fspath(pixel_stats) if pixel_stats is not None else None, stats_ffis)


def cube_size_estimate(shape: tuple[int, int], n_ffis: int, layers: int) -> int:
    """At least the size of a cube of ``n_ffis`` FFIs of ``shape``: data, plus room for headers and table."""
    return cube_data_bytes((shape[0], shape[1], n_ffis, layers)) + 64 * 2**20


async def build_cube(
    inputs: InputsLike,
    output: str | os.PathLike[str],
    *,
    product: str = "auto",
    sector: int | None = None,
    max_memory: int | float | str = "4GB",
    concurrency: int | None = None,
    overwrite: bool = False,
    progress: Callable[[Progress], None] | None = None,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    restart: bool = False,
    quality: bool = True,
    stage: str | os.PathLike[str] | None = None,
    keep_stage: bool = False,
    pixel_stats: str | os.PathLike[str] | None = None,
    stats_ffis: str = "good",
) -> BuildResult:
    """Build an FFI cube.

    Parameters
    ----------
    inputs
        FFI files, directories (their ``*ffic.fits`` / ``*_img.fits`` files), glob
        patterns, or fsspec URLs (``s3://bucket/key``, prefixes, globs, ``https://``
        objects), or a list of them; all local, or all of one protocol.
    output
        The cube: a local path, an ``s3://`` URL (streamed as a multipart upload) or a
        ``mem://`` name (held in this process's memory, :mod:`fficube.sinks.memory`).
    product
        ``"spoc"``, ``"tica"`` or ``"auto"`` (detected from each file's headers).
    sector
        Sector number for the primary header's ``SECTOR`` (undefined if ``None``).
    max_memory
        What the pipeline may hold: bytes, or a size such as ``"4GB"``.
    concurrency
        Requests in flight at most (default 4 for local files, 32 for remote ones).
    overwrite
        Replace an existing output.
    progress
        Called with a :class:`Progress` after each file scanned and each block written.
    anon
        Read S3 inputs anonymously (public buckets such as ``stpubdata``); an S3
        output is still written with your credentials.
    storage_options
        Passed to the fsspec filesystems (``endpoint_url``, ``requester_pays``,
        ``profile``, ``client_kwargs={"region_name": ...}``, ...).
    resume
        Continue an interrupted build of ``output`` where it stopped (its journal,
        ``<output>.journal``, says where), if there is one; else build from scratch.
        The result is byte-identical to an uninterrupted build.  ``max_memory`` and
        ``concurrency`` may differ from the first run; the inputs and headers may not.
    restart
        Discard an interrupted build of ``output`` (partial file or upload) and start
        over (a staged build also fetches its inputs again).
    quality
        Run the quality gate (:mod:`fficube.quality`) on the FFIs as they pass:
        ``result.quality`` says which are all zero, all NaN, constant, without WCS,
        after a gap, or of a repeated cadence.  It never changes the cube; ``False``
        skips it (as for benchmarks).
    stage
        A local directory (an instance's NVMe, a node's scratch disk) to copy the remote
        inputs into, whole, before building from the copies (:mod:`fficube.stage`):
        a few GETs of 8-16 MiB per FFI instead of one per FFI per block.  Free space is
        checked first; copies that a previous run left (checked against the listing's
        size and ETag) are reused.  The cube is the one a direct build makes.
    keep_stage
        Keep the copies after a successful staged build (by default they are removed).
    pixel_stats
        Also write per-pixel statistics over time to this file (local or URL): the
        median image, a robust scatter, the good samples and a mask
        (:mod:`fficube.pixelstats`), made of each block while it is in memory, so no
        byte is read twice.  The cube is the same with or without them.
    stats_ffis
        Which FFIs the statistics use: ``"good"`` (quality flags 0, and no all-zero or
        constant frame rows) or ``"all"``.

    Returns
    -------
    BuildResult

    Raises
    ------
    OptionError
        An option's value cannot be used (the error names the option).
    InputError
        Bad or inconsistent inputs (a subclass names the problem).
    MemoryBudgetError
        ``max_memory`` cannot hold one row of the cube.
    ReadError, OutputError
        Reading an input or writing the output failed (after retries, if transient).
        What was written and recorded before is kept for ``resume``.
    ResumeError
        ``output`` has an interrupted build and neither ``resume`` nor ``restart`` was
        given, or ``resume`` found that the inputs or headers changed since.
    """
    started = time.monotonic()
    options = BuildOptions.check(product=product, max_memory=max_memory, concurrency=concurrency, resume=resume,
                                 restart=restart, quality=quality, pixel_stats=pixel_stats, stats_ffis=stats_ffis)
    output = os.fspath(output)
    async with Filesystems(anon=anon, storage_options=storage_options, concurrency=options.concurrency,
                           policy=options.policy) as filesystems:
        found = await resolve_inputs(inputs, options.product, filesystems)
        if stage is not None and found.protocol is None:
            raise OptionError("stage", "the inputs are local files: there is nothing to stage")
        out = await open_output(output, filesystems)
        if options.resume and not overwrite and await out.exists() and await out.load_journal() is None:
            return await _already_complete(out, found.paths, filesystems, started, sector=sector)
        await out.check(found.paths, overwrite=overwrite)
        check_stats_target(options.pixel_stats, output, found.paths)
        async with out.lock():
            report = Reporter(progress, [], started)
            # The one place where a staged build differs from a direct one.
            reading: _Direct | _Copies = (
                _Direct(found) if stage is None
                else _Copies(await _stage(found, os.fspath(stage), out, filesystems, options, report)))
            async with closing(await reading.source(filesystems, options.concurrency)) as source:
                report.sources = [source]
                ffis = await _scan(reading.paths, source, options.product, report)
                versions = reading.versions()

                def planner(limits: Limits, now: dt.datetime) -> CubePlan:
                    return make_plan(ffis, limits, sector=sector, now=now)

                layers = len(ffis[0].layers) if ffis else 0
                cube_bytes = cube_size_estimate(ffis[0].shape if ffis else (0, 0), len(ffis), layers)
                result = await _build(out, planner, cube_bytes, source, versions, report, filesystems, options,
                                      overwrite=overwrite, origins=reading.origins)
            return await reading.done(result, keep=keep_stage)


@dataclass(frozen=True, slots=True)
class _Direct:
    """A build that reads its inputs where they are."""

    found: Inputs
    origins: None = None  #: the paths are the inputs themselves

    @property
    def paths(self) -> list[str]:
        return self.found.paths

    async def source(self, filesystems: Filesystems, concurrency: int | None) -> ByteSource:
        return await self.found.source(filesystems, concurrency)

    def versions(self) -> dict[str, Version]:
        """Each input's version, taken after the scan (a local file's mtime as the build saw it)."""
        return {path: self.found.version(path) for path in self.found.paths}

    async def done(self, result: BuildResult, *, keep: bool) -> BuildResult:
        return result


@dataclass(frozen=True, slots=True)
class _Copies:
    """A staged build: it reads local copies of its remote inputs, and says how the staging went."""

    staged: Staged

    @property
    def paths(self) -> list[str]:
        return self.staged.paths

    @property
    def origins(self) -> dict[str, str]:
        """copy -> the URL it was fetched from."""
        return self.staged.origins

    async def source(self, filesystems: Filesystems, concurrency: int | None) -> ByteSource:
        return await open_source(None, filesystems)

    def versions(self) -> dict[str, Version]:
        """copy -> the remote version it holds."""
        return self.staged.versions

    async def done(self, result: BuildResult, *, keep: bool) -> BuildResult:
        """``result`` with the staging's counts; the copies removed unless ``keep``."""
        if not keep:
            await asyncio.to_thread(remove_staged, self.staged)
        return replace(result, staged=self.staged.fetched, staged_reused=self.staged.reused,
                       stage_requests=self.staged.stats.requests, stage_bytes=self.staged.stats.bytes_read)


async def _stage(found: Inputs, directory: str, out: Output, filesystems: Filesystems, options: BuildOptions,
                 report: Reporter) -> Staged:
    """Copy the remote inputs into ``directory``, reporting progress as stage ``"stage"``."""
    total = sum(v.size for v in found.versions.values())
    log.info("staging %d file(s), %s, in %s", len(found.paths), format_bytes(total), directory)

    def on_file(done: int, files: int, stats: IOStats) -> None:
        if report.progress is not None:
            report.progress(Progress("stage", done, files, stats.bytes_read, 0, total,
                                     time.monotonic() - report.started))

    # A local cube is written beside the copies if it goes to the same filesystem:
    # it is about as large as its inputs.
    cube = [] if protocol_or_local(out.location) else [(out.location, total)]
    return await stage_inputs(found, directory, filesystems, concurrency=options.concurrency or DEFAULT_STAGE_GETS,
                              max_memory=options.max_memory, also_on_disk=cube, restart=options.restart,
                              on_file=on_file)


async def update_cube(
    cube: str | os.PathLike[str],
    new_inputs: InputsLike,
    *,
    output: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    sector: int | None = None,
    max_memory: int | float | str = "4GB",
    resume: bool = False,
    restart: bool = False,
    concurrency: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    quality: bool = True,
    pixel_stats: str | os.PathLike[str] | None = None,
    stats_ffis: str = "good",
) -> BuildResult:
    """Add new FFIs to a cube, in one streaming pass within ``max_memory``.

    The result is the cube a fresh build of the old and new FFIs would give (FFIs in
    time order, table rows merged, float32 data), with HISTORY cards saying when and
    with what it was updated.  For each block of rows, the old cube's rows are read in
    one range and the new FFIs' rows are interleaved.  The old cube is replaced only
    once the new one is completely written (an atomic rename locally, a completed
    upload on S3), so an interrupted update leaves it untouched.

    Parameters
    ----------
    cube
        The existing cube (a path or an ``s3://`` URL).
    new_inputs
        New FFIs, as for :func:`build_cube`.  FFIs already in the cube (same file
        name) are skipped with a warning.
    output
        Where to write the updated cube (default: replace ``cube``).
    overwrite
        Replace an existing ``output`` other than ``cube``.
    sector, max_memory, resume, restart, concurrency, progress, anon, storage_options, quality
        As for :func:`build_cube` (``resume`` continues an interrupted update, if the
        cube and the new FFIs are unchanged; the quality gate judges the old FFIs and
        the new ones).
    pixel_stats, stats_ffis
        As for :func:`build_cube`: the statistics of the whole updated cube.

    Returns
    -------
    BuildResult

    Raises
    ------
    InputError
        If no FFI is new, or new FFIs do not match the cube (product, camera, CCD,
        shape, sector); nothing is written then.
    OptionError, MemoryBudgetError, ReadError, OutputError, ResumeError
        As for :func:`build_cube`.
    """
    started = time.monotonic()
    options = BuildOptions.check(max_memory=max_memory, concurrency=concurrency, resume=resume, restart=restart,
                                 quality=quality, pixel_stats=pixel_stats, stats_ffis=stats_ffis)
    cube = os.fspath(cube)
    output = os.fspath(output) if output is not None else cube
    async with Filesystems(anon=anon, storage_options=storage_options, concurrency=options.concurrency,
                           policy=options.policy) as filesystems:
        # The cube lives where the user writes: read it with the output's credentials.
        cube_source = await open_location(cube, filesystems, options.concurrency, output=True)
        async with closing(cube_source):
            old = await scan_cube(cube_source, cube)
            found = await resolve_inputs(new_inputs, old.product, filesystems)
            existing = set(old.names)
            new_paths = [path for path in found.paths if file_name(path) not in existing]
            skipped = [file_name(path) for path in found.paths if file_name(path) in existing]
            if skipped:  # one warning, not one per FFI: an update is often given the whole folder
                shown = ", ".join(skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
                warnings.warn(f"{len(skipped)} FFI(s) already in the cube, skipped: {shown}",
                              DuplicateInputWarning, stacklevel=2)
            if not new_paths:
                raise InputError(f"none of the {len(found.paths)} FFI(s) is new: all are in the cube already",
                                 path=cube)
            out = await open_output(output, filesystems)
            if output != cube:
                await out.check(new_paths, overwrite=overwrite)
            check_stats_target(options.pixel_stats, output, [cube, *new_paths])
            async with out.lock(), closing(await found.source(filesystems, options.concurrency)) as source:
                report = Reporter(progress, [source, cube_source], started)
                ffis = await _scan(new_paths, source, old.product, report)
                versions = {path: found.version(path) for path in new_paths}
                versions[cube] = await version_of(cube, filesystems, output=True)

                def planner(limits: Limits, now: dt.datetime) -> CubePlan:
                    return plan_update(old, ffis, limits, sector=sector, now=now)

                rows, cols, n_old, layers = old.shape
                # Replacing the cube itself is the point of an update: no overwrite needed.
                return await _build(out, planner, cube_size_estimate((rows, cols), n_old + len(ffis), layers), source,
                                    versions, report, filesystems, options, overwrite=overwrite or output == cube,
                                    base_source=cube_source)


async def _already_complete(out: Output, paths: Sequence[str], filesystems: Filesystems, started: float, *,
                            sector: int | None = None) -> BuildResult:
    """The result of resuming a build that had finished: the cube is checked (quickly), not rebuilt.

    Raises
    ------
    OutputExistsError
        If the cube there is not complete, not of these inputs, or of another sector
        than ``sector`` (when given).
    """
    there = await complete_cube(out.location, filesystems)
    cube = there.cube
    if cube is None:
        raise OutputExistsError(f"already exists but is not a complete cube ({there.problem}); "
                                "use overwrite=True to replace it", path=out.location)
    given, built = sorted(file_name(p) for p in paths), sorted(cube.names)
    if given != built:
        raise OutputExistsError(f"already exists, a cube of other FFIs ({len(built)} FFIs, {len(given)} given); "
                                "use overwrite=True to replace it", path=out.location)
    if sector is not None:
        built_sector = fits.Header.fromstring(cube.primary_header).get("SECTOR")
        if built_sector != sector:
            which = f"of sector {built_sector}" if built_sector is not None else "without a sector"
            raise OutputExistsError(f"already exists, a cube {which} (sector {sector} given); "
                                    "use overwrite=True to replace it", path=out.location)
    rows = cube.shape[0]
    return BuildResult(
        output=out.location, shape=cube.shape, n_ffis=cube.shape[2], blocks=0, block_rows=rows,
        bytes_read=there.stats.bytes_read, bytes_written=0, requests=there.stats.requests,
        retries=there.stats.retries + filesystems.stats.retries, seconds=time.monotonic() - started,
        product=cube.product.name, cube_bytes=cube.size, already_complete=True,
    )


async def _scan(paths: Sequence[str], source: ByteSource, product: Product | None, report: Reporter) -> list[FfiInfo]:
    log.info("scanning %d file(s)", len(paths))
    return await scan(paths, source, product=product, workers=source.concurrency * 2,
                      on_scanned=lambda done: report("scan", done, len(paths), 0))


async def _build(
    out: Output, planner: Planner, cube_bytes: int, source: ByteSource, versions: Mapping[str, Version],
    report: Reporter, filesystems: Filesystems, options: BuildOptions, *, overwrite: bool,
    base_source: ByteSource | None = None, origins: Mapping[str, str] | None = None,
) -> BuildResult:
    """Plan and write a cube into ``out``, continuing an interrupted build if asked."""
    journal = await interrupted_build(out, resume=options.resume, restart=options.restart)
    now = journal.now if journal else dt.datetime.now().replace(microsecond=0)
    limits = Limits.for_build(options.max_memory, source.concurrency, local=source.local,
                              reserved=out.reserve(cube_bytes, options.max_memory), quality=options.quality,
                              pixel_stats=options.pixel_stats is not None)
    plan = planner(limits, now)
    identity = Identity.of(plan, versions, origins)
    if journal is not None:
        changes = journal.identity.changes(identity)
        if changes:
            raise ResumeError("cannot resume: the build differs from the interrupted one (" + "; ".join(changes)
                              + "); use restart=True to start over", path=out.location)
        await out.check_resumable(journal)
    upload_stats = IOStats()
    sink = out.sink(plan, journal or Journal(identity, now), overwrite=overwrite, stats=upload_stats)
    log.info(
        "%s cube %s: %d FFI(s) to read, %d block(s) of %d row(s); memory %s of %s; template %s",
        plan.product.name.upper(), "x".join(map(str, plan.shape)), len(plan.files), len(plan.blocks),
        plan.block_rows, format_bytes(plan.memory.total), format_bytes(options.max_memory),
        plan.template.name if plan.template else "-",
    )
    report.sink = sink
    gate = QualityGate(plan.shape) if options.quality else None
    table = fits.BinTableHDU.fromstring(plan.info_table)
    stats = (PixelStats(plan.shape, select_ffis(table, plan.product, options.stats_ffis))
             if options.pixel_stats is not None else None)
    ran = await execute(plan, source, sink, base_source=base_source, resume=journal, observer=gate, stats=stats,
                        on_block=lambda done, total: report("write", done, total, plan.total_bytes))
    quality = None
    if gate is not None:
        quality = await asyncio.to_thread(gate.result, table, plan.product, plan.cadences())
    reread = (0, 0)
    if stats is not None and options.pixel_stats is not None:
        reread = await _finish_stats(stats, options.pixel_stats, sink.location, plan, table, filesystems,
                                     options.max_memory)
    sources = report.sources
    return BuildResult(
        output=sink.location,
        shape=plan.shape,
        n_ffis=plan.n_ffis,
        blocks=len(ran.blocks),
        block_rows=plan.block_rows,
        bytes_read=sum(s.stats.bytes_read for s in sources),
        bytes_written=sink.bytes_written,
        requests=sum(s.stats.requests for s in sources),
        retries=sum(s.stats.retries for s in sources) + upload_stats.retries + filesystems.stats.retries,
        seconds=time.monotonic() - report.started,
        product=plan.product.name,
        max_in_flight=max(s.stats.max_in_flight for s in sources),
        hedges=sum(s.stats.hedges for s in sources),
        resumed_rows=plan.shape[0] - sum(b - a for a, b in ran.blocks) if journal else 0,
        cube_bytes=plan.total_bytes,
        quality=quality,
        pixel_stats=options.pixel_stats,
        stats_rows_reread=reread[0],
        stats_bytes_reread=reread[1],
    )


async def _finish_stats(stats: PixelStats, target: str, cube: str, plan: CubePlan, table: fits.BinTableHDU,
                        filesystems: Filesystems, budget: int) -> tuple[int, int]:
    """Complete the pixel statistics of a committed cube and write them to ``target``.

    Rows the build did not see (a resumed build's rows written before the
    interruption) are read from the finished cube.  Returns those rows and the bytes
    read for them.

    Raises
    ------
    OutputError
        If the statistics failed or cannot be written; the cube is complete all the same.
    """
    missing = stats.missing() if stats.error is None else []
    rows = sum(b - a for a, b in missing)
    read = 0
    try:
        if stats.error is not None:
            raise stats.error
        if missing:
            log.info("pixel statistics: %d row(s) written before the interruption, read from the cube", rows)
            source = await open_location(cube, filesystems, 4, output=True)
            async with closing(source):
                info = await scan_cube(source, cube)
                read = await add_from_cube(stats, source, info, budget, missing)
        hdus = await asyncio.to_thread(stats_hdus, stats, cube=cube, table=table, product=plan.product,
                                       wcs=cube_wcs(table), time_column=plan.product.time_keyword)
        await write_stats(hdus, target, await stats_writer(target, filesystems))
    except OutputError:
        raise
    except Exception as exc:
        raise OutputError(f"the pixel statistics failed ({exc}); the cube {cube} is complete: "
                          f"'fficube stats {cube} -o {target}' makes them from it", path=target) from exc
    return rows, read
