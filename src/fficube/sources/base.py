"""What every byte source is: the :class:`ByteSource` protocol, its counters and its
capabilities.

Every read of the pipeline goes through a :class:`ByteSource`, which bounds the number
of requests in flight with one semaphore and counts requests, bytes and retries.  That
makes "each input byte is read once" and "never more than ``concurrency`` requests"
facts that can be measured rather than assumed.  What some sources can do beyond it is
a protocol of its own, checked with ``isinstance`` (:class:`BatchReads`,
:class:`BlockingSource`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from ..errors import ReadError

__all__ = [
    "IOStats", "ByteSource", "BatchReads", "BlockingSource", "BlockingReads", "ReadRequest", "read_batch",
    "truncated",
]

T = TypeVar("T")


@dataclass(slots=True)
class IOStats:
    """Counters of one source; read them after (or during) a build."""

    bytes_read: int = 0
    requests: int = 0  #: requests sent, retries and hedges included
    retries: int = 0
    max_in_flight: int = 0  #: most requests on their way at once, hedges included
    hedges: int = 0  #: slow reads sent a second time (the first answer was used)


@runtime_checkable
class ByteSource(Protocol):
    """What the pipeline needs from storage: sizes and exact byte ranges."""

    stats: IOStats
    concurrency: int  #: requests in flight at most
    #: Reads are local file reads (the planner caps blocks and sizes reads for a disk),
    #: not requests to a server.
    local: bool

    async def size(self, path: str) -> int:
        """Return the size of ``path`` in bytes."""
        ...

    async def read(self, path: str, start: int, stop: int) -> bytes:
        """Return bytes ``start:stop`` of ``path``; fewer only at the end of the file."""
        ...

    async def readinto(self, path: str, start: int, buf: memoryview) -> None:
        """Fill ``buf`` with the bytes of ``path`` from ``start``; a short file is an error."""
        ...

    async def aclose(self) -> None:
        """Release descriptors, threads and sessions."""
        ...


#: One read of a batch: fill the buffer with the bytes of the file from the offset.
ReadRequest = tuple[str, int, memoryview]


@runtime_checkable
class BatchReads(Protocol):
    """A source that does many reads in one job (:class:`~fficube.sources.local.LocalSource`)."""

    async def readinto_batch(self, requests: Sequence[ReadRequest]) -> None:
        """:meth:`ByteSource.readinto` for each request, all at once."""
        ...


async def read_batch(source: ByteSource, requests: Sequence[ReadRequest]) -> None:
    """Fill every buffer of ``requests``, each as :meth:`ByteSource.readinto` would.

    A source that can (:class:`BatchReads`) does them all in one job; any other does
    them as separate requests, concurrently, within its own limit on requests in flight.
    """
    if isinstance(source, BatchReads):
        await source.readinto_batch(requests)
        return
    if len(requests) == 1:
        await source.readinto(*requests[0])
        return
    async with asyncio.TaskGroup() as tg:
        for path, start, buf in requests:
            tg.create_task(source.readinto(path, start, buf))


class BlockingReads(Protocol):
    """Blocking reads, for a job running in a source's thread (:meth:`BlockingSource.run_blocking`)."""

    def size(self, path: str) -> int:
        """The size of ``path`` in bytes."""
        ...

    def read(self, path: str, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of ``path``; fewer only at the end of the file."""
        ...

    def prefetch(self, path: str, start: int, stop: int) -> None:
        """Say that bytes ``start:stop`` of ``path`` will be read soon (a hint, never an error)."""
        ...


@runtime_checkable
class BlockingSource(Protocol):
    """A source that runs a job of blocking reads in its own thread (the scan of many
    small local headers: one thread hop for all of them)."""

    async def run_blocking(self, job: Callable[[BlockingReads], T]) -> T:
        """Run ``job`` with blocking reads of this source, in its thread."""
        ...


def truncated(path: str, start: int, stop: int, got: int, what: str = "file") -> ReadError:
    """The error of a read of bytes ``start:stop`` of ``path`` (a ``what``) that got only ``got`` bytes."""
    return ReadError(f"{what} ends at byte {start + max(got, 0)}: truncated (it changed or was cut short)",
                     path=path, byte_range=(start, stop))
