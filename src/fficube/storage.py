"""Byte-range access to input files.

Every read of the pipeline goes through a :class:`ByteSource`, which bounds the number
of requests in flight with one semaphore and counts requests and bytes.  That makes
"each input byte is read once" and "never more than ``concurrency`` requests" facts
that can be measured rather than assumed.

:class:`LocalSource` reads local files with ``os.preadv`` on a private thread pool:
positional reads need no seek state, so one descriptor per file serves any number of
concurrent reads, and ``preadv`` fills the caller's buffer without an extra copy.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from .errors import ReadError

__all__ = ["IOStats", "ByteSource", "LocalSource"]

#: Descriptors kept open at most; files beyond this are opened per read.  Half the
#: usual soft limit (1024), so that an application using fficube keeps room.
MAX_OPEN_FILES = 512


@dataclass(slots=True)
class IOStats:
    """Counters of one source; read them after (or during) a build."""

    bytes_read: int = 0
    requests: int = 0
    retries: int = 0
    max_in_flight: int = 0


class ByteSource(Protocol):
    """What the pipeline needs from storage: sizes and exact byte ranges."""

    stats: IOStats

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


class LocalSource:
    """Reads local files with positional reads on a private thread pool.

    Parameters
    ----------
    concurrency
        Reads in flight at most (and threads in the pool).
    """

    def __init__(self, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.stats = IOStats()
        self._limit = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fficube-read")
        self._fds: dict[str, int] = {}
        self._fd_lock = threading.Lock()
        self._in_flight = 0

    # -- descriptors -------------------------------------------------------------
    def _fd(self, path: str) -> tuple[int, bool]:
        """Return a descriptor for ``path`` and whether the caller must close it."""
        with self._fd_lock:
            fd = self._fds.get(path)
            if fd is not None:
                return fd, False
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            if len(self._fds) < MAX_OPEN_FILES:
                self._fds[path] = fd
                return fd, False
            return fd, True

    def _preadinto(self, path: str, start: int, buf: memoryview) -> int:
        fd, close = self._fd(path)
        try:
            done = 0
            while done < len(buf):
                n = os.preadv(fd, [buf[done:]], start + done)
                if n == 0:
                    break
                done += n
            return done
        finally:
            if close:
                os.close(fd)

    # -- ByteSource ----------------------------------------------------------------
    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        async with self._limit:
            self._in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
            self.stats.requests += 1
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
            finally:
                self._in_flight -= 1

    async def size(self, path: str) -> int:
        try:
            return (await asyncio.to_thread(os.stat, path)).st_size
        except OSError as exc:
            raise ReadError(exc.strerror or str(exc), path=path) from exc

    async def read(self, path: str, start: int, stop: int) -> bytes:
        buf = bytearray(max(0, stop - start))
        try:
            n = await self._run(self._preadinto, path, start, memoryview(buf))
        except OSError as exc:
            raise ReadError(exc.strerror or str(exc), path=path, byte_range=(start, stop)) from exc
        self.stats.bytes_read += n
        del buf[n:]
        return bytes(buf)

    async def readinto(self, path: str, start: int, buf: memoryview) -> None:
        stop = start + len(buf)
        try:
            n = await self._run(self._preadinto, path, start, buf)
        except OSError as exc:
            raise ReadError(exc.strerror or str(exc), path=path, byte_range=(start, stop)) from exc
        self.stats.bytes_read += n
        if n < len(buf):
            raise ReadError(
                f"file ends at byte {start + n}: truncated (it changed or was cut short)",
                path=path,
                byte_range=(start, stop),
            )

    async def aclose(self) -> None:
        # Wait for reads already running in threads (a cancelled await does not stop
        # them) before closing their descriptors, so no read can hit a reused number.
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        with self._fd_lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)
