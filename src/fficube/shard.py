"""One cube, several workers: each uploads its share of the parts of one S3 upload.

For cubes of hundreds of GB (200-second sectors), N workers (an AWS Batch array job)
build one cube together.  Every worker scans all the FFIs' headers and makes the same
plan; the cube's bytes are cut at S3 part boundaries into N windows, and worker K
reads only the rows of window K and uploads its parts into the shared multipart upload.

Coordination happens in S3 objects beside the output, ``<output>.shards/``:

* ``plan.json``: the upload id, part size, build time and plan identity.  Whichever
  worker comes first creates the upload and writes this with a conditional put
  (``If-None-Match: *``); a worker that loses the race aborts its own upload and
  joins the winner's, so all agree on one upload and one build time.
* ``K.json``: worker K's journal (its parts, their ETags and data sums), ``done`` at
  the end.  A worker that dies is simply run again: it resumes from its journal.
* ``head``: part 1 (the headers and the first rows), written by worker 1 with the
  cube header unsealed.

When a worker finishes and finds every journal done, it finishes the cube: the data
sum is the ones' complement sum of all parts' sums, the cube header in part 1 is
sealed, part 1 is uploaded and the upload completed.  ``fficube sector --finish``
does the same by hand.  The result is byte-identical to a one-worker build.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._aio import closing
from .build import BuildOptions, cube_size_estimate
from .checksum import add, seal_header
from .errors import InputError, OutputError, ResumeError
from .inputs import InputsLike, Version, resolve_inputs
from .journal import Identity, Journal, Part, SharedPlan
from .pipeline import execute
from .plan import CubePlan, Limits, make_plan
from .remote import S3_PROTOCOLS, Filesystems, protocol_or_local
from .results import Progress, Reporter
from .scan import scan
from .sinks import open_output
from .sinks.base import Span
from .sinks.s3 import Bucket, S3Output, S3Sink, SharedUpload, error_code, part_size_for
from .storage import IOStats

__all__ = ["ShardResult", "build_shard", "finish_cube", "shard_window", "parse_shard"]

log = logging.getLogger("fficube")


def parse_shard(text: str, array_index: str | None = None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), 1 <= K <= N; ``"index/N"`` takes K from an AWS Batch array index."""
    k, sep, n = text.partition("/")
    try:
        shards = int(n)
        shard = int(array_index) + 1 if k == "index" and array_index is not None else int(k)
    except (TypeError, ValueError):
        raise ValueError(f"--shard wants K/N with 1 <= K <= N (or index/N in an array job), not {text!r}") from None
    if not sep or not 1 <= shard <= shards:
        raise ValueError(f"--shard wants K/N with 1 <= K <= N, not {text!r} (K = {shard})")
    return shard, shards


