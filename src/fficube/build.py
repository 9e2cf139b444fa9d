"""The async API: resolve inputs, scan, plan, then run fetch -> assemble -> write.

:func:`build_cube` is the whole build; :func:`execute` runs a plan.  One
``asyncio.TaskGroup`` owns the three stage tasks, connected by queues:

* ``free_slabs`` / ``ready``: the slab pool (bounded by the plan), fetch -> assemble;
* ``free_blocks`` / ``full_blocks``: one or two block buffers, assemble -> write.

Buffers circulate instead of being allocated per block, so what the pipeline holds is
fixed by the plan: ``plan.memory.total`` bytes at most.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from collections.abc import Mapping
from typing import Any

from ._aio import run_tasks
from .assemble import Block, assemble_blocks
from . import journal
from .errors import InputError, OutputError, OutputExistsError, ResumeError
from .fetch import fetch_slabs, new_base_pool, new_slab_pool
from .inputs import DuplicateInputWarning, Inputs, InputsLike, resolve_inputs
from .plan import GROUP, CubePlan, make_plan, plan_update
from .products import PRODUCTS, Product, get_product
from .redact import file_name
from .remote import S3_PROTOCOLS, Filesystems, is_url, protocol_of
from .scan import scan, scan_cube
from .storage import ByteSource, FsspecSource, IOStats, LocalSource, RetryPolicy, fs_request
from .units import format_bytes, parse_size
from .write import CubeSink, LocalSink, S3Sink, Span, discard_upload, partial_path, write_cube

__all__ = [
    "build_cube", "update_cube", "execute", "BuildResult", "Progress", "DEFAULT_CONCURRENCY", "plan_options",
    "open_source", "upload_reserve", "Reporter",
]

log = logging.getLogger("fficube")

#: Reads in flight for local files: a few keep a disk busy; more only add seeks.
DEFAULT_CONCURRENCY = 4
#: Requests in flight for remote files: enough to hide tens of ms of latency.
DEFAULT_REMOTE_CONCURRENCY = 32
#: Largest block when reading local files (measured, 100 full-size FFIs: 4.4 s with
#: blocks of 128 MB or 64 MB, 4.7 s with 256 MB, 12 s with 870 MB and 25 s as one
#: 3.6 GB block: the pipeline fills and drains faster, and huge fresh buffers cost a
#: page fault per 4 kB). Remote reads keep budget-sized blocks: bigger blocks mean
#: bigger, fewer requests.
LOCAL_MAX_BLOCK_BYTES = 128 * 10**6
#: ... but never so small that one read (an FFI layer's rows of a block) is under
#: 256 kB: with thousands of FFIs the cap would otherwise mean many tiny reads.
LOCAL_MIN_READ = 256 * 1024


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress report, passed to the ``progress`` callback.

    ``stage`` is ``"scan"`` (``done``/``total`` count files) or ``"write"``
    (``done``/``total`` count blocks).
    """

    stage: str
    done: int
    total: int
    bytes_read: int
    bytes_written: int
    total_bytes: int  #: size of the finished cube (0 while scanning)
    elapsed: float


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did."""

    output: str
    shape: tuple[int, int, int, int]  #: (rows, cols, n_ffis, layers)
    n_ffis: int
    blocks: int
    block_rows: int
    bytes_read: int
    bytes_written: int
    requests: int  #: read requests, retries included
    retries: int  #: transient failures retried (reads and uploads)
    seconds: float
    product: str
    max_in_flight: int = 0  #: most read requests in flight at once
    resumed_rows: int = 0  #: cube rows an interrupted build had already written

    @property
    def read_rate(self) -> float:
        """Bytes read per second."""
        return self.bytes_read / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people."""
        rows, cols, n, layers = self.shape
        return (
            f"{self.output}: {self.product.upper()} cube {rows}x{cols}x{n}x{layers} "
            f"({format_bytes(self.bytes_written)}) from {self.n_ffis} FFIs in {self.seconds:.1f} s, "
            f"{self.blocks} block(s); read {format_bytes(self.bytes_read)} in {self.requests} requests "
            f"({format_bytes(self.read_rate)}/s), {self.retries} retried"
            + (f"; resumed with {self.resumed_rows} of {rows} rows already written" if self.resumed_rows else "")
        )


