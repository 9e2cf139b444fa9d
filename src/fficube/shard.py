"""One cube, several workers: each writes its window of the cube's bytes into one shared target.

For cubes of hundreds of GB (200-second sectors), N workers (an AWS Batch or SLURM
array job) build one cube together.  Every worker scans all the FFIs' headers and
makes the same plan; the cube's bytes are cut into N windows of whole units, and
worker K reads only the rows of window K and writes its bytes into the shared target:

* on S3, one multipart upload (windows of whole parts);
* on a local or shared filesystem (NFS, Lustre, GPFS), one file of the cube's full
  size, ``<output>.shards/<token>.partial``, into which each worker writes its window
  (windows of whole MiB).

Coordination happens beside the output, in ``<output>.shards/`` (S3 objects, or
files in a directory), through atomic creation only (a conditional put with
``If-None-Match: *``; a hard link, which fails if the name exists):

* ``plan.json``: the shared target (upload id or partial file), build time and plan
  identity.  Whichever worker comes first creates its target and then this file; a
  worker that loses the race removes its own target and joins the winner's, so all
  agree on one target and one build time.
* ``K.json``: worker K's journal (its parts, or how far its window is durably
  written, with data sums), ``done`` at the end.  A worker that dies is simply run
  again: it continues from its journal.
* ``head`` (S3 only): part 1 (the headers and the first rows), unsealed, saved by the
  worker whose window holds it.
* ``finishing.N``: the claim of the one worker that finishes the cube.

When a worker's window is done and every journal says done, it claims the finish:
only the worker that creates ``finishing.1`` finishes (sums the windows' data sums,
seals the cube header, completes the upload or renames the file); the others wait
until the cube is there.  A claim older than :data:`LEASE` is from a finisher that
died: the next worker takes over with ``finishing.2``.  ``fficube sector --finish``
does the same by hand.  The result is byte-identical to a one-worker build.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from ._aio import closing
from .build import BuildOptions, cube_size_estimate
from .checksum import add, seal_header
from .durable import create_file, sync_directory, write_synced
from .errors import InputError, OptionError, OutputError, OutputExistsError, ResumeError, os_reason
from .inputs import InputsLike, Version, resolve_inputs
from .journal import FinishClaim, Identity, Journal, Part, SharedPlan
from .pipeline import execute
from .plan import CubePlan, Limits, make_plan
from .results import Progress, Reporter
from .scan import scan
from .sinks import open_output
from .sinks.base import CubeSink, Span
from .sinks.local import LocalSink, SharedFile
from .sinks.s3 import Bucket, S3Output, S3Sink, SharedUpload, error_code, part_size_for
from .sources.base import IOStats
from .sources.fsspec import Filesystems
from .sources.locations import S3_PROTOCOLS, protocol_or_local

__all__ = ["ShardResult", "Finish", "build_shard", "finish_cube", "shard_window", "parse_shard", "LEASE", "FILE_UNIT"]

log = logging.getLogger("fficube")

#: Seconds a finisher may take before its claim is taken to be a dead worker's.
LEASE = 30 * 60
#: Windows of a cube file are whole multiples of this (S3 windows are whole parts).
FILE_UNIT = 2**20
#: How often a worker waiting for another's finish looks for the cube (doubling up to the second).
POLL = (0.1, 5.0)


def parse_shard(text: str, array_index: str | None = None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N; ``"index/N"`` takes K from an array job's index (+ 1).

    Raises
    ------
    OptionError
        For text that is not such a shard (``option`` is ``"shard"``).
    """
    k, sep, n = text.partition("/")
    try:
        shards = int(n)
        shard = int(array_index) + 1 if k == "index" and array_index is not None else int(k)
    except (TypeError, ValueError):
        raise OptionError("shard", f"{text!r} is not K/N with 1 <= K <= N (or index/N in an array job)") from None
    if not sep or not 1 <= shard <= shards:
        raise OptionError("shard", f"{text!r} is not K/N with 1 <= K <= N (K = {shard})")
    return shard, shards


