"""Stage 5: stream the cube into its output, and make it visible only when complete.

One writer task writes, in file order: the primary header, the cube header, the
blocks as they come (each block is a run of whole cube rows, so it is one contiguous
write), the zero padding, then the info table.

* :class:`LocalSink`: ``<output>.partial``, renamed over ``<output>`` only after
  everything is written and flushed to disk; removed on any error or cancellation.
* :class:`S3Sink`: one multipart upload, completed only when everything is written and
  aborted on any error or cancellation, so no partial object or orphaned parts remain.
  Parts grow with the cube so that it never needs more than 10,000 of them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Protocol

import aiofiles
import aiofiles.os
import numpy as np

from typing import Any

from .assemble import Block
from .errors import OutputError, OutputExistsError
from .plan import CubePlan
from .scan import padded
from .storage import IOStats, RetryPolicy, fs_request, retrying

__all__ = ["CubeSink", "LocalSink", "S3Sink", "write_cube", "partial_path", "part_size_for"]

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


class CubeSink(Protocol):
    """Where the cube's bytes go, in order."""

    bytes_written: int
    location: str  #: the finished cube's path or URL

    async def open(self) -> None: ...
    async def write(self, data: bytes | memoryview) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


class LocalSink:
    """Writes a local file through ``<output>.partial`` and an atomic rename."""

    def __init__(self, output: str, *, overwrite: bool = False) -> None:
        self.output = self.location = output
        self.partial = partial_path(output)
        self.overwrite = overwrite
        self.bytes_written = 0
        self._file = None

    async def open(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.output))
        try:
            await aiofiles.os.makedirs(parent, exist_ok=True)
            self._file = await aiofiles.open(self.partial, "wb")
        except OSError as exc:
            raise OutputError(f"cannot write here: {exc.strerror or exc}", path=self.output) from exc

    async def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None
        try:
            await self._file.write(data)
        except OSError as exc:
            raise OutputError(f"writing failed: {exc.strerror or exc}", path=self.partial) from exc
        self.bytes_written += len(data)

    async def commit(self) -> None:
        assert self._file is not None
        try:
            await self._file.flush()
            await asyncio.to_thread(os.fsync, self._file.fileno())
            await self._file.close()
            self._file = None
            if not self.overwrite and await aiofiles.os.path.exists(self.output):
                raise OutputExistsError("appeared during the build; not replaced (use overwrite)", path=self.output)
            await aiofiles.os.replace(self.partial, self.output)
        except OSError as exc:
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"finishing the cube failed: {exc.strerror or exc}", path=self.output) from exc

    async def abort(self) -> None:
        # Shielded from cancellation by the caller: this runs while a build is being
        # cancelled, and must finish.
        if self._file is not None:
            try:
                await self._file.close()
            except OSError:
                pass
            self._file = None
        try:
            os.unlink(self.partial)
        except FileNotFoundError:
            pass


class S3Sink:
    """Streams the cube into one S3 multipart upload through s3fs's aiobotocore client.

    Parts are uploaded one after another as the writer fills them; the writer holds at
    most one part buffer and one part being sent (``memory`` bytes).
    """

    def __init__(
        self, fs: Any, url: str, *, total_bytes: int, overwrite: bool = False,
        policy: RetryPolicy = RetryPolicy(), stats: IOStats | None = None,
    ) -> None:
        self.fs, self.url, self.overwrite, self.policy = fs, url, overwrite, policy
        self.location = url
        self.stats = stats or IOStats()
        self.bucket, self.key, _ = fs.split_path(url)
        self.part_size = part_size_for(total_bytes)
        self.bytes_written = 0
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self._buffer = bytearray()

    @staticmethod
    def memory(total_bytes: int) -> int:
        """Bytes the sink holds at most for a cube of ``total_bytes``."""
        return 2 * part_size_for(total_bytes)

    async def _call(self, what: str, method: str, **kwargs: Any) -> Any:
        async def once() -> Any:
            self.stats.requests += 1
            return await getattr(self.fs.s3, method)(**kwargs)

        try:
            return await retrying(once, policy=self.policy, stats=self.stats, what=what)
        except Exception as exc:
            raise OutputError(f"{what} failed: {exc}", path=self.url) from exc

    async def open(self) -> None:
        if not self.overwrite and await fs_request(self.fs, "exists", self.url, stats=self.stats):
            raise OutputExistsError("already exists; use overwrite=True (--overwrite) to replace it", path=self.url)
        response = await self._call(
            "starting the upload", "create_multipart_upload", Bucket=self.bucket, Key=self.key
        )
        self.upload_id = response["UploadId"]

    async def _upload(self, data: bytes) -> None:
        number = len(self.parts) + 1
        response = await self._call(
            f"uploading part {number}", "upload_part", Bucket=self.bucket, Key=self.key,
            UploadId=self.upload_id, PartNumber=number, Body=data,
        )
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})

    async def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self.bytes_written += len(data)
        while len(self._buffer) >= self.part_size:
            with memoryview(self._buffer) as view:  # one copy of the part, not two
                part = bytes(view[: self.part_size])
            del self._buffer[: self.part_size]
            await self._upload(part)

    async def commit(self) -> None:
        if self._buffer or not self.parts:
            part, self._buffer = bytes(self._buffer), bytearray()
            await self._upload(part)
        await self._call(
            "completing the upload", "complete_multipart_upload", Bucket=self.bucket, Key=self.key,
            UploadId=self.upload_id, MultipartUpload={"Parts": self.parts},
        )
        self.upload_id = None

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self.upload_id is None:
            return
        upload_id, self.upload_id = self.upload_id, None
        try:
            await self._call("aborting the upload", "abort_multipart_upload",
                             Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        except OutputError as exc:
            # Nothing more can be done here; the bucket's lifecycle rule for incomplete
            # uploads (if any) will remove the parts.
            logging.getLogger("fficube").warning("%s (upload id %s)", exc, upload_id)


async def write_cube(
    plan: CubePlan,
    sink: CubeSink,
    full_blocks: asyncio.Queue[Block | None],
    free_blocks: asyncio.Queue[np.ndarray],
    on_block: Callable[[int], None] | None = None,
) -> None:
    """Write the whole cube into an opened ``sink`` (which the caller commits)."""
    await sink.write(plan.primary_header)
    await sink.write(plan.cube_header)
    while (item := await full_blocks.get()) is not None:
        index, start, stop, block = item
        await sink.write(block[: stop - start].reshape(-1).view(np.uint8).data)
        free_blocks.put_nowait(block)
        if on_block is not None:
            on_block(index)
    await sink.write(bytes(padded(plan.data_bytes) - plan.data_bytes))
    await sink.write(plan.info_table)