async def execute(
    plan: CubePlan,
    source: ByteSource,
    sink: CubeSink,
    *,
    resume: Mapping[str, Any] | None = None,
    on_block: Callable[[int, int], None] | None = None,
    base_source: ByteSource | None = None,
) -> CubePlan:
    """Run a plan: read, assemble and write the cube into ``sink``, then commit it.

    With ``resume`` (a journal's state) the sink continues where that build stopped
    and only the missing rows are read.  On an error or cancellation the sink is
    aborted: it keeps what it recorded as saved, and removes anything else.  Returns
    the plan as run (its ``row_ranges`` say which rows were written).
    """
    try:
        needed = await sink.open(resume)
        plan = replace(plan, row_ranges=rows_to_write(plan, needed))
        rows, cols, n, layers = plan.shape
        free_blocks: asyncio.Queue[np.ndarray] = asyncio.Queue()
        for _ in range(plan.memory.block_buffers):
            free_blocks.put_nowait(np.empty((plan.block_rows, cols, n, layers), dtype=">f4"))
        full_blocks: asyncio.Queue[Block | None] = asyncio.Queue(maxsize=1)
        n_blocks = len(plan.blocks)
        done = (lambda index: on_block(index + 1, n_blocks)) if on_block is not None else None
        if on_block is not None:
            on_block(0, n_blocks)
        await run_tasks(
            [
                fetch_slabs(plan, source, new_slab_pool(plan), ready := asyncio.Queue(), base_source,
                            new_base_pool(plan)),
                assemble_blocks(plan, ready, free_blocks, full_blocks),
                write_cube(plan, sink, full_blocks, free_blocks, done),
            ]
        )
        await sink.commit()
    except BaseException:
        await asyncio.shield(sink.abort())
        raise
    return plan


def rows_to_write(plan: CubePlan, needed: list[tuple[int, int]]) -> tuple[tuple[int, int], ...] | None:
    """The cube rows holding the bytes ``needed`` (byte ranges of the output), merged;
    None for all of them."""
    rows = plan.shape[0]
    ranges: list[tuple[int, int]] = []
    for first, last in needed:
        first, last = max(first, plan.data_offset), min(last, plan.data_offset + plan.data_bytes)
        if last <= first:
            continue  # headers or table only: the writer always writes those
        start, stop = plan.row_of(first), plan.row_of(last - 1) + 1
        if ranges and start <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(stop, ranges[-1][1]))
        else:
            ranges.append((start, stop))
    return None if ranges == [(0, rows)] else tuple(ranges)


def _check_local_output(output: str, inputs: list[str], overwrite: bool) -> None:
    real = os.path.realpath(output)
    if any(os.path.realpath(path) == real for path in inputs):
        raise InputError("the output is one of the inputs; choose another output path", path=output)
    if os.path.isdir(output):
        raise OutputExistsError("is a directory; give the cube's file name", path=output)
    if os.path.exists(output) and not overwrite:
        raise OutputExistsError("already exists; use overwrite=True (--overwrite) to replace it", path=output)
    # Fail before reading anything when the cube cannot be written there.
    parent = os.path.dirname(os.path.abspath(output))
    while not os.path.exists(parent):  # missing directories are created
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"cannot write here: {parent} is not a directory", path=output)
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write here: no permission to write in {parent}", path=output)