def shard_window(total_bytes: int, unit: int, shard: int, shards: int) -> tuple[int, int]:
    """Bytes ``lo:hi`` of the cube that worker ``shard`` of ``shards`` writes: whole units,
    spread as evenly as the units allow (the last unit may be short; a window may be empty)."""
    units = -(-total_bytes // unit)
    first, last = (shard - 1) * units // shards, shard * units // shards
    return min(total_bytes, first * unit), min(total_bytes, last * unit)


@dataclass(frozen=True, slots=True)
class Finish:
    """What a worker (or ``--finish``) found when it tried to finish the cube."""

    #: ``"finished"``: this call finished the cube; ``"complete"``: it was complete (another
    #: worker finished it); ``"waiting"``: shards are not done yet.
    status: Literal["finished", "complete", "waiting"]
    waiting: tuple[int, ...] = ()  #: the shards not done yet

    @property
    def complete(self) -> bool:
        """Whether the cube is complete now."""
        return self.status != "waiting"

    def summary(self) -> str:
        if self.status == "finished":
            return "all shards done, cube completed"
        if self.status == "complete":
            return "the cube is complete (another worker, or an earlier run, finished it)"
        return "waiting for shard(s) " + ", ".join(map(str, self.waiting))


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What one worker did."""

    output: str
    shard: int
    shards: int
    window: tuple[int, int]  #: bytes of the cube this worker wrote
    bytes_read: int
    bytes_written: int
    seconds: float
    finish: Finish

    @property
    def finished(self) -> bool:
        """This worker finished the cube."""
        return self.finish.status == "finished"

    def summary(self) -> str:
        lo, hi = self.window
        return (f"{self.output}: shard {self.shard}/{self.shards}, bytes {lo}-{hi}: read {self.bytes_read:,} bytes, "
                f"wrote {self.bytes_written:,} in {self.seconds:.1f} s; {self.finish.summary()}")


class _Shards(Protocol):
    """The shared target of a sharded build and its coordination objects (``<output>.shards/``)."""

    output: str

    def unit_for(self, cube_bytes: int) -> int:
        """Windows are whole multiples of this."""
        ...

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        """Memory a worker's sink holds."""
        ...

    async def plan(self) -> SharedPlan | None: ...

    async def journal(self, shard: int) -> Journal | None: ...

    async def exists(self) -> bool:
        """Whether the finished cube is at the output."""
        ...

    async def start(self, proposal: SharedPlan) -> SharedPlan:
        """Create a target for ``proposal`` and propose it; return the plan all follow
        (this one, or the one of a worker that came first, whose target is then joined)."""
        ...

    async def claim(self, number: int, claim: FinishClaim) -> bool:
        """Create claim ``number``; False if it exists."""
        ...

    async def read_claim(self, number: int) -> FinishClaim | None: ...

    def sink(self, agreed: SharedPlan, plan: CubePlan, shard: int, window: tuple[int, int],
             journal: Journal) -> CubeSink:
        """The sink that writes worker ``shard``'s window into the shared target."""
        ...

    async def complete(self, agreed: SharedPlan, records: Sequence[Journal]) -> bool:
        """Seal the cube header and make the cube visible; False if it already was."""
        ...

    async def remove(self) -> None:
        """Remove the coordination objects (the cube is complete): the plan first."""
        ...


class _S3Shards:
    """Objects under ``<output>.shards/`` and one multipart upload."""

    def __init__(self, out: S3Output, stats: IOStats) -> None:
        self.out, self.output = out, out.location
        self.bucket = Bucket(out.fs, self.output, stats=stats)
        self.prefix = f"{self.bucket.key}.shards/"

    def key(self, name: str) -> str:
        return self.prefix + name

    def unit_for(self, cube_bytes: int) -> int:
        return part_size_for(cube_bytes)

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        return self.out.reserve(cube_bytes, max_memory)

    async def plan(self) -> SharedPlan | None:
        raw = await self.bucket.get(self.key("plan.json"))
        return None if raw is None else SharedPlan.decode(raw, self.bucket.url_of(self.key("plan.json")))

    async def journal(self, shard: int) -> Journal | None:
        raw = await self.bucket.get(self.key(f"{shard}.json"))
        return None if raw is None else Journal.decode(raw, self.bucket.url_of(self.key(f"{shard}.json")))

    async def exists(self) -> bool:
        return await self.bucket.exists()

    async def start(self, proposal: SharedPlan) -> SharedPlan:
        response = await self.bucket.call("starting the upload", "create_multipart_upload")
        mine = replace(proposal, upload_id=response["UploadId"])
        if await self.bucket.put(self.key("plan.json"), mine.encode(), only_new=True):
            return mine
        # Another worker came first: use its upload.
        await self.bucket.call("aborting a duplicate upload", "abort_multipart_upload", UploadId=mine.upload_id)
        agreed = await self.plan()
        assert agreed is not None
        return agreed

    async def claim(self, number: int, claim: FinishClaim) -> bool:
        return await self.bucket.put(self.key(f"finishing.{number}"), claim.encode(), only_new=True)

    async def read_claim(self, number: int) -> FinishClaim | None:
        raw = await self.bucket.get(self.key(f"finishing.{number}"))
        return None if raw is None else FinishClaim.decode(raw, self.bucket.url_of(self.key(f"finishing.{number}")))

    async def _save_head(self, head: bytes) -> None:
        await self.bucket.put(self.key("head"), head)

    def sink(self, agreed: SharedPlan, plan: CubePlan, shard: int, window: tuple[int, int],
             journal: Journal) -> CubeSink:
        assert agreed.upload_id is not None
        upload = SharedUpload(agreed.upload_id, window, self.key(f"{shard}.json"), self._save_head)
        return S3Sink(self.out.fs, self.output, total_bytes=plan.total_bytes, span=Span.of(plan), journal=journal,
                      stats=IOStats(), shared=upload, max_memory=plan.memory.budget)

    async def complete(self, agreed: SharedPlan, records: Sequence[Journal]) -> bool:
        assert agreed.upload_id is not None
        if await self.exists():
            return False  # a finisher before us completed it (and is cleaning up, or died doing so)
        head = await self.bucket.get(self.key("head"))
        if head is None:
            if await self.exists():
                return False  # a finisher before us completed it, and died before cleaning up
            raise OutputError("every shard is done but part 1 was never saved (the shards' "
                              f"{self.key('head')} object): run the shard holding byte 0 again", path=self.output)
        parts: dict[int, Part] = {n: p for r in records for n, p in r.parts.items()}
        span = Span(*agreed.span)
        datasum = add(span.sum(0, head), *(p.datasum for p in parts.values()))
        sealed = seal_header(agreed.cube_header, datasum)
        offset = agreed.header_offset
        head = head[:offset] + sealed + head[offset + len(sealed):]
        try:
            await self.bucket.complete(agreed.upload_id, head, parts)
        except OutputError as exc:
            if error_code(exc) == "NoSuchUpload" and await self.exists():
                return False  # completed by a finisher before us
            raise
        return True

    async def remove(self) -> None:
        # The plan first: without it nobody takes the objects left (if this stops half way)
        # for a build under way, and the cube is complete.
        await self.bucket.delete(self.key("plan.json"))
        for key in await self.bucket.keys(self.prefix):
            await self.bucket.delete(key)


class _FileShards:
    """Files in the directory ``<output>.shards/``, and one pre-sized partial file in it."""

    def __init__(self, output: str) -> None:
        self.output = output
        self.directory = output + ".shards"

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def unit_for(self, cube_bytes: int) -> int:
        return FILE_UNIT

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        return 0

    async def _read(self, name: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(self.path(name), "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return None

        return await asyncio.to_thread(read)

    async def plan(self) -> SharedPlan | None:
        raw = await self._read("plan.json")
        return None if raw is None else SharedPlan.decode(raw, self.path("plan.json"))

    async def journal(self, shard: int) -> Journal | None:
        raw = await self._read(f"{shard}.json")
        return None if raw is None else Journal.decode(raw, self.path(f"{shard}.json"))

    async def exists(self) -> bool:
        return os.path.isfile(self.output)

    def _create_target(self, size: int) -> str:
        """A new file of ``size`` bytes (zeros, sparse) in the directory; its name."""
        os.makedirs(self.directory, exist_ok=True)
        name = f"{os.urandom(8).hex()}.partial"
        write_synced(self.path(name), os.O_EXCL, size=size)
        return name

    async def start(self, proposal: SharedPlan) -> SharedPlan:
        try:
            name = await asyncio.to_thread(self._create_target, proposal.total_bytes)
            mine = replace(proposal, partial=name)
            if await asyncio.to_thread(create_file, self.path("plan.json"), mine.encode()):
                return mine
            os.unlink(self.path(name))  # another worker came first: use its file
        except OSError as exc:
            raise OutputError(f"cannot start the shared build: {os_reason(exc)}", path=self.output) from exc
        agreed = await self.plan()
        assert agreed is not None
        return agreed

    async def claim(self, number: int, claim: FinishClaim) -> bool:
        try:
            return await asyncio.to_thread(create_file, self.path(f"finishing.{number}"), claim.encode())
        except FileNotFoundError:
            return False  # the directory is gone: a finisher completed the cube and cleaned up

    async def read_claim(self, number: int) -> FinishClaim | None:
        raw = await self._read(f"finishing.{number}")
        return None if raw is None else FinishClaim.decode(raw, self.path(f"finishing.{number}"))

    def sink(self, agreed: SharedPlan, plan: CubePlan, shard: int, window: tuple[int, int],
             journal: Journal) -> CubeSink:
        assert agreed.partial is not None
        shared = SharedFile(self.path(agreed.partial), window, self.path(f"{shard}.json"))
        return LocalSink(self.output, span=Span.of(plan), total_bytes=plan.total_bytes, journal=journal,
                         shared=shared)

    def _complete(self, agreed: SharedPlan, datasum: int) -> bool:
        assert agreed.partial is not None
        partial = self.path(agreed.partial)
        if not os.path.exists(partial):
            if os.path.isfile(self.output):
                return False  # a finisher before us completed it, and died before cleaning up
            raise OutputError(f"every shard is done but the shared file {partial} is gone", path=self.output)
        sealed = seal_header(agreed.cube_header, datasum)
        fd = os.open(partial, os.O_WRONLY)
        try:
            os.pwrite(fd, sealed, agreed.header_offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(partial, self.output)  # unlike a rename, never replaces a file that is there
        except FileExistsError:
            if not os.path.samefile(partial, self.output):
                raise OutputExistsError("appeared during the build; not replaced", path=self.output) from None
        os.unlink(partial)
        sync_directory(self.output)
        return True

    async def complete(self, agreed: SharedPlan, records: Sequence[Journal]) -> bool:
        datasum = add(*(r.datasum for r in records))
        try:
            return await asyncio.to_thread(self._complete, agreed, datasum)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"finishing the cube failed: {os_reason(exc)}", path=self.output) from exc

    async def remove(self) -> None:
        def remove() -> None:
            try:  # the plan first, as on S3
                os.unlink(self.path("plan.json"))
            except FileNotFoundError:
                pass
            shutil.rmtree(self.directory, ignore_errors=True)

        await asyncio.to_thread(remove)


async def _open_shards(output: str, filesystems: Filesystems) -> _Shards:
    protocol = protocol_or_local(output)
    if protocol is None:
        return _FileShards(output)
    if protocol in S3_PROTOCOLS:
        out = await open_output(output, filesystems)
        assert isinstance(out, S3Output)
        return _S3Shards(out, filesystems.stats)
    raise InputError("a cube built by several workers goes to a local (shared) filesystem or to s3://",
                     path=output)


async def build_shard(
    inputs: InputsLike,
    output: str,
    shard: int,
    shards: int,
    *,
    product: str = "auto",
    sector: int | None = None,
    max_memory: int | float | str = "4GB",
    concurrency: int | None = None,
    anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> ShardResult:
    """Build worker ``shard``'s window (1-based, of ``shards``) of the cube at ``output``.

    ``output`` is an ``s3://`` URL or a path (on a filesystem all workers share).  Run
    it once per worker, in any order or all at once; a worker that fails is run again
    and continues.  Exactly one worker finishes the cube: the first to claim it once
    every window is written.

    Raises
    ------
    InputError
        If ``output`` is neither a path nor an ``s3://`` URL, or the inputs are bad.
    ResumeError
        If the workers do not agree (other inputs, another number of shards).
    """
    started = time.monotonic()
    options = BuildOptions.check(product=product, max_memory=max_memory, concurrency=concurrency, resume=True,
                                 restart=False)
    async with Filesystems(anon=anon, storage_options=storage_options,
                           concurrency=options.concurrency) as filesystems:
        store = await _open_shards(output, filesystems)
        if await store.plan() is None and await store.exists():  # finished: a late or repeated worker
            return ShardResult(output, shard, shards, (0, 0), 0, 0, time.monotonic() - started, Finish("complete"))
        found = await resolve_inputs(inputs, options.product, filesystems)
        source = await found.source(filesystems, options.concurrency)
        async with closing(source):
            ffis = await scan(found.paths, source, product=options.product, workers=source.concurrency * 2)
            layers = len(ffis[0].layers) if ffis else 0
            cube_bytes = cube_size_estimate(ffis[0].shape if ffis else (0, 0), len(ffis), layers)
            limits = Limits.for_build(options.max_memory, source.concurrency, local=source.local,
                                      reserved=store.reserve(cube_bytes, options.max_memory))

            def plan_at(now: dt.datetime) -> CubePlan:
                return make_plan(ffis, limits, sector=sector, now=now)

            versions = {p: found.version(p) for p in found.paths}
            agreed = await _join(store, plan_at, shards, store.unit_for(cube_bytes), versions)
            plan = plan_at(agreed.now)
            identity = Identity.of(plan, versions)
            changes = agreed.identity.changes(identity)
            if changes or agreed.shards != shards:
                raise ResumeError(
                    "this worker's build differs from the one the shards share ("
                    + "; ".join(changes or [f"{agreed.shards} shards, not {shards}"]) + ")", path=output,
                )
            window = shard_window(plan.total_bytes, agreed.part_size, shard, shards)
            record = await store.journal(shard)
            written = 0
            if not (record and record.done):
                fresh = Journal(identity, agreed.now, part_size=agreed.part_size, shard=shard)
                sink = store.sink(agreed, plan, shard, window, record or fresh)
                report = Reporter(progress, [source], started)
                report.sink = sink
                await execute(plan, source, sink, resume=record,
                              on_block=lambda done, total: report("write", done, total, plan.total_bytes))
                written = sink.bytes_written
            finish = await _finish(store, f"shard {shard}")
            return ShardResult(output, shard, shards, window, source.stats.bytes_read, written,
                               time.monotonic() - started, finish)


async def _join(
    store: _Shards, plan_at: Callable[[dt.datetime], CubePlan], shards: int, unit: int,
    versions: Mapping[str, Version],
) -> SharedPlan:
    """The shared plan: read it, or start the shared target and the plan if this worker is first."""
    agreed = await store.plan()
    if agreed is not None:
        return agreed
    if await store.exists():  # finished between this worker's start and now
        raise InputError("already exists (finished meanwhile, or by an earlier run); run this worker again "
                         "to see it complete, or delete the cube to build it again", path=store.output)
    now = dt.datetime.now().replace(microsecond=0)
    plan = plan_at(now)
    return await store.start(SharedPlan(
        now=now, shards=shards, part_size=unit, total_bytes=plan.total_bytes,
        header_offset=len(plan.primary_header), cube_header=plan.cube_header,
        span=(plan.data_offset, plan.data_offset + plan.data_bytes),
        # Every worker (this one too) checks its own plan against this one.
        identity=Identity.of(plan, versions),
    ))


async def _finish(store: _Shards, who: str) -> Finish:
    """Finish the cube if every shard is done and this worker wins the claim; else say why not."""
    agreed = await store.plan()
    if agreed is None:
        if await store.exists():
            return Finish("complete")
        raise InputError("no sharded build of this cube is under way", path=store.output)
    records = [await store.journal(k) for k in range(1, agreed.shards + 1)]
    done = [r for r in records if r is not None and r.done]
    if len(done) < agreed.shards:
        waiting = tuple(k for k, r in enumerate(records, 1) if not (r and r.done))
        log.info("%s: waiting for shard(s) %s", store.output, ", ".join(map(str, waiting)))
        return Finish("waiting", waiting)
    mine = FinishClaim(who, socket.gethostname(), os.getpid(), dt.datetime.now(dt.UTC))
    number, pause, told = 1, POLL[0], False
    while not await store.claim(number, mine):
        held = await store.read_claim(number)
        if held is None and await store.plan() is None:  # finished and cleaned up meanwhile
            if await store.exists():
                return Finish("complete")
            raise InputError("the sharded build of this cube was removed while it was being finished",
                             path=store.output)
        if held is not None and held.age() > LEASE:
            log.warning("%s: %s (pid %d on %s) claimed the finish %.0f s ago and has not finished: taking over",
                        store.output, held.by, held.pid, held.host, held.age())
            number += 1
            continue
        if await store.exists():
            return Finish("complete")
        if not told and held is not None:
            log.info("%s: %s is finishing the cube; waiting for it", store.output, held.by)
            told = True
        await asyncio.sleep(pause)
        pause = min(2 * pause, POLL[1])
    completed = await store.complete(agreed, done)
    await store.remove()
    return Finish("finished" if completed else "complete")


async def finish_cube(
    output: str, *, filesystems: Filesystems | None = None, anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Finish:
    """Finish a sharded cube if every shard is done (``--finish``).

    Safe to call at any time, from any number of processes: exactly one call finishes
    the cube (``status == "finished"``); the others wait until it is complete
    (``"complete"``), or report the shards not done yet (``"waiting"``).
    """
    if filesystems is None:
        async with Filesystems(anon=anon, storage_options=storage_options) as own:
            return await finish_cube(output, filesystems=own)
    return await _finish(await _open_shards(output, filesystems), "finish")
