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

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import journal
from .build import Progress, open_source, Reporter, upload_reserve, execute, plan_options
from .checksum import add, seal_header
from .errors import InputError, OutputError, ResumeError
from .inputs import InputsLike, resolve_inputs
from .plan import make_plan
from .products import get_product
from .remote import S3_PROTOCOLS, Filesystems, is_url, protocol_of
from .scan import scan
from .storage import IOStats, RetryPolicy
from .units import parse_size
from .write import S3Sink, Span, error_code, part_size_for, s3_call

__all__ = ["ShardResult", "build_shard", "finish_cube", "shard_window", "parse_shard"]

log = logging.getLogger("fficube")
FORMAT = "fficube-shards/1"


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
        self.fs, self.output, self.stats = fs, output, stats
        self.bucket, self.key, _ = fs.split_path(output)
        self.prefix = f"{self.key}.shards/"

    def url(self, name: str) -> str:
        return f"{protocol_of(self.output)}://{self.bucket}/{self.prefix}{name}"

    async def call(self, what: str, method: str, **kwargs: Any) -> Any:
        return await s3_call(self.fs, method, what=what, url=self.output, policy=RetryPolicy(),
                             stats=self.stats, Bucket=self.bucket, **kwargs)

    async def get(self, name: str) -> bytes | None:
        try:
            response = await self.call(f"reading {self.prefix}{name}", "get_object", Key=self.prefix + name)
        except OutputError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        async with response["Body"] as body:
            return await body.read()

    async def get_json(self, name: str) -> dict[str, Any] | None:
        raw = await self.get(name)
        return None if raw is None else json.loads(raw)

    async def put(self, name: str, body: bytes, *, only_new: bool = False) -> bool:
        """Write an object; with ``only_new``, only if it does not exist (False if it did)."""
        extra = {"IfNoneMatch": "*"} if only_new else {}
        try:
            await self.call(f"writing {self.prefix}{name}", "put_object", Key=self.prefix + name, Body=body, **extra)
        except OutputError as exc:
            if only_new and error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    async def remove(self, names: list[str]) -> None:
        for name in names:
            await self.call(f"removing {self.prefix}{name}", "delete_object", Key=self.prefix + name)

    async def cube_exists(self) -> bool:
        try:
            await self.call("checking the cube", "head_object", Key=self.key)
        except OutputError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


