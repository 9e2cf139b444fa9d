"""S3 cube objects: one multipart upload, completed only when the whole cube is in it.

:class:`S3Output` owns an ``s3://`` output's lifecycle: the checks before a build,
the journal object of an interrupted build (the upload id and each part's ETag and
data sum), aborting an upload that is discarded, and the :class:`S3Sink`.

Part 1 holds the headers, so it is kept in memory and uploaded last, once the cube
header is sealed.  Other parts are uploaded several at once (:func:`parts_in_flight`),
while the writer goes on filling the next: over a distant link one part at a time
leaves the connection idle for a round trip per part.  The journal records a part
once S3 has acknowledged it; journal writes are coalesced (at most one in flight),
so they never hold up the parts.  Parts grow with the cube so that it never needs
more than 10,000 of them.

A sink can also own a *window* of an upload that several workers share
(:class:`SharedUpload`, used by :mod:`fficube.sectors.shard`): it then uploads only the parts
of its window, never starts, aborts or completes the upload, and leaves the sealing
of the cube header to whoever finishes the cube.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from ..checksum import add, seal_header
from ..errors import InputError, OutputError, OutputExistsError
from ..journal import FinishClaim, Journal, SharedPlan, journal_path, progress_of
from ..plan import CubePlan
from ..sources.base import IOStats
from ..sources.fsspec import Filesystems, fs_request
from ..sources.locations import protocol_of
from ..sources.policy import RetryPolicy, http_status, is_not_found, retrying
from .base import Buffer, Span, log_kept

__all__ = [
    "S3Output", "S3Sink", "SharedUpload", "UploadShards", "Bucket", "Part", "UploadProgress", "part_size_for",
    "parts_in_flight", "MIN_PART", "MAX_PARTS", "PARTS_IN_FLIGHT",
]

log = logging.getLogger("fficube")

MIB = 2**20
MIN_PART = 5 * MIB  #: S3's smallest part (but the last)
MAX_PARTS = 10_000  #: S3's most parts in one upload
#: Part buffers a sink holds besides the parts in flight: part 1 and the part filling.
PART_BUFFERS = 2
#: Parts uploaded at once, at most.  Measured through a proxy modelling a distant store
#: (50 ms per request, 80 MB/s per connection; benchmarks/bench_s3.py): one part at a
#: time kept 39% of the undelayed throughput; with 8 in flight the link stays busy.
PARTS_IN_FLIGHT = 8
#: Share of ``max_memory`` that part buffers may take, at most (but for one part in flight).
PART_SHARE = 4


def part_size_for(total_bytes: int) -> int:
    """Part size for an upload of ``total_bytes``: 5 MiB, or more so that 10,000 parts do.

    Rounded up to whole MiB; a 430 GB cube gets 42 MiB parts.
    """
    needed = -(-total_bytes // MAX_PARTS)
    return max(MIN_PART, -(-needed // MIB) * MIB)


def parts_in_flight(part_size: int, max_memory: int) -> int:
    """Parts an upload sends at once: :data:`PARTS_IN_FLIGHT`, fewer if their buffers (with
    part 1 and the part filling) would take more than a quarter of ``max_memory``; at least 1."""
    fits = max_memory // PART_SHARE // part_size - PART_BUFFERS
    return max(1, min(PARTS_IN_FLIGHT, fits))


@dataclass(frozen=True, slots=True)
class Part:
    """One uploaded part of an S3 multipart upload."""

    etag: str
    datasum: int  #: ones' complement sum of the part's bytes inside the cube's data
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"ETag": self.etag, "datasum": self.datasum, "size": self.size}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Part:
        return cls(str(data["ETag"]), int(data["datasum"]), int(data["size"]))


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """How far an upload got: its id, and the parts S3 acknowledged (2 and up; part 1 is sent last).

    A journal written just before the upload starts has no upload id: it is the trace
    by which the next run finds (and aborts) an upload started but never recorded.
    """

    upload_id: str | None = None
    part_size: int = 0  #: bytes per part (the last may be shorter); 0: not chosen yet
    parts: Mapping[int, Part] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        parts = {str(n): p.to_json() for n, p in sorted(self.parts.items())}
        if self.upload_id is None:
            return {"part_size": self.part_size, "parts": parts}
        return {"upload_id": self.upload_id, "part_size": self.part_size, "parts": parts}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadProgress:
        return cls(
            upload_id=str(data["upload_id"]) if data.get("upload_id") else None,
            part_size=int(data.get("part_size", 0)),
            parts={int(n): Part.from_json(p) for n, p in dict(data.get("parts", {})).items()},
        )

    @classmethod
    def of(cls, journal: Journal | None) -> UploadProgress:
        """What ``journal`` records (no upload yet, without one)."""
        return progress_of(journal, cls)


class Bucket:
    """S3 API calls about one object (``url``) through s3fs's aiobotocore client.

    Each call is retried if its failure is transient; what still fails is an
    :class:`~fficube.errors.OutputError` naming ``url``, with the botocore error as its
    cause (classified by :mod:`fficube.sources.policy`: :func:`~fficube.sources.policy.http_status`,
    :func:`~fficube.sources.policy.is_not_found`).
    """

    def __init__(self, fs: Any, url: str, *, policy: RetryPolicy = RetryPolicy(), stats: IOStats | None = None):
        self.fs, self.url, self.policy = fs, url, policy
        self.stats = stats or IOStats()
        self.bucket, self.key, _ = fs.split_path(url)

    def url_of(self, key: str) -> str:
        """The URL of another object of the bucket."""
        return f"{self.url.split('://', 1)[0]}://{self.bucket}/{key}"

    async def call(self, what: str, method: str, **kwargs: Any) -> Any:
        """``method`` of the S3 client with ``Bucket`` (and by default ``Key``: the object's;
        ``Key=None``: none, for calls about the bucket)."""
        kwargs.setdefault("Key", self.key)
        if kwargs["Key"] is None:
            del kwargs["Key"]
        return await self._request(what, method, **kwargs)

    async def _request(self, what: str, method: str, **kwargs: Any) -> Any:
        async def once() -> Any:
            self.stats.requests += 1
            return await getattr(self.fs.s3, method)(Bucket=self.bucket, **kwargs)

        try:
            return await retrying(once, policy=self.policy, stats=self.stats, what=what)
        except Exception as exc:
            raise OutputError(f"{what} failed: {exc}", path=self.url) from exc

    async def get(self, key: str) -> bytes | None:
        """The bytes of object ``key``, or None if there is none."""
        try:
            response = await self.call(f"reading {key}", "get_object", Key=key)
        except OutputError as exc:
            if is_not_found(exc):
                return None
            raise
        async with response["Body"] as body:
            data: bytes = await body.read()
            return data

    async def put(self, key: str, body: bytes, *, only_new: bool = False) -> bool:
        """Write object ``key``; with ``only_new``, only if it does not exist (False if it did)."""
        extra = {"IfNoneMatch": "*"} if only_new else {}
        try:
            await self.call(f"writing {key}", "put_object", Key=key, Body=body, **extra)
        except OutputError as exc:
            status, code = http_status(exc)
            # 412: the object exists; 409 ConditionalRequestConflict: a concurrent write of it won.
            if only_new and (status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict")):
                return False
            raise
        return True

    async def keys(self, prefix: str) -> list[str]:
        """The keys of the objects under ``prefix``."""
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = await self._request(f"listing {prefix}", "list_objects_v2", Prefix=prefix, **token)
            found += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    async def delete(self, key: str) -> None:
        await self.call(f"removing {key}", "delete_object", Key=key)

    async def exists(self, key: str | None = None) -> bool:
        """Whether object ``key`` (default: the cube) exists."""
        try:
            await self.call("checking the cube", "head_object", Key=key or self.key)
        except OutputError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    async def complete(self, upload_id: str, head: bytes, parts: Mapping[int, Part]) -> None:
        """Upload part 1 (``head``) and complete the upload of ``head`` and ``parts``."""
        first = await self.call("uploading part 1", "upload_part", UploadId=upload_id, PartNumber=1, Body=head)
        listing = [{"ETag": first["ETag"], "PartNumber": 1}]
        listing += [{"ETag": p.etag, "PartNumber": n} for n, p in sorted(parts.items())]
        await self.call("completing the upload", "complete_multipart_upload", UploadId=upload_id,
                        MultipartUpload={"Parts": listing})

    async def unfinished_uploads(self) -> list[str]:
        """The ids of the object's multipart uploads that were neither completed nor aborted.

        A sink writes its journal just before it starts its upload: a process killed
        between the two leaves a journal without an upload id and an upload nobody
        recorded, which the next run of the same build finds here.  (Two builds of one
        object at the same time share one journal and are not supported: S3 has no lock
        that dies with its process.)
        """
        found: list[str] = []
        markers: dict[str, str] = {}
        while True:
            page = await self._request("listing unfinished uploads", "list_multipart_uploads", Prefix=self.key,
                                       **markers)
            found += [upload["UploadId"] for upload in page.get("Uploads", []) if upload["Key"] == self.key]
            if not page.get("IsTruncated"):
                return found
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    async def abort(self, upload_id: str | None, journal_key: str) -> None:
        """Abort an upload and remove its journal; failures are logged, not raised.

        Without ``upload_id`` (a build killed while its upload started), the object's
        unfinished uploads are aborted (:meth:`unfinished_uploads`).
        """
        calls: list[tuple[str, str, dict[str, Any]]] = []
        try:
            ids = [upload_id] if upload_id else await self.unfinished_uploads()
        except OutputError as exc:
            log.warning("%s", exc)
            ids = []
        for one in ids:
            calls.append(("aborting the upload", "abort_multipart_upload", {"UploadId": one}))
        calls.append(("removing the journal", "delete_object", {"Key": journal_key}))
        for what, method, kwargs in calls:
            try:
                await self.call(what, method, **kwargs)
            except OutputError as exc:
                # Nothing more can be done here; the bucket's lifecycle rule for incomplete
                # uploads (if any) will remove the parts.
                log.warning("%s (upload id %s)", exc, upload_id)


@dataclass(frozen=True, slots=True)
class SharedUpload:
    """A window of a multipart upload that several workers fill (see :mod:`fficube.sectors.shard`)."""

    upload_id: str
    window: tuple[int, int]  #: bytes ``lo:hi`` of the cube this worker uploads (whole parts)
    journal_key: str  #: this worker's journal object
    part_size: int  #: the upload's part size, agreed by the workers
    #: Where part 1 goes, unsealed, if the window starts the cube: the finisher seals it.
    save_head: Callable[[bytes], Awaitable[None]]


class S3Output:
    """A cube object in S3 (``s3://bucket/key``)."""

    def __init__(self, url: str, fs: Any, stats: IOStats, policy: RetryPolicy = RetryPolicy()) -> None:
        self.location = url
        self.fs, self.stats, self.policy = fs, stats, policy
        self.bucket = Bucket(fs, url, policy=policy, stats=stats)
        self.journal_url = journal_path(url)

    async def check(self, inputs: Sequence[str], *, overwrite: bool) -> None:
        if self.location in inputs:
            raise InputError("the output is one of the inputs; choose another output path", path=self.location)
        await self._check_bucket()
        if not overwrite and await self.exists():
            raise OutputExistsError("already exists; use overwrite=True to replace it",
                                    path=self.location)

    async def _check_bucket(self) -> None:
        """Refuse a bucket that does not exist before anything is read (a mistyped name
        would otherwise be noticed only when the upload starts, after the scan)."""
        try:
            await self.bucket.call("checking the bucket", "head_bucket", Key=None)
        except OutputError as exc:
            status, _ = http_status(exc)
            if is_not_found(exc):
                raise OutputError(f"no such bucket: {self.bucket.bucket} (check the URL, or create the bucket "
                                  "first)", path=self.location) from exc.__cause__
            if status != 403:
                raise
            # HeadBucket needs s3:ListBucket, which a role allowed to write need not have.
            log.debug("%s: cannot check the bucket (%s); going on", self.location, exc)

    async def exists(self) -> bool:
        return bool(await fs_request(self.fs, "exists", self.location, stats=self.stats))

    def lock(self) -> AbstractAsyncContextManager[None]:
        """No lock: S3 has none that dies with a process.  Two uploads of one cube each
        complete on their own; the journal names the upload a resume continues."""
        return nullcontext()

    async def load_journal(self) -> Journal | None:
        try:
            raw = await fs_request(self.fs, "cat_file", self.journal_url, stats=self.stats)
        except FileNotFoundError:
            return None
        return Journal.decode(raw, self.journal_url, UploadProgress.from_json)

    async def discard(self, journal: Journal | None) -> None:
        log.info("discarding the interrupted build of %s", self.location)
        await self.bucket.abort(UploadProgress.of(journal).upload_id, journal_path(self.bucket.key))

    async def check_resumable(self, journal: Journal) -> None:
        """Nothing to check here: the sink trusts only the parts S3 lists with their ETags."""

    def reserve(self, cube_bytes: int, max_memory: int) -> int:
        part = part_size_for(cube_bytes)
        return (PART_BUFFERS + parts_in_flight(part, max_memory)) * part

    def sink(self, plan: CubePlan, journal: Journal, *, overwrite: bool, stats: IOStats) -> S3Sink:
        return S3Sink(self.fs, self.location, total_bytes=plan.total_bytes, span=Span.of(plan), journal=journal,
                      overwrite=overwrite, policy=self.policy, stats=stats, max_memory=plan.memory.budget)

    def shards(self) -> UploadShards:
        return UploadShards(self)

    @classmethod
    async def open(cls, location: str, filesystems: Filesystems) -> S3Output:
        """The object at ``location`` (``s3://bucket/key``), written with the output's credentials."""
        fs = await filesystems.get(protocol_of(location), output=True)
        return cls(location, fs, filesystems.stats, filesystems.policy.retry)

    @staticmethod
    def kept(location: str) -> bool | None:
        """Unknown without a request: an interrupted upload logs what it kept."""
        return None


class UploadShards:
    """A sharded build's objects under ``<output>.shards/``, and one multipart upload."""

    def __init__(self, out: S3Output) -> None:
        self.out, self.output = out, out.location
        self.bucket = out.bucket
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
        where = self.bucket.url_of(self.key(f"{shard}.json"))
        return None if raw is None else Journal.decode(raw, where, UploadProgress.from_json)

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
             journal: Journal) -> S3Sink:
        assert agreed.upload_id is not None
        upload = SharedUpload(agreed.upload_id, window, self.key(f"{shard}.json"), agreed.part_size, self._save_head)
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
        parts: dict[int, Part] = {n: p for r in records for n, p in UploadProgress.of(r).parts.items()}
        span = Span(*agreed.span)
        datasum = add(span.sum(0, head), *(p.datasum for p in parts.values()))
        sealed = seal_header(agreed.cube_header, datasum)
        offset = agreed.header_offset
        head = head[:offset] + sealed + head[offset + len(sealed):]
        try:
            await self.bucket.complete(agreed.upload_id, head, parts)
        except OutputError as exc:
            if http_status(exc)[1] == "NoSuchUpload" and await self.exists():
                return False  # completed by a finisher before us
            raise
        return True

    async def remove(self) -> None:
        # The plan first: without it nobody takes the objects left (if this stops half way)
        # for a build under way, and the cube is complete.
        await self.bucket.delete(self.key("plan.json"))
        for key in await self.bucket.keys(self.prefix):
            await self.bucket.delete(key)