def shard_window(total_bytes: int, part_size: int, shard: int, shards: int) -> tuple[int, int]:
    """Bytes ``lo:hi`` of the cube that worker ``shard`` of ``shards`` uploads: whole parts,
    spread as evenly as the parts allow (the last part may be short)."""
    parts = -(-total_bytes // part_size)
    first, last = (shard - 1) * parts // shards, shard * parts // shards
    return min(total_bytes, first * part_size), min(total_bytes, last * part_size)


@dataclass(frozen=True, slots=True)
class ShardResult:
    """What one worker did."""

    output: str
    shard: int
    shards: int
    window: tuple[int, int]  #: bytes of the cube this worker uploaded
    bytes_read: int
    bytes_written: int
    seconds: float
    finished: bool  #: this worker completed the cube

    def summary(self) -> str:
        lo, hi = self.window
        return (
            f"{self.output}: shard {self.shard}/{self.shards}, bytes {lo}-{hi}: read {self.bytes_read:,} bytes, "
            f"uploaded {self.bytes_written:,} in {self.seconds:.1f} s"
            + ("; all shards done, cube completed" if self.finished else "")
        )


class _Shared:
    """The objects under ``<output>.shards/``."""

    def __init__(self, fs: Any, output: str, stats: IOStats) -> None:
        self.output = output
        self.bucket = Bucket(fs, output, stats=stats)
        self.prefix = f"{self.bucket.key}.shards/"

    def key(self, name: str) -> str:
        return self.prefix + name

    async def plan(self) -> SharedPlan | None:
        raw = await self.bucket.get(self.key("plan.json"))
        return None if raw is None else SharedPlan.decode(raw, self.bucket.url_of(self.key("plan.json")))

    async def journal(self, shard: int) -> Journal | None:
        raw = await self.bucket.get(self.key(f"{shard}.json"))
        return None if raw is None else Journal.decode(raw, self.bucket.url_of(self.key(f"{shard}.json")))

    async def save_head(self, head: bytes) -> None:
        await self.bucket.put(self.key("head"), head)

    async def remove(self, names: list[str]) -> None:
        for name in names:
            await self.bucket.delete(self.key(name))


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
    """Build worker ``shard``'s share (1-based, of ``shards``) of the cube at ``output``.

    Run it once per worker, in any order or all at once; a worker that fails is run
    again and continues.  The last worker to finish completes the cube.

    Raises
    ------
    InputError
        If ``output`` is not an ``s3://`` URL, or the inputs are bad.
    ResumeError
        If the workers do not agree (other inputs, another number of shards).
    """
    started = time.monotonic()
    if protocol_or_local(output) not in S3_PROTOCOLS:
        raise InputError("a cube built by several workers must go to s3:// (one multipart upload)", path=output)
    options = BuildOptions.check(product=product, max_memory=max_memory, concurrency=concurrency, resume=True,
                                 restart=False)
    async with Filesystems(anon=anon, storage_options=storage_options) as filesystems:
        out = await open_output(output, filesystems)
        assert isinstance(out, S3Output)
        shared = _Shared(out.fs, output, filesystems.stats)
        found = await resolve_inputs(inputs, options.product, filesystems)
        source = await found.source(filesystems, options.concurrency)
        async with closing(source):
            ffis = await scan(found.paths, source, product=options.product, workers=source.concurrency * 2)
            layers = len(ffis[0].layers) if ffis else 0
            cube_bytes = cube_size_estimate(ffis[0].shape if ffis else (0, 0), len(ffis), layers)
            limits = Limits.for_build(options.max_memory, source.concurrency, local=False,
                                      reserved=out.reserve(cube_bytes))

            def plan_at(now: dt.datetime) -> CubePlan:
                return make_plan(ffis, limits, sector=sector, now=now)

            versions = {p: found.version(p) for p in found.paths}
            agreed = await _join(shared, plan_at, shards, part_size_for(cube_bytes), versions)
            plan = plan_at(agreed.now)
            identity = Identity.of(plan, versions)
            changes = agreed.identity.changes(identity)
            if changes or agreed.shards != shards:
                raise ResumeError(
                    "this worker's build differs from the one the shards share ("
                    + "; ".join(changes or [f"{agreed.shards} shards, not {shards}"]) + ")", path=output,
                )
            window = shard_window(plan.total_bytes, agreed.part_size, shard, shards)
            record = await shared.journal(shard)
            written = 0
            if not (record and record.done):
                upload = SharedUpload(agreed.upload_id, window, shared.key(f"{shard}.json"), shared.save_head)
                sink = S3Sink(
                    out.fs, output, total_bytes=plan.total_bytes, span=Span.of(plan),
                    journal=record or Journal(identity, agreed.now, part_size=agreed.part_size, shard=shard),
                    stats=IOStats(), shared=upload,
                )
                report = Reporter(progress, [source], started)
                report.sink = sink
                await execute(plan, source, sink, resume=record,
                              on_block=lambda done, total: report("write", done, total, plan.total_bytes))
                written = sink.bytes_written
            finished = await finish_cube(output, filesystems=filesystems)
            return ShardResult(output, shard, shards, window, source.stats.bytes_read, written,
                               time.monotonic() - started, finished)


async def _join(
    shared: _Shared, plan_at: Callable[[dt.datetime], CubePlan], shards: int, part_size: int,
    versions: Mapping[str, Version],
) -> SharedPlan:
    """The shared plan: read it, or create the upload and the plan if this worker is first."""
    agreed = await shared.plan()
    if agreed is not None:
        return agreed
    if await shared.bucket.exists():
        raise InputError("already exists (a finished cube); delete it to build it again", path=shared.output)
    now = dt.datetime.now().replace(microsecond=0)
    plan = plan_at(now)
    response = await shared.bucket.call("starting the upload", "create_multipart_upload")
    proposal = SharedPlan(
        upload_id=response["UploadId"], now=now, shards=shards, part_size=part_size, total_bytes=plan.total_bytes,
        header_offset=len(plan.primary_header), cube_header=plan.cube_header,
        span=(plan.data_offset, plan.data_offset + plan.data_bytes),
        # Every worker (this one too) checks its own plan against this one.
        identity=Identity.of(plan, versions),
    )
    if await shared.bucket.put(shared.key("plan.json"), proposal.encode(), only_new=True):
        return proposal
    # Another worker came first: use its upload.
    await shared.bucket.call("aborting a duplicate upload", "abort_multipart_upload", UploadId=response["UploadId"])
    agreed = await shared.plan()
    assert agreed is not None
    return agreed


async def finish_cube(
    output: str, *, filesystems: Filesystems | None = None, anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """Complete a sharded cube if every shard is done; True if the cube is complete.

    Idempotent: several workers may call it at once, and calling it on a finished
    cube returns True.
    """
    if filesystems is None:
        async with Filesystems(anon=anon, storage_options=storage_options) as own:
            return await finish_cube(output, filesystems=own)
    out = await open_output(output, filesystems)
    assert isinstance(out, S3Output)
    shared = _Shared(out.fs, output, filesystems.stats)
    agreed = await shared.plan()
    if agreed is None:
        if await shared.bucket.exists():
            return True
        raise InputError("no sharded build of this cube is under way", path=output)
    records = [await shared.journal(k) for k in range(1, agreed.shards + 1)]
    waiting = [k + 1 for k, r in enumerate(records) if not (r and r.done)]
    if waiting:
        log.info("%s: waiting for shard(s) %s", output, ", ".join(map(str, waiting)))
        return False
    head = await shared.bucket.get(shared.key("head"))
    if head is None:
        return await shared.bucket.exists()  # another worker finished it meanwhile
    parts: dict[int, Part] = {n: p for r in records if r for n, p in r.parts.items()}
    span = Span(*agreed.span)
    datasum = add(span.sum(0, head), *(p.datasum for p in parts.values()))
    sealed = seal_header(agreed.cube_header, datasum)
    offset = agreed.header_offset
    head = head[:offset] + sealed + head[offset + len(sealed):]
    try:
        await shared.bucket.complete(agreed.upload_id, head, parts)
    except OutputError as exc:
        if error_code(exc) == "NoSuchUpload" and await shared.bucket.exists():
            return True  # another worker completed it first
        raise
    await shared.remove(["head", *(f"{k}.json" for k in range(1, agreed.shards + 1)), "plan.json"])
    return True
