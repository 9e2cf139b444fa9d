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

Each output kind coordinates its own shards (:meth:`~fficube.sinks.base.Output.shards`,
a :class:`~fficube.sinks.base.Shards`); this module is the protocol between the workers.

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
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .._aio import closing
from ..build import BuildOptions, cube_size_estimate
from ..errors import InputError, OptionError, ResumeError
from ..inputs import InputsLike, Version, resolve_inputs
from ..journal import FinishClaim, Identity, Journal, SharedPlan
from ..pipeline import execute
from ..plan import CubePlan, Limits, make_plan
from ..results import Progress, Reporter
from ..scan import scan
from ..sinks import Shards, open_shards
from ..sources.fsspec import Filesystems

__all__ = ["ShardResult", "Finish", "build_shard", "finish_cube", "shard_window", "parse_shard", "LEASE"]

log = logging.getLogger("fficube")

#: Seconds a finisher may take before its claim is taken to be a dead worker's.
LEASE = 30 * 60
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

    ``output`` is an ``s3://`` URL, a path (on a filesystem all workers share) or a
    ``mem://`` name (workers in this process).  Run
    it once per worker, in any order or all at once; a worker that fails is run again
    and continues.  Exactly one worker finishes the cube: the first to claim it once
    every window is written.

    Raises
    ------
    InputError
        If ``output`` is of no output kind (``fficube.sinks.KINDS``), or the inputs are bad.
    ResumeError
        If the workers do not agree (other inputs, another number of shards).
    """
    started = time.monotonic()
    options = BuildOptions.check(product=product, max_memory=max_memory, concurrency=concurrency, resume=True,
                                 restart=False)
    async with Filesystems(anon=anon, storage_options=storage_options,
                           concurrency=options.concurrency) as filesystems:
        store = await open_shards(output, filesystems)
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
                fresh = Journal(identity, agreed.now, shard=shard)
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
    store: Shards, plan_at: Callable[[dt.datetime], CubePlan], shards: int, unit: int,
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


async def _finish(store: Shards, who: str) -> Finish:
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
    return await _finish(await open_shards(output, filesystems), "finish")