async def _check_remote_output(output: str, inputs: list[str], overwrite: bool, filesystems: Filesystems) -> None:
    protocol = protocol_of(output)
    if protocol not in S3_PROTOCOLS:
        raise OutputError(f"cannot write cubes to {protocol}://; give a local path or an s3:// URL", path=output)
    if output in inputs:
        raise InputError("the output is one of the inputs; choose another output path", path=output)
    fs = await filesystems.get(protocol, output=True)
    if not overwrite and await fs_request(fs, "exists", output, stats=filesystems.stats):
        raise OutputExistsError("already exists; use overwrite=True (--overwrite) to replace it", path=output)


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
) -> BuildResult:
    """Build an FFI cube.

    Parameters
    ----------
    inputs
        FFI files, directories (their ``*ffic.fits`` / ``*_img.fits`` files), glob
        patterns, or fsspec URLs (``s3://bucket/key``, prefixes, globs, ``https://``
        objects), or a list of them; all local, or all of one protocol.
    output
        The cube: a local path or an ``s3://`` URL (streamed as a multipart upload).
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
        over.

    Returns
    -------
    BuildResult

    Raises
    ------
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
    wanted = get_product(product)
    budget = parse_size(max_memory)
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    output = os.fspath(output)
    filesystems = Filesystems(anon=anon, storage_options=storage_options)
    try:
        found = await resolve_inputs(inputs, wanted, filesystems)
        remote_out = is_url(output)
        if remote_out:
            await _check_remote_output(output, found.paths, overwrite, filesystems)
        else:
            _check_local_output(output, found.paths, overwrite)
        source, concurrency = await open_source(found, concurrency, filesystems)
        try:
            return await _build(
                found, output, source, filesystems, wanted=wanted, budget=budget, sector=sector,
                concurrency=concurrency, overwrite=overwrite, progress=progress, started=started,
                remote_out=remote_out, resume=resume, restart=restart,
            )
        finally:
            await asyncio.shield(source.aclose())
    finally:
        await asyncio.shield(filesystems.aclose())


async def open_source(
    found: Inputs, concurrency: int | None, filesystems: Filesystems
) -> tuple[ByteSource, int]:
    """The byte source for the inputs, and the concurrency it uses."""
    if found.protocol is None:
        concurrency = concurrency or DEFAULT_CONCURRENCY
        return LocalSource(concurrency), concurrency
    concurrency = concurrency or DEFAULT_REMOTE_CONCURRENCY
    fs = await filesystems.get(found.protocol)
    return FsspecSource(fs, concurrency, sizes=found.sizes), concurrency


class Reporter:
    """Sends :class:`Progress` reports; bytes come from the sources and, once set, the sink."""

    def __init__(self, progress: Callable[[Progress], None] | None, sources: list[ByteSource], started: float):
        self.progress, self.sources, self.started = progress, sources, started
        self.sink: CubeSink | None = None

    def __call__(self, stage: str, done: int, total: int, total_bytes: int) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    stage, done, total, sum(s.stats.bytes_read for s in self.sources),
                    self.sink.bytes_written if self.sink else 0, total_bytes, time.monotonic() - self.started,
                )
            )


async def _build(
    found: Inputs, output: str, source: ByteSource, filesystems: Filesystems, *, wanted: Product | None,
    budget: int, sector: int | None, concurrency: int, overwrite: bool,
    progress: Callable[[Progress], None] | None, started: float, remote_out: bool, resume: bool, restart: bool,
) -> BuildResult:
    upload_stats = IOStats()
    report = Reporter(progress, [source], started)
    paths = found.paths

    log.info("scanning %d file(s)", len(paths))
    ffis = await scan(
        paths, source, product=wanted, workers=concurrency * 2,
        on_scanned=lambda done: report("scan", done, len(paths), 0),
    )
    state = await _interrupted_build(output, filesystems, resume=resume, restart=restart)
    layers = len(ffis[0].layers) if ffis else 0
    reserved, estimate = upload_reserve(remote_out, ffis[0].shape if ffis else (0, 0), len(ffis), layers)
    now = _build_time(state)
    plan = make_plan(ffis, max_memory=budget, sector=sector, reserved=reserved, now=now,
                     **plan_options(concurrency, local=isinstance(source, LocalSource)))
    versions = {path: found.version(path) for path in paths}
    sink = await _make_sink(output, plan, versions, state, filesystems, now=now, overwrite=overwrite,
                            total_bytes=estimate, stats=upload_stats)
    log.info("template %s", plan.template.name if plan.template else "-")
    return await _run(plan, source, sink, filesystems, report, started, budget, upload_stats, state)


async def _interrupted_build(
    output: str, filesystems: Filesystems, *, resume: bool, restart: bool
) -> dict[str, Any] | None:
    """The journal of an interrupted build of ``output`` to continue, if any and asked for.

    With ``restart`` the interrupted build is discarded; without ``resume`` or
    ``restart`` its presence is an error (hours of work are not thrown away silently).
    """
    where = journal.journal_path(output)
    try:
        if is_url(output):
            fs = await filesystems.get(protocol_of(output), output=True)
            try:
                raw = await fs_request(fs, "cat_file", where, stats=filesystems.stats)
            except FileNotFoundError:
                return None
            state = journal.decode(raw, where)
        else:
            local = journal.LocalJournal(output)
            if not local.exists():
                return None
            state = local.load()
    except ValueError as exc:
        if not restart:
            raise ResumeError(f"{exc}; use --restart to start over", path=output) from exc
        state = {}
    if restart:
        await _discard(output, state, filesystems)
        return None
    if not resume:
        raise ResumeError(
            "an interrupted build of this cube is saved here: run the same build with --resume "
            "(resume=True) to continue it, or --restart (restart=True) to start over", path=output,
        )
    return state


async def _discard(output: str, state: Mapping[str, Any], filesystems: Filesystems) -> None:
    """Remove an interrupted build: its partial file or upload, and its journal."""
    log.info("discarding the interrupted build of %s", output)
    if is_url(output):
        fs = await filesystems.get(protocol_of(output), output=True)
        await discard_upload(fs, output, state.get("upload_id"), RetryPolicy(), filesystems.stats)
        return
    try:
        os.unlink(partial_path(output))
    except FileNotFoundError:
        pass
    journal.LocalJournal(output).remove()


def _build_time(state: Mapping[str, Any] | None) -> dt.datetime:
    """The time written into the headers: the first run's, when resuming."""
    return dt.datetime.fromisoformat(state["now"]) if state else dt.datetime.now().replace(microsecond=0)


