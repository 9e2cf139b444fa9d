"""Stage 5: stream the cube into its output, seal it, and make it visible only when complete.

One writer task writes, in file order: the primary header, the cube header (with
placeholder checksums), the blocks as they come (each block is a run of whole cube
rows, so it is one contiguous write), the zero padding, then the info table.  The
sink sums the data as it passes; at the end the cube header is sealed with that
sum (:func:`fficube.checksum.seal_header`) and patched into place.

* :class:`LocalSink`: ``<output>.partial``, renamed over ``<output>`` only after
  everything is written and flushed to disk.  After each block it flushes the data
  and records the progress in the journal (:mod:`fficube.journal`).
* :class:`S3Sink`: one multipart upload, completed only when everything is written.
  Part 1 holds the headers, so it is kept in memory and uploaded last, once the
  cube header is sealed; every other part is recorded in the journal as uploaded.
  Parts grow with the cube so that it never needs more than 10,000 of them.

A sink that fails or is cancelled before it saved any progress removes what it
wrote; one that saved progress keeps it (the partial file, or the upload and its
parts) for a resumed build, and logs how to resume.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from . import journal
from .assemble import Block
from .checksum import ZERO, add, data_sum, seal_header
from .errors import OutputError, OutputExistsError
from .plan import CubePlan
from .scan import padded
from .storage import IOStats, RetryPolicy, fs_request, retrying
from .units import format_bytes

__all__ = [
    "CubeSink", "LocalSink", "S3Sink", "Span", "write_cube", "partial_path", "part_size_for", "s3_call",
    "error_code", "discard_upload",
]

log = logging.getLogger("fficube")

MIB = 2**20
MIN_PART = 5 * MIB  #: S3's smallest part (but the last)
MAX_PARTS = 10_000  #: S3's most parts in one upload


def part_size_for(total_bytes: int) -> int:
    """Part size for an upload of ``total_bytes``: 5 MiB, or more so that 10,000 parts do.

    Rounded up to whole MiB; a 430 GB cube gets 42 MiB parts.
    """
    needed = -(-total_bytes // MAX_PARTS)
    return max(MIN_PART, -(-needed // MIB) * MIB)


def partial_path(output: str) -> str:
    """Where a local cube is written until it is complete."""
    return output + ".partial"


class Span:
    """The cube's data unit in the output file: the bytes whose sum is ``DATASUM``."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    @classmethod
    def of(cls, plan: CubePlan) -> Span:
        return cls(plan.data_offset, plan.data_offset + plan.data_bytes)

    def sum(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """The data sum of the part of ``data`` (at file ``offset``) inside the span.

        Every cut falls on a row, an S3 part (whole MiB) or the span's own ends, all
        multiples of 4 from the span's start, so words never straddle two pieces.
        """
        first = max(offset, self.start)
        last = min(offset + len(data), self.stop)
        if last <= first:
            return ZERO
        return data_sum(memoryview(data)[first - offset : last - offset])


class CubeSink(Protocol):
    """Where the cube's bytes go."""

    bytes_written: int  #: bytes written by this run
    location: str  #: the finished cube's path or URL

    async def open(self, resume: Mapping[str, Any] | None) -> list[tuple[int, int]]:
        """Start (or continue, from a journal's state) and return the byte ranges of
        the file still to be written (the writer may write more: they are dropped)."""
        ...

    async def write_at(self, offset: int, data: bytes | memoryview) -> None: ...
    async def checkpoint(self) -> None: ...
    def datasum(self) -> int: ...
    async def patch(self, offset: int, data: bytes) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


def _kept_message(kept: str, saved: int, total: int) -> str:
    return (
        f"kept {kept} ({format_bytes(saved)} of {format_bytes(total)} written): "
        "run the same build again with --resume (resume=True) to continue, or --restart to start over"
    )


class LocalSink:
    """Writes a local file through ``<output>.partial`` and an atomic rename."""

    def __init__(
        self, output: str, *, span: Span, total_bytes: int, state: Mapping[str, Any], overwrite: bool = False,
    ) -> None:
        self.output = self.location = output
        self.partial = partial_path(output)
        self.span, self.total_bytes, self.overwrite = span, total_bytes, overwrite
        self.state = dict(state)  #: identity and build time, recorded in the journal
        self.journal = journal.LocalJournal(output)
        self.bytes_written = 0
        self.position = 0  #: bytes of the partial file written so far
        self.saved = 0  #: bytes durably written and recorded in the journal
        self._sum = ZERO
        self._fd: int | None = None
        self._pending: asyncio.Future[int] | None = None  #: the flush under way

    async def open(self, resume: Mapping[str, Any] | None) -> list[tuple[int, int]]:
        """Create the partial file, or reopen it at the journal's offset; return what is
        left to write."""
        try:
            await asyncio.to_thread(os.makedirs, os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
            if resume is None:
                self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, journal.FILE_MODE)
            else:
                self._fd = os.open(self.partial, os.O_WRONLY)
                self.position = self.saved = int(resume["offset"])
                self._sum = int(resume["datasum"])
                await asyncio.to_thread(os.ftruncate, self._fd, self.position)  # drop what was not recorded
        except OSError as exc:
            raise OutputError(f"cannot write here: {exc.strerror or exc}", path=self.output) from exc
        return [(self.position, self.total_bytes)]

    def _write(self, data: memoryview) -> int:
        assert self._fd is not None
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], self.position + done)
        return self.span.sum(self.position, data)

    async def write_at(self, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        if offset < self.position:  # already in the file (a resumed build)
            view = view[min(len(view), self.position - offset):]
            offset = self.position
        if not len(view):
            return
        if offset != self.position:
            raise AssertionError(f"write at {offset}, expected {self.position}")
        try:
            part_sum = await asyncio.to_thread(self._write, view)
        except OSError as exc:
            raise OutputError(f"writing failed: {exc.strerror or exc}", path=self.partial) from exc
        self._sum = add(self._sum, part_sum)
        self.position += len(view)
        self.bytes_written += len(view)

    def _record(self, position: int, datasum: int) -> int:
        assert self._fd is not None
        os.fdatasync(self._fd)  # the data first: the journal must never run ahead of it
        self.journal.save({**self.state, "offset": position, "datasum": datasum})
        return position

    async def checkpoint(self) -> None:
        """Flush what is written and record it, so that a resumed build starts here.

        The flush runs in the background while the next block is written: waiting for
        the disk here would stall the pipeline once per block.  If the previous flush is
        still running, this one is skipped (the next records more).
        """
        if self._pending is not None:
            if not self._pending.done():
                return
            await self._settle()
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, self._record, self.position, self._sum)

    async def _settle(self) -> None:
        """Wait for the flush under way, if any; what it recorded is saved."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            self.saved = await pending
        except OSError as exc:
            raise OutputError(f"saving progress failed: {exc.strerror or exc}", path=self.journal.path) from exc

    def datasum(self) -> int:
        return self._sum

    async def patch(self, offset: int, data: bytes) -> None:
        assert self._fd is not None
        try:
            await asyncio.to_thread(os.pwrite, self._fd, data, offset)
        except OSError as exc:
            raise OutputError(f"writing failed: {exc.strerror or exc}", path=self.partial) from exc

    async def commit(self) -> None:
        assert self._fd is not None
        await self._settle()
        try:
            await asyncio.to_thread(os.fsync, self._fd)
            os.close(self._fd)
            self._fd = None
            if not self.overwrite and os.path.exists(self.output):
                raise OutputExistsError("appeared during the build; not replaced (use overwrite)", path=self.output)
            os.replace(self.partial, self.output)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"finishing the cube failed: {exc.strerror or exc}", path=self.output) from exc
        self.journal.remove()

    async def abort(self) -> None:
        # Shielded from cancellation by the caller: this runs while a build is being
        # cancelled, and must finish.
        try:
            await self._settle()  # a flush under way may still record more
        except OutputError:
            pass
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
        if self.saved:
            log.warning("%s", _kept_message(self.partial, self.saved, self.total_bytes))
            return
        try:
            os.unlink(self.partial)
        except OSError:  # never created (or cannot be: the error being raised says why)
            pass
        self.journal.remove()


class S3Sink:
    """Streams the cube into one S3 multipart upload through s3fs's aiobotocore client.

    Part 1 (the headers and the first data) stays in memory until the end; other
    parts are uploaded one after another as they fill, each recorded in the journal
    object.  The sink holds at most three part buffers (``memory`` bytes).
    """

    def __init__(
        self, fs: Any, url: str, *, total_bytes: int, span: Span, state: Mapping[str, Any],
        part_size: int | None = None, overwrite: bool = False, policy: RetryPolicy = RetryPolicy(),
        stats: IOStats | None = None, journal_url: str | None = None,
    ) -> None:
        self.fs, self.url, self.overwrite, self.policy = fs, url, overwrite, policy
        self.location = url
        self.span, self.total_bytes = span, total_bytes
        self.state = dict(state)
        self.stats = stats or IOStats()
        self.bucket, self.key, _ = fs.split_path(url)
        self.journal_key = fs.split_path(journal_url)[1] if journal_url else journal.journal_path(self.key)
        self.window = (0, total_bytes)  #: the bytes of the cube this sink uploads
        self.part_size = part_size or part_size_for(total_bytes)
        self.bytes_written = 0
        self.upload_id: str | None = None
        self.parts: dict[int, dict[str, Any]] = {}  #: uploaded parts 2.., as recorded
        self._head = bytearray()  #: part 1, uploaded last
        self._buffer = bytearray()
        self._buffer_start = 0  #: file offset of ``_buffer[0]``

    @staticmethod
    def memory(total_bytes: int) -> int:
        """Bytes the sink holds at most for a cube of ``total_bytes``: part 1, the part
        filling and the part being sent."""
        return 3 * part_size_for(total_bytes)

    async def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        return await s3_call(self.fs, method, what=what, url=self.url, policy=self.policy, stats=self.stats,
                             **kwargs)

    async def _save_journal(self) -> None:
        state = {
            **self.state, "upload_id": self.upload_id, "part_size": self.part_size,
            "parts": {str(n): p for n, p in sorted(self.parts.items())},
        }
        await self._call("saving progress", "put_object", Bucket=self.bucket, Key=self.journal_key,
                         Body=journal.encode(state))

    async def _listed_parts(self) -> dict[int, str]:
        """The upload's parts as S3 has them: number -> ETag."""
        listed: dict[int, str] = {}
        marker = 0
        while True:
            page = await self._call("listing uploaded parts", "list_parts", Bucket=self.bucket, Key=self.key,
                                    UploadId=self.upload_id, PartNumberMarker=marker)
            for part in page.get("Parts", []):
                listed[int(part["PartNumber"])] = part["ETag"]
            if not page.get("IsTruncated"):
                return listed
            marker = int(page["NextPartNumberMarker"])

    async def open(self, resume: Mapping[str, Any] | None) -> list[tuple[int, int]]:
        """Start the upload, or continue the journal's; return what is left to write
        (part 1, never sent before the end, and what follows the parts S3 has)."""
        if resume is None:
            if not self.overwrite and await fs_request(self.fs, "exists", self.url, stats=self.stats):
                raise OutputExistsError("already exists; use overwrite=True (--overwrite) to replace it", path=self.url)
            response = await self._call(
                "starting the upload", "create_multipart_upload", Bucket=self.bucket, Key=self.key
            )
            self.upload_id = response["UploadId"]
            await self._save_journal()
            return await self.resume_parts({})
        self.upload_id = str(resume["upload_id"])
        self.part_size = int(resume["part_size"])
        return await self.resume_parts(resume)

    async def resume_parts(self, state: Mapping[str, Any]) -> list[tuple[int, int]]:
        """Take over the parts ``state`` recorded that S3 has; return what is left to write.

        A part is trusted only if S3 lists it with the recorded ETag, and only a run of
        them from the window's first part: what comes after a gap is uploaded again.
        """
        lo, hi = self.window
        first = max(2, lo // self.part_size + 1)  # part 1 is sent last, by whoever finishes
        recorded = {int(n): p for n, p in dict(state.get("parts", {})).items()}
        number = first
        if recorded:
            listed = await self._listed_parts()
            while number in recorded and listed.get(number) == recorded[number]["ETag"]:
                self.parts[number] = recorded[number]
                number += 1
        self._buffer_start = min(hi, (number - 1) * self.part_size)
        needed = [(self._buffer_start, hi)]
        if lo < self.part_size:
            needed.insert(0, (0, min(self.part_size, hi)))
        return needed

    async def _upload(self, number: int, offset: int, data: bytes) -> dict[str, Any]:
        part_sum = await asyncio.to_thread(self.span.sum, offset, data)
        response = await self._call(
            f"uploading part {number}", "upload_part", Bucket=self.bucket, Key=self.key,
            UploadId=self.upload_id, PartNumber=number, Body=data,
        )
        self.bytes_written += len(data)
        return {"ETag": response["ETag"], "datasum": part_sum, "size": len(data)}

    async def write_at(self, offset: int, data: bytes | memoryview) -> None:
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
        number = self._buffer_start // self.part_size + 1
        self.parts[number] = await self._upload(number, self._buffer_start, part)
        self._buffer_start += len(part)
        await self._save_journal()

    async def checkpoint(self) -> None:
        """Nothing to do: every part is recorded as it is uploaded."""

    def datasum(self) -> int:
        return add(
            self.span.sum(0, self._head),
            *(int(p["datasum"]) for p in self.parts.values()),
            self.span.sum(self._buffer_start, self._buffer),
        )

    async def patch(self, offset: int, data: bytes) -> None:
        if offset + len(data) > len(self._head):
            raise AssertionError("only part 1 can be patched")
        self._head[offset : offset + len(data)] = data

    async def commit(self) -> None:
        if self._buffer:
            part, self._buffer = bytes(self._buffer), bytearray()
            await self._send(part)
        head = await self._upload(1, 0, bytes(self._head))
        parts = [{"ETag": head["ETag"], "PartNumber": 1}]
        parts += [{"ETag": p["ETag"], "PartNumber": n} for n, p in sorted(self.parts.items())]
        await self._call(
            "completing the upload", "complete_multipart_upload", Bucket=self.bucket, Key=self.key,
            UploadId=self.upload_id, MultipartUpload={"Parts": parts},
        )
        self.upload_id = None
        await self._call("removing the journal", "delete_object", Bucket=self.bucket, Key=self.journal_key)

    async def abort(self) -> None:
        self._buffer = bytearray()
        self._head = bytearray()
        if self.upload_id is None:
            return
        if self.parts:
            saved = sum(int(p["size"]) for p in self.parts.values())
            log.warning("%s", _kept_message(f"the upload of {self.url}", saved, self.total_bytes))
            return
        await discard_upload(self.fs, self.url, self.upload_id, self.policy, self.stats)
        self.upload_id = None


async def s3_call(
    fs: Any, method: str, *, what: str, url: str, policy: RetryPolicy, stats: IOStats, **kwargs: Any
) -> Any:
    """One S3 API call through s3fs's client, retried if transient; an OutputError if not.

    The botocore error is kept as the cause (``exc.__cause__``), so that callers can
    tell a failed precondition or a missing upload from other failures.
    """
    async def once() -> Any:
        stats.requests += 1
        return await getattr(fs.s3, method)(**kwargs)

    try:
        return await retrying(once, policy=policy, stats=stats, what=what)
    except Exception as exc:
        raise OutputError(f"{what} failed: {exc}", path=url) from exc


def error_code(exc: BaseException) -> str:
    """The S3 error code behind an OutputError from :func:`s3_call` (``""`` if none)."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    response = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


async def discard_upload(fs: Any, url: str, upload_id: str | None, policy: RetryPolicy, stats: IOStats) -> None:
    """Abort an upload (if any) and remove its journal; failures are logged, not raised."""
    bucket, key, _ = fs.split_path(url)
    calls: list[tuple[str, str, dict[str, Any]]] = []
    if upload_id:
        calls.append(("aborting the upload", "abort_multipart_upload", {"UploadId": upload_id, "Key": key}))
    calls.append(("removing the journal", "delete_object", {"Key": journal.journal_path(key)}))
    for what, method, kwargs in calls:
        try:
            await s3_call(fs, method, what=what, url=url, policy=policy, stats=stats, Bucket=bucket, **kwargs)
        except OutputError as exc:
            # Nothing more can be done here; the bucket's lifecycle rule for incomplete
            # uploads (if any) will remove the parts.
            log.warning("%s (upload id %s)", exc, upload_id)


async def write_cube(
    plan: CubePlan,
    sink: CubeSink,
    full_blocks: asyncio.Queue[Block | None],
    free_blocks: asyncio.Queue[np.ndarray],
    on_block: Callable[[int], None] | None = None,
) -> None:
    """Write the cube into an opened ``sink`` (which the caller commits).

    Writes go to their place in the file; a sink that continues an interrupted build
    drops the bytes it already has.
    """
    await sink.write_at(0, plan.primary_header + plan.cube_header)
    while (item := await full_blocks.get()) is not None:
        index, start, stop, block = item
        data = block[: stop - start].reshape(-1).view(np.uint8).data
        await sink.write_at(plan.data_offset + start * plan.row_bytes, data)
        free_blocks.put_nowait(block)
        await sink.checkpoint()
        if on_block is not None:
            on_block(index)
    tail = bytes(padded(plan.data_bytes) - plan.data_bytes) + plan.info_table
    await sink.write_at(plan.data_offset + plan.data_bytes, tail)
    await sink.patch(len(plan.primary_header), seal_header(plan.cube_header, sink.datasum()))