class _PartUploads:
    """The parts of one sink on their way: at most ``limit`` at once.

    The tasks are owned here, not by an ``asyncio.TaskGroup``, because they outlive the
    ``write_at`` call that starts them: :meth:`drain` (commit) waits for them and
    :meth:`cancel` (abort) stops them, so none outlives its sink.  A failed upload is
    raised by the next :meth:`start` or by :meth:`drain`.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    async def start(self, upload: Callable[[], Awaitable[None]]) -> None:
        """Start ``upload`` once a slot is free."""
        self._raise()
        await self._slots.acquire()
        try:
            self._raise()
        except BaseException:
            self._slots.release()
            raise
        task = asyncio.create_task(self._run(upload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, upload: Callable[[], Awaitable[None]]) -> None:
        try:
            await upload()
        except Exception as exc:
            if self._error is None:
                self._error = exc
        finally:
            self._slots.release()

    async def drain(self) -> None:
        """Wait for every part started; raise the first failure."""
        while self._tasks:
            await asyncio.gather(*self._tasks)
        self._raise()

    async def cancel(self) -> None:
        """Stop the parts on their way and wait until they have stopped."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _JournalWriter:
    """Saves the journal whenever asked, with at most one write in flight.

    Requests that come while a write is on its way are coalesced into the next one,
    which records everything done by then.  ``recorded`` is what the last completed
    write holds: what a resumed build would find.
    """

    def __init__(self, save: Callable[[], Awaitable[Mapping[int, Part]]]) -> None:
        self._save = save
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._error: BaseException | None = None
        self.recorded: Mapping[int, Part] = {}

    def request(self) -> None:
        """Save soon (the parts done by the time the write starts)."""
        if self._error is not None:
            return
        self._again = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while self._again:
            self._again = False
            try:
                self.recorded = await self._save()
            except Exception as exc:
                self._error = exc
                return

    async def settle(self) -> None:
        """Wait for the writes asked for so far; raise the first failure."""
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._error is not None:
            raise self._error