def plan_options(concurrency: int, *, local: bool) -> dict[str, Any]:
    """The planning options a build uses (so that tools can plan exactly as it does).

    ``read_ahead``: slab buffers for the reads in flight plus room for the assembler to
    gather whole groups; ``max_block_bytes`` and ``min_read``: the local block cap.
    """
    return {
        "read_ahead": max(2 * concurrency, 2 * GROUP),  # groups use at most half the pool
        "max_block_bytes": LOCAL_MAX_BLOCK_BYTES if local else None,
        "min_read": LOCAL_MIN_READ if local else 0,
    }


def upload_reserve(remote_out: bool, shape: tuple[int, int], n_ffis: int, layers: int) -> tuple[int, int]:
    """(bytes an S3 upload holds, estimated cube size) for a cube of that shape."""
    if not remote_out:
        return 0, 0
    # The upload's part size follows the cube's size; headers and table are small.
    estimate = shape[0] * shape[1] * n_ffis * layers * 4 + 64 * 2**20
    return S3Sink.memory(estimate), estimate


async def _make_sink(
    output: str, plan: CubePlan, versions: Mapping[str, journal.Version], state: Mapping[str, Any] | None,
    filesystems: Filesystems, *, now: dt.datetime, overwrite: bool, total_bytes: int, stats: IOStats,
) -> CubeSink:
    """The sink for ``output``; checks that an interrupted build (``state``) had this plan."""
    identity = journal.plan_identity(plan, versions)
    if state is not None:
        changes = journal.identity_changes(state.get("identity", {}), identity)
        if changes:
            raise ResumeError(
                "cannot resume: the build differs from the interrupted one (" + "; ".join(changes)
                + "); use --restart to start over", path=output,
            )
        if not is_url(output):
            partial = partial_path(output)
            if not os.path.isfile(partial) or os.path.getsize(partial) < int(state["offset"]):
                raise ResumeError(f"cannot resume: {partial} is missing or shorter than its journal says; "
                                  "use --restart to start over", path=output)
    record = {"identity": identity, "now": now.isoformat()}
    span = Span.of(plan)
    if is_url(output):
        fs = await filesystems.get(protocol_of(output), output=True)
        part_size = int(state["part_size"]) if state else None
        return S3Sink(fs, output, total_bytes=total_bytes or plan.total_bytes, span=span, state=record,
                      part_size=part_size, overwrite=overwrite, stats=stats)
    return LocalSink(output, span=span, total_bytes=plan.total_bytes, state=record, overwrite=overwrite)


async def _run(plan: CubePlan, source: ByteSource, sink: CubeSink, filesystems: Filesystems, report: Reporter,
               started: float, budget: int, upload_stats: IOStats, state: Mapping[str, Any] | None,
               base_source: ByteSource | None = None) -> BuildResult:
    log.info(
        "%s cube %s: %d FFI(s) to read, %d block(s) of %d row(s); memory %s of %s",
        plan.product.name.upper(), "x".join(map(str, plan.shape)), len(plan.files), len(plan.blocks),
        plan.block_rows, format_bytes(plan.memory.total), format_bytes(budget),
    )
    report.sink = sink
    ran = await execute(
        plan, source, sink, base_source=base_source, resume=state,
        on_block=lambda done, total: report("write", done, total, plan.total_bytes),
    )
    sources = [source] + ([base_source] if base_source is not None and base_source is not source else [])
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
        seconds=time.monotonic() - started,
        product=plan.product.name,
        max_in_flight=max(s.stats.max_in_flight for s in sources),
        resumed_rows=plan.shape[0] - sum(b - a for a, b in ran.blocks) if state else 0,
    )