class _ShardSink(S3Sink):
    """An S3 sink for one window of a shared upload: never starts, aborts or completes it."""

    def __init__(self, *args: Any, window: tuple[int, int], upload_id: str, shared: _Shared, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.window, self.upload_id, self.shared = window, upload_id, shared

    async def open(self, resume: Mapping[str, Any] | None) -> list[tuple[int, int]]:
        return await self.resume_parts(resume or {})

    async def patch(self, offset: int, data: bytes) -> None:
        """Nothing: the cube header is sealed by whoever finishes the cube."""

    async def commit(self) -> None:
        if self._buffer:  # the cube's last part, shorter than the others
            part, self._buffer = bytes(self._buffer), bytearray()
            await self._send(part)
        if self.window[0] == 0:
            await self.shared.put("head", bytes(self._head))
        self.state["done"] = True
        await self._save_journal()

    async def abort(self) -> None:
        # The upload is shared: keep it, and this worker's recorded parts, for a re-run.
        if self.parts:
            log.warning("%s: shard stopped with %d part(s) recorded; run it again to continue", self.url,
                        len(self.parts))


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
    if not is_url(output) or protocol_of(output) not in S3_PROTOCOLS:
        raise InputError("a cube built by several workers must go to s3:// (one multipart upload)", path=output)
    budget = parse_size(max_memory)
    filesystems = Filesystems(anon=anon, storage_options=storage_options)
    try:
        fs = await filesystems.get(protocol_of(output), output=True)
        shared = _Shared(fs, output, filesystems.stats)
        found = await resolve_inputs(inputs, get_product(product), filesystems)
        source, concurrency = await open_source(found, concurrency, filesystems)
        try:
            ffis = await scan(found.paths, source, product=get_product(product), workers=concurrency * 2)
            layers = len(ffis[0].layers) if ffis else 0
            reserved, estimate = upload_reserve(True, ffis[0].shape if ffis else (0, 0), len(ffis), layers)
            options = plan_options(concurrency, local=False)

            def plan_at(now: dt.datetime):  # type: ignore[no-untyped-def]
                return make_plan(ffis, max_memory=budget, sector=sector, reserved=reserved, now=now, **options)

            versions = {p: found.version(p) for p in found.paths}
            state = await _join(shared, plan_at, shards, part_size_for(estimate), versions)
            plan = plan_at(dt.datetime.fromisoformat(state["now"]))
            identity = journal.plan_identity(plan, versions)
            changes = journal.identity_changes(state["identity"], identity)
            if changes or state["shards"] != shards:
                raise ResumeError(
                    "this worker's build differs from the one the shards share ("
                    + "; ".join(changes or [f"{state['shards']} shards, not {shards}"]) + ")", path=output,
                )
            part_size = int(state["part_size"])
            window = shard_window(plan.total_bytes, part_size, shard, shards)
            record = await shared.get_json(f"{shard}.json")
            written = 0
            if not (record and record.get("done")):
                sink = _ShardSink(
                    fs, output, total_bytes=plan.total_bytes, span=Span.of(plan), part_size=part_size,
                    state={"shard": shard, "identity": identity}, stats=IOStats(),
                    journal_url=shared.url(f"{shard}.json"), window=window, upload_id=state["upload_id"],
                    shared=shared,
                )
                report = Reporter(progress, [source], started)
                report.sink = sink
                await execute(plan, source, sink, resume=record,
                              on_block=lambda done, total: report("write", done, total, plan.total_bytes))
                written = sink.bytes_written
            finished = await finish_cube(output, filesystems=filesystems)
            return ShardResult(output, shard, shards, window, source.stats.bytes_read, written,
                               time.monotonic() - started, finished)
        finally:
            await asyncio.shield(source.aclose())
    finally:
        await asyncio.shield(filesystems.aclose())


async def _join(
    shared: _Shared, plan_at: Callable[[dt.datetime], Any], shards: int, part_size: int,
    versions: Mapping[str, journal.Version],
) -> dict[str, Any]:
    """The shared plan record: read it, or create the upload and the record if first."""
    state = await shared.get_json("plan.json")
    if state is not None:
        return state
    if await shared.cube_exists():
        raise InputError("already exists (a finished cube); delete it to build it again", path=shared.output)
    now = dt.datetime.now().replace(microsecond=0)
    plan = plan_at(now)
    response = await shared.call("starting the upload", "create_multipart_upload", Key=shared.key)
    proposal = {
        "format": FORMAT, "upload_id": response["UploadId"], "now": now.isoformat(), "shards": shards,
        "part_size": part_size, "total_bytes": plan.total_bytes, "header_offset": len(plan.primary_header),
        "cube_header": plan.cube_header.decode("ascii"), "span": [plan.data_offset, plan.data_offset + plan.data_bytes],
        # Every worker (this one too) checks its own plan against this one.
        "identity": journal.plan_identity(plan, versions),
    }
    if await shared.put("plan.json", json.dumps(proposal).encode(), only_new=True):
        return proposal
    # Another worker came first: use its upload.
    await shared.call("aborting a duplicate upload", "abort_multipart_upload", Key=shared.key,
                      UploadId=response["UploadId"])
    state = await shared.get_json("plan.json")
    assert state is not None
    return state


async def finish_cube(
    output: str, *, filesystems: Filesystems | None = None, anon: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """Complete a sharded cube if every shard is done; True if the cube is complete.

    Idempotent: several workers may call it at once, and calling it on a finished
    cube returns True.
    """
    own = filesystems is None
    filesystems = filesystems or Filesystems(anon=anon, storage_options=storage_options)
    try:
        fs = await filesystems.get(protocol_of(output), output=True)
        shared = _Shared(fs, output, filesystems.stats)
        state = await shared.get_json("plan.json")
        if state is None:
            if await shared.cube_exists():
                return True
            raise InputError("no sharded build of this cube is under way", path=output)
        records = [await shared.get_json(f"{k}.json") for k in range(1, state["shards"] + 1)]
        waiting = [k + 1 for k, r in enumerate(records) if not (r and r.get("done"))]
        if waiting:
            log.info("%s: waiting for shard(s) %s", output, ", ".join(map(str, waiting)))
            return False
        head = await shared.get("head")
        if head is None:
            return await shared.cube_exists()  # another worker finished it meanwhile
        parts = {int(n): p for r in records if r for n, p in r["parts"].items()}
        span = Span(*state["span"])
        datasum = add(span.sum(0, head), *(int(p["datasum"]) for p in parts.values()))
        sealed = seal_header(state["cube_header"].encode("ascii"), datasum)
        offset = int(state["header_offset"])
        head = head[:offset] + sealed + head[offset + len(sealed):]
        try:
            first = await shared.call("uploading part 1", "upload_part", Key=shared.key, UploadId=state["upload_id"],
                                      PartNumber=1, Body=head)
            listing = [{"ETag": first["ETag"], "PartNumber": 1}]
            listing += [{"ETag": p["ETag"], "PartNumber": n} for n, p in sorted(parts.items())]
            await shared.call("completing the upload", "complete_multipart_upload", Key=shared.key,
                              UploadId=state["upload_id"], MultipartUpload={"Parts": listing})
        except OutputError as exc:
            if error_code(exc) == "NoSuchUpload" and await shared.cube_exists():
                return True  # another worker completed it first
            raise
        await shared.remove(["head", *(f"{k}.json" for k in range(1, state["shards"] + 1)), "plan.json"])
        return True
    finally:
        if own:
            await filesystems.aclose()