class S3Sink:
    """Streams the cube into one S3 multipart upload through s3fs's aiobotocore client.

    Part 1 (the headers and the first data) stays in memory until the end; other
    parts are uploaded as they fill, several at once (:func:`parts_in_flight` for
    ``max_memory``), each recorded in the journal object once S3 has it.  The sink holds
    part 1, the part filling and the parts in flight (:meth:`S3Output.reserve`).
    With ``shared``, the sink fills one window of a shared upload.
    """

    def __init__(
        self, fs: Any, url: str, *, total_bytes: int, span: Span, journal: Journal, overwrite: bool = False,
        policy: RetryPolicy = RetryPolicy(), stats: IOStats | None = None, shared: SharedUpload | None = None,
        max_memory: int = 0,
    ) -> None:
        self.url = self.location = url
        self.overwrite, self.shared = overwrite, shared
        self.span, self.total_bytes = span, total_bytes
        self.bucket = Bucket(fs, url, policy=policy, stats=stats)
        self.journal_key = shared.journal_key if shared else journal_path(self.bucket.key)
        self.window = shared.window if shared else (0, total_bytes)  #: the bytes this sink uploads
        recorded = UploadProgress.of(journal)
        self.part_size = recorded.part_size or (shared.part_size if shared else part_size_for(total_bytes))
        self.record = journal.advanced(progress=UploadProgress(recorded.upload_id, self.part_size, recorded.parts))
        self.bytes_written = 0
        self.upload_id: str | None = shared.upload_id if shared else None
        self.parts: dict[int, Part] = {}  #: parts 2.. that S3 has acknowledged
        self._sums: dict[int, int] = {}  #: data sum of every part sent (or taken over), done or not
        self._head = bytearray()  #: part 1, uploaded last
        self._buffer = bytearray()
        self._buffer_start = 0  #: file offset of ``_buffer[0]``
        self._uploads = _PartUploads(parts_in_flight(self.part_size, max_memory) if max_memory else 1)
        self._journal = _JournalWriter(self._save_journal)
        self._starting = False  #: the journal without an upload id is written, the upload asked for

    async def _save_journal(self) -> Mapping[int, Part]:
        """Write the journal with the parts done now; return them."""
        parts = dict(self.parts)
        self.record = self.record.advanced(progress=UploadProgress(self.upload_id, self.part_size, parts))
        await self.bucket.call("saving progress", "put_object", Key=self.journal_key, Body=self.record.encode())
        return parts

    async def _listed_parts(self) -> dict[int, str]:
        """The upload's parts as S3 has them: number -> ETag."""
        listed: dict[int, str] = {}
        marker = 0
        while True:
            page = await self.bucket.call("listing uploaded parts", "list_parts", UploadId=self.upload_id,
                                          PartNumberMarker=marker)
            for part in page.get("Parts", []):
                listed[int(part["PartNumber"])] = part["ETag"]
            if not page.get("IsTruncated"):
                return listed
            marker = int(page["NextPartNumberMarker"])

    async def open(self, resume: Journal | None) -> list[tuple[int, int]]:
        """Start the upload, or continue the journal's; return what is left to write
        (part 1, never sent before the end, and what follows the parts S3 has)."""
        recorded = UploadProgress.of(resume)
        if resume is not None and (recorded.upload_id is not None or self.shared is not None):
            self.upload_id = recorded.upload_id or self.upload_id
            return await self._resume_parts(recorded.parts)
        if self.shared is None:
            if resume is not None:
                # The interrupted build died while starting its upload: nothing of it is
                # recorded; abort what it may have started (its journal goes too, and is
                # written again below), and start again.
                await self.bucket.abort(None, self.journal_key)
            elif not self.overwrite and await self.bucket.exists():
                raise OutputExistsError("already exists; use overwrite=True to replace it",
                                        path=self.url)
            # The journal first: a process killed before the upload id is recorded leaves
            # this trace, by which the next run finds and aborts the upload.
            await self._save_journal()
            self._starting = True
            response = await self.bucket.call("starting the upload", "create_multipart_upload")
            self.upload_id = response["UploadId"]
            await self._save_journal()
        return await self._resume_parts({})

    async def _resume_parts(self, recorded: Mapping[int, Part]) -> list[tuple[int, int]]:
        """Take over the ``recorded`` parts that S3 has; return what is left to write.

        A part is trusted only if S3 lists it with the recorded ETag, and only a run of
        them from the window's first part: what comes after a gap is uploaded again.
        """
        lo, hi = self.window
        first = max(2, lo // self.part_size + 1)  # part 1 is sent last, by whoever finishes
        number = first
        if recorded:
            listed = await self._listed_parts()
            while number in recorded and listed.get(number) == recorded[number].etag:
                self.parts[number] = recorded[number]
                self._sums[number] = recorded[number].datasum
                number += 1
            self._journal.recorded = dict(self.parts)
        self._buffer_start = min(hi, (number - 1) * self.part_size)
        needed = [(self._buffer_start, hi)]
        if lo < self.part_size:
            needed.insert(0, (0, min(self.part_size, hi)))
        return needed

    async def _upload(self, number: int, part_sum: int, data: bytes) -> None:
        response = await self.bucket.call(f"uploading part {number}", "upload_part", UploadId=self.upload_id,
                                          PartNumber=number, Body=data)
        self.bytes_written += len(data)
        self.parts[number] = Part(response["ETag"], part_sum, len(data))
        self._journal.request()

    async def write_at(self, offset: int, data: Buffer, *, datasum: int | None = None) -> None:
        # ``datasum`` is of no use here: parts, not blocks, are summed.
        view = memoryview(data).cast("B")
        lo, hi = self.window
        if offset < lo or offset + len(view) > hi:  # another shard's bytes
            first, last = max(offset, lo), min(offset + len(view), hi)
            if last <= first:
                return
            view, offset = view[first - offset : last - offset], first
        # Part 1: kept until the end (a resumed upload makes it again).
        if offset < len(self._head):
            skip = min(len(view), len(self._head) - offset)
            view, offset = view[skip:], offset + skip
        if offset < self.part_size and len(view):
            if offset != len(self._head):
                raise AssertionError(f"write at {offset}, part 1 has {len(self._head)} bytes")
            take = view[: self.part_size - offset]
            self._head += take
            view, offset = view[len(take):], offset + len(take)
        # Later parts: skip what a resumed upload has, then fill and send parts.
        end = self._buffer_start + len(self._buffer)
        if offset < end:
            view, offset = view[min(len(view), end - offset):], end
        if not len(view):
            return
        if offset != end:
            raise AssertionError(f"write at {offset}, expected {end}")
        self._buffer += view
        while len(self._buffer) >= self.part_size:
            with memoryview(self._buffer) as buffered:  # one copy of the part, not two
                part = bytes(buffered[: self.part_size])
            del self._buffer[: self.part_size]
            await self._send(part)

    async def _send(self, part: bytes) -> None:
        """Start uploading the part at ``_buffer_start`` (once one of the slots is free)."""
        number = self._buffer_start // self.part_size + 1
        part_sum = await asyncio.to_thread(self.span.sum, self._buffer_start, part)
        await self._uploads.start(lambda: self._upload(number, part_sum, part))
        self._sums[number] = part_sum
        self._buffer_start += len(part)

    async def checkpoint(self) -> None:
        """Nothing to do: every part is recorded once it is uploaded."""

    def datasum(self) -> int:
        return add(
            self.span.sum(0, self._head),
            *self._sums.values(),
            self.span.sum(self._buffer_start, self._buffer),
        )

    async def patch(self, offset: int, data: bytes) -> None:
        if self.shared is not None:
            return  # the cube header is sealed by whoever finishes the shared upload
        if offset + len(data) > len(self._head):
            raise AssertionError("only part 1 can be patched")
        self._head[offset : offset + len(data)] = data

    async def commit(self) -> None:
        if self._buffer:  # the cube's last part, shorter than the others
            part, self._buffer = bytes(self._buffer), bytearray()
            await self._send(part)
        await self._uploads.drain()
        await self._journal.settle()  # no journal write may land after the journal is removed
        if self.shared is not None:
            if self.window[0] == 0 < self.window[1]:  # this window holds part 1 (an empty one does not)
                await self.shared.save_head(bytes(self._head))
            self.record = self.record.advanced(done=True)
            await self._save_journal()
            return
        assert self.upload_id is not None
        await self.bucket.complete(self.upload_id, bytes(self._head), self.parts)
        self.bytes_written += len(self._head)
        self.upload_id = None
        await self.bucket.delete(self.journal_key)

    async def abort(self) -> None:
        self._buffer = bytearray()
        self._head = bytearray()
        # Parts on their way are stopped; the journal keeps what S3 acknowledged and
        # the last journal write recorded (a resumed build checks it against S3's list).
        await self._uploads.cancel()
        try:
            await self._journal.settle()
        except Exception:  # the error that stopped the build is the one to report
            pass
        recorded = self._journal.recorded
        if self.shared is not None:
            # The upload is shared: keep it, and this worker's recorded parts, for a re-run.
            if recorded:
                log.warning("%s: shard stopped with %d part(s) recorded; run it again to continue", self.url,
                            len(recorded))
            return
        if self.upload_id is None:
            if self._starting:  # stopped while starting: S3 may have started an upload unheard of
                await self.bucket.abort(None, self.journal_key)
            return
        if recorded:
            saved = sum(p.size for p in recorded.values())
            log_kept(log, f"the upload of {self.url}", saved, self.total_bytes)
            return
        await self.bucket.abort(self.upload_id, self.journal_key)
        self.upload_id = None