async def update_cube(
    cube: str | os.PathLike[str],
    new_inputs: InputsLike,
    *,
    output: str | os.PathLike[str] | None = None,
    sector: int | None = None,
    max_memory: int | float | str = "4GB",
    concurrency: int | None = None,
    overwrite: bool = False,
    progress: Callable[[Progress], None] | None = None,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    resume: bool = False,
    restart: bool = False,
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

    Other parameters are those of :func:`build_cube` (``resume`` continues an
    interrupted update, if the cube and the new FFIs are unchanged).

    Raises
    ------
    InputError
        If no FFI is new, or new FFIs do not match the cube (product, camera, CCD,
        shape, sector); nothing is written then.
    """
    started = time.monotonic()
    cube = os.fspath(cube)
    output = os.fspath(output) if output is not None else cube
    budget = parse_size(max_memory)
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    filesystems = Filesystems(anon=anon, storage_options=storage_options)
    sources: list[ByteSource] = []
    try:
        if is_url(cube):
            cube_source: ByteSource = FsspecSource(
                await filesystems.get(protocol_of(cube), output=True), concurrency or DEFAULT_REMOTE_CONCURRENCY
            )
        else:
            if not os.path.isfile(cube):
                raise InputError("no such cube", path=cube)
            cube_source = LocalSource(concurrency or DEFAULT_CONCURRENCY)
        sources.append(cube_source)
        old = await scan_cube(cube_source, cube)
        existing = set(old.names)
        found = await resolve_inputs(new_inputs, PRODUCTS[old.product], filesystems)
        new_paths = []
        for path in found.paths:
            if file_name(path) in existing:
                warnings.warn(f"{path}: already in the cube; skipped", DuplicateInputWarning, stacklevel=1)
            else:
                new_paths.append(path)
        if not new_paths:
            raise InputError(f"none of the {len(found.paths)} FFI(s) is new: all are in the cube already", path=cube)
        if output != cube:
            if is_url(output):
                await _check_remote_output(output, new_paths, overwrite, filesystems)
            else:
                _check_local_output(output, new_paths, overwrite)
        source, concurrency = await open_source(found, concurrency, filesystems)
        sources.append(source)
        report = Reporter(progress, sources, started)
        ffis = await scan(
            new_paths, source, product=PRODUCTS[old.product], workers=concurrency * 2,
            on_scanned=lambda done: report("scan", done, len(new_paths), 0),
        )
        rows, cols, n_old, layers = old.shape
        reserved, estimate = upload_reserve(is_url(output), (rows, cols), n_old + len(ffis), layers)
        state = await _interrupted_build(output, filesystems, resume=resume, restart=restart)
        now = _build_time(state)
        plan = plan_update(old, ffis, max_memory=budget, sector=sector, reserved=reserved, now=now,
                           **plan_options(concurrency, local=isinstance(source, LocalSource)))
        versions = {path: found.version(path) for path in new_paths}
        versions[cube] = await _cube_version(cube, filesystems)
        upload_stats = IOStats()
        # Replacing the cube itself is the point of an update: no overwrite needed.
        sink = await _make_sink(output, plan, versions, state, filesystems, now=now,
                                overwrite=overwrite or output == cube, total_bytes=estimate, stats=upload_stats)
        return await _run(plan, source, sink, filesystems, report, started, budget, upload_stats, state,
                          base_source=cube_source)
    finally:
        for src in sources:
            await asyncio.shield(src.aclose())
        await asyncio.shield(filesystems.aclose())


async def _cube_version(cube: str, filesystems: Filesystems) -> journal.Version:
    if not is_url(cube):
        return journal.local_version(cube)
    fs = await filesystems.get(protocol_of(cube), output=True)
    return journal.remote_version(await fs_request(fs, "info", cube, stats=filesystems.stats))
