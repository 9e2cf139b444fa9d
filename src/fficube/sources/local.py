"""Local files, read with positional reads on a private thread pool.

:class:`LocalSource` reads with ``os.preadv``: positional reads need no seek state, so
one descriptor per file serves any number of concurrent reads, and ``preadv`` fills
the caller's buffer without a copy.  :func:`~fficube.sources.base.read_batch` hands it
many reads at once (one job of its pool for all of them): with thousands of FFIs a
block is tens of thousands of small reads, and one thread hop per read cost more CPU
than the reads.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from ..errors import ReadError, os_reason
from .base import BlockingReads, IOStats, ReadRequest, truncated

__all__ = ["LocalSource", "max_open_files", "MAX_OPEN_FILES"]

T = TypeVar("T")

#: Descriptors kept open at most, whatever the limit: half the usual soft limit
#: (1024), so that an application using fficube keeps room.
MAX_OPEN_FILES = 512


def max_open_files() -> int:
    """Descriptors a :class:`LocalSource` keeps open: half the process's soft limit on
    open files (``ulimit -n``), at least :data:`MAX_OPEN_FILES`.

    A file beyond it is opened for each read: with 12,000 FFIs and 512 descriptors,
    every read of 11,488 of them cost an ``openat`` and a ``close``.
    """
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # not on this platform
        return MAX_OPEN_FILES
    if soft == resource.RLIM_INFINITY:
        soft = 2 * 65536
    return max(MAX_OPEN_FILES, soft // 2)


def _pread_all(fd: int, start: int, buf: memoryview) -> int:
    """Fill ``buf`` from ``fd`` at ``start``; return the bytes read (fewer at the end of the file)."""
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], start + done)
        if n == 0:
            break
        done += n
    return done


def _read_range(fd: int, start: int, stop: int) -> bytes:
    """Bytes ``start:stop`` of ``fd`` (fewer at the end of the file)."""
    buf = bytearray(max(0, stop - start))
    del buf[_pread_all(fd, start, memoryview(buf)) :]
    return bytes(buf)


def _willneed(fd: int, start: int, length: int) -> None:
    os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)


#: Asks the kernel to start reading a range now (where the platform has posix_fadvise).
_WILLNEED: Callable[[int, int, int], None] | None = _willneed if hasattr(os, "posix_fadvise") else None


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as exc:
        raise ReadError(os_reason(exc), path=path) from exc


class _LocalReads:
    """:class:`LocalSource`'s blocking reads for one job, counted as they go.

    A file beyond the descriptors the source keeps open is opened once for the job,
    not once per call, and closed by :meth:`close` when the job ends.
    """

    __slots__ = ("_opened", "_source", "bytes_read", "requests")

    def __init__(self, source: LocalSource) -> None:
        self._source = source
        self._opened: dict[str, int] = {}
        self.requests = 0
        self.bytes_read = 0

    def _fd(self, path: str) -> int:
        fd = self._opened.get(path)
        if fd is None:
            fd, close = self._source._fd(path)
            if close:
                self._opened[path] = fd
        return fd

    def close(self) -> None:
        for fd in self._opened.values():
            os.close(fd)
        self._opened.clear()

    def size(self, path: str) -> int:
        try:
            return os.fstat(self._fd(path)).st_size
        except OSError as exc:
            raise ReadError(os_reason(exc), path=path) from exc

    def prefetch(self, path: str, start: int, stop: int) -> None:
        if _WILLNEED is None:
            return
        try:
            _WILLNEED(self._fd(path), start, stop - start)
        except OSError:
            pass  # only a hint: the read reports a file that cannot be read

    def read(self, path: str, start: int, stop: int) -> bytes:
        try:
            data = _read_range(self._fd(path), start, stop)
        except OSError as exc:
            raise ReadError(os_reason(exc), path=path, byte_range=(start, stop)) from exc
        self.requests += 1
        self.bytes_read += len(data)
        return data


class LocalSource:
    """Reads local files with positional reads on a private thread pool.

    Parameters
    ----------
    concurrency
        Reads in flight at most (and threads in the pool).
    """

    local = True

    def __init__(self, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.stats = IOStats()
        self.concurrency = concurrency
        self._limit = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fficube-read")
        self._fds: dict[str, int] = {}
        self._max_fds = max_open_files()
        self._fd_lock = threading.Lock()
        self._in_flight = 0

    # -- descriptors -------------------------------------------------------------
    def _fd(self, path: str) -> tuple[int, bool]:
        """Return a descriptor for ``path`` and whether the caller must close it."""
        fd = self._fds.get(path)
        if fd is not None:
            return fd, False
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # outside the lock: opens may be slow
        with self._fd_lock:
            kept = self._fds.get(path)
            if kept is not None:  # another thread opened it meanwhile
                os.close(fd)
                return kept, False
            if len(self._fds) < self._max_fds:
                self._fds[path] = fd
                return fd, False
        return fd, True

    @contextmanager
    def _descriptor(self, path: str) -> Iterator[int]:
        """A descriptor for ``path``, closed afterwards unless the source keeps it."""
        fd, close = self._fd(path)
        try:
            yield fd
        finally:
            if close:
                os.close(fd)

    def _preadinto(self, path: str, start: int, buf: memoryview) -> int:
        with self._descriptor(path) as fd:
            return _pread_all(fd, start, buf)

    # -- ByteSource ----------------------------------------------------------------
    @asynccontextmanager
    async def _slot(self, requests: int) -> AsyncIterator[None]:
        """Hold one of the ``concurrency`` slots for a job of the pool doing ``requests`` reads."""
        async with self._limit:
            self._in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
            self.stats.requests += requests
            try:
                yield
            finally:
                self._in_flight -= 1

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slot(1):
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _read_bytes(self, path: str, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of ``path`` (fewer at the end of the file), blocking."""
        try:
            with self._descriptor(path) as fd:
                return _read_range(fd, start, stop)
        except OSError as exc:
            raise ReadError(os_reason(exc), path=path, byte_range=(start, stop)) from exc

    async def size(self, path: str) -> int:
        return await asyncio.to_thread(_file_size, path)

    async def read(self, path: str, start: int, stop: int) -> bytes:
        data = await self._run(self._read_bytes, path, start, stop)
        self.stats.bytes_read += len(data)
        return data

    async def readinto(self, path: str, start: int, buf: memoryview) -> None:
        stop = start + len(buf)
        try:
            n = await self._run(self._preadinto, path, start, buf)
        except OSError as exc:
            raise ReadError(os_reason(exc), path=path, byte_range=(start, stop)) from exc
        self.stats.bytes_read += n
        if n < len(buf):
            raise truncated(path, start, stop, n)

    def _read_batch(self, requests: Sequence[ReadRequest]) -> int:
        """Do every read of a batch, in a pool thread; return the bytes read.

        Consecutive reads of one file (its layers) share a descriptor, even a file
        beyond the ones kept open.
        """
        total = 0
        fd, fd_path, close = -1, None, False
        try:
            for path, start, buf in requests:
                stop = start + len(buf)
                try:
                    if path != fd_path:
                        if close:
                            os.close(fd)
                        fd_path, close = None, False
                        fd, close = self._fd(path)
                        fd_path = path
                    n = _pread_all(fd, start, buf)
                except OSError as exc:
                    raise ReadError(os_reason(exc), path=path, byte_range=(start, stop)) from exc
                total += n
                if n < len(buf):
                    raise truncated(path, start, stop, n)
        finally:
            if close:
                os.close(fd)
        return total

    async def readinto_batch(self, requests: Sequence[ReadRequest]) -> None:
        """:meth:`readinto` for each request, all in one job of the pool (one request in
        flight while it runs, counted as ``len(requests)`` requests)."""
        async with self._slot(len(requests)):
            # Awaited first, then added: "x += await ..." would read x before the
            # await and lose the bytes of batches that finish meanwhile.
            done = await asyncio.get_running_loop().run_in_executor(self._pool, self._read_batch, requests)
            self.stats.bytes_read += done

    async def run_blocking(self, job: Callable[[BlockingReads], T]) -> T:
        """Run ``job`` in the pool with blocking reads of this source.

        For many small reads that each need the one before (the headers of a batch of
        files): one thread hop for all of them, where each awaited read costs one.  The
        job holds one request slot while it runs; its reads are counted when it ends.
        """
        reads = _LocalReads(self)

        def run() -> T:
            try:
                return job(reads)
            finally:  # here, in the thread: a cancelled await does not stop the job
                reads.close()

        async with self._slot(0):
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, run)
            finally:
                self.stats.requests += reads.requests
                self.stats.bytes_read += reads.bytes_read

    async def aclose(self) -> None:
        # Wait for reads already running in threads (a cancelled await does not stop
        # them) before closing their descriptors, so no read can hit a reused number.
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
        with self._fd_lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)
