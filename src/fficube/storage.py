"""Byte-range access to input files, local or behind any ranged fsspec URL.

Every read of the pipeline goes through a :class:`ByteSource`, which bounds the number
of requests in flight with one semaphore and counts requests, bytes and retries.  That
makes "each input byte is read once" and "never more than ``concurrency`` requests"
facts that can be measured rather than assumed.

* :class:`LocalSource` reads local files with ``os.preadv`` on a private thread pool:
  positional reads need no seek state, so one descriptor per file serves any number
  of concurrent reads, and ``preadv`` fills the caller's buffer without a copy.
  :func:`read_batch` hands it many reads at once (one job of its pool for all of them):
  with thousands of FFIs a block is tens of thousands of small reads, and one thread
  hop per read cost more CPU than the reads.
* :class:`FsspecSource` reads ``s3://``, ``https://``, ``memory://``... through the
  filesystem's async API (``_cat_file`` with a byte range).  Transient failures
  (5xx, throttling, dropped connections, timeouts) are retried by :func:`retrying`
  with exponential backoff and jitter; permanent ones (403, 404) fail at once.  A
  read that has not answered long after its peers is *hedged* (:class:`HedgePolicy`):
  sent again, the first answer wins and the other request is cancelled, so that one
  slow GET out of hundreds does not hold up its whole block.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import statistics
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .errors import ReadError, os_reason

__all__ = [
    "IOStats", "ByteSource", "LocalSource", "RemoteSource", "FsspecSource", "RetryPolicy", "HedgePolicy", "retrying",
    "is_transient", "fs_call", "fs_request", "describe_failure", "is_not_found", "ReadRequest", "read_batch",
    "BlockingReads",
]

log = logging.getLogger("fficube")
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


@dataclass(slots=True)
class IOStats:
    """Counters of one source; read them after (or during) a build."""

    bytes_read: int = 0
    requests: int = 0  #: requests sent, retries and hedges included
    retries: int = 0
    max_in_flight: int = 0  #: most requests on their way at once, hedges included
    hedges: int = 0  #: slow reads sent a second time (the first answer was used)


class ByteSource(Protocol):
    """What the pipeline needs from storage: sizes and exact byte ranges."""

    stats: IOStats
    concurrency: int  #: requests in flight at most

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


async def read_batch(source: ByteSource, requests: Sequence[ReadRequest]) -> None:
    """Fill every buffer of ``requests``, each as :meth:`ByteSource.readinto` would.

    A source with a ``readinto_batch`` method (:class:`LocalSource`) does them all in
    one job; any other does them as separate requests, concurrently, within its own
    limit on requests in flight.
    """
    batch: Callable[[Sequence[ReadRequest]], Awaitable[None]] | None = getattr(source, "readinto_batch", None)
    if batch is not None:
        await batch(requests)
        return
    if len(requests) == 1:
        await source.readinto(*requests[0])
        return
    async with asyncio.TaskGroup() as tg:
        for path, start, buf in requests:
            tg.create_task(source.readinto(path, start, buf))


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


class BlockingReads(Protocol):
    """Blocking reads, for a job running in a source's thread (:meth:`LocalSource.run_blocking`)."""

    def size(self, path: str) -> int:
        """The size of ``path`` in bytes."""
        ...

    def read(self, path: str, start: int, stop: int) -> bytes:
        """Bytes ``start:stop`` of ``path``; fewer only at the end of the file."""
        ...

    def prefetch(self, path: str, start: int, stop: int) -> None:
        """Say that bytes ``start:stop`` of ``path`` will be read soon (a hint, never an error)."""
        ...


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
            raise ReadError(
                f"file ends at byte {start + n}: truncated (it changed or was cut short)",
                path=path,
                byte_range=(start, stop),
            )

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
                    raise ReadError(
                        f"file ends at byte {start + n}: truncated (it changed or was cut short)",
                        path=path,
                        byte_range=(start, stop),
                    )
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


# ----------------------------------------------------------------------------------
# Retries


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried."""

    attempts: int = 6  #: tries in all, the first included
    base: float = 0.1  #: seconds before the first retry
    cap: float = 20.0  #: longest wait between tries

    def delay(self, retry: int) -> float:
        """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**retry)]."""
        return random.uniform(0.0, min(self.cap, self.base * 2.0**retry))


#: Reads after which the hedge threshold is computed again.
REFRESH = 16


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """When a slow read is sent a second time.

    A read is hedged once it has run ``factor`` times the median time of the recent
    reads (the last ``window`` that succeeded), but never sooner than ``floor``
    seconds: AWS's guidance for S3 is to re-issue the slowest ~1% of requests, and a
    store's latency spread is wide, so the threshold follows the store, not a
    constant.  Until ``window // 8`` reads have finished, ``initial`` seconds is the
    threshold.  At most ``share`` of the source's concurrency (at least one) are
    hedges at any time, so that a store that is slow for everyone is not asked twice
    for everything.
    """

    enabled: bool = True
    floor: float = 1.0
    factor: float = 4.0
    initial: float = 2.0
    window: int = 128
    share: float = 0.25

    def hedges_for(self, concurrency: int) -> int:
        """Hedged reads in flight at most for a source of ``concurrency``."""
        return max(1, int(concurrency * self.share)) if self.enabled else 0

    def threshold(self, recent: deque[float]) -> float:
        """Seconds after which a read is hedged, given the durations of recent reads."""
        if len(recent) < max(1, self.window // 8):
            return max(self.floor, self.initial)
        return max(self.floor, self.factor * statistics.median(recent))


#: S3 error codes that mean "try again later" whatever their HTTP status.
TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
     "ServiceUnavailable", "RequestLimitExceeded", "BandwidthLimitExceeded"}
)
PERMANENT_TYPES = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
    ValueError, TypeError, KeyError, NotImplementedError,
)


def _http_status(exc: BaseException) -> tuple[int | None, str | None]:
    """HTTP status and S3 error code of ``exc`` or of an exception it was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(response, dict):  # botocore ClientError
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return status, response.get("Error", {}).get("Code")
        status = getattr(current, "status", None)  # aiohttp ClientResponseError
        if isinstance(status, int):
            return status, None
        current = current.__cause__ or current.__context__
    return None, None


def is_transient(exc: BaseException) -> bool:
    """Whether a failed request is worth repeating.

    Server errors (5xx), throttling (429, SlowDown) and failures without an HTTP
    answer (connection reset, timeout) are; other client errors (403, 404, 416) and
    programming errors are not.
    """
    if isinstance(exc, asyncio.CancelledError):
        return False
    status, code = _http_status(exc)
    if code in TRANSIENT_CODES:
        return True
    if status is not None:
        return status >= 500 or status == 429
    return not isinstance(exc, PERMANENT_TYPES)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    stats: IOStats,
    what: str,
) -> T:
    """Run ``operation``, retrying transient failures as ``policy`` says."""
    for attempt in range(policy.attempts):
        try:
            return await operation()
        except Exception as exc:
            if not is_transient(exc) or attempt + 1 == policy.attempts:
                raise
            wait = policy.delay(attempt)
            stats.retries += 1
            log.debug("%s failed (%s: %s); retry %d in %.2f s", what, type(exc).__name__, exc, attempt + 1, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


#: What an access-denied answer means, and what usually fixes it.
ACCESS_DENIED = (
    "access denied (HTTP 403): the server refused this request. For a public bucket read anonymously "
    "(anon=True); otherwise check your credentials (environment, AWS profile, instance role); "
    "a requester-pays bucket needs requester_pays=True in the storage options"
)
#: The same answer to an anonymous request: the advice to read anonymously would be no help.
ANONYMOUS_DENIED = (
    "access denied (HTTP 403) to an anonymous request: this object is not public. Read it with "
    "credentials (without anon=True); a requester-pays bucket also needs requester_pays=True"
)


def is_not_found(exc: BaseException) -> bool:
    """Whether a failed request means "no such object" (and not, say, access denied).

    The HTTP status in the error or its causes decides: fsspec's HTTP filesystem
    reports a 403 as FileNotFoundError, raised from the HTTP error.
    """
    status, code = _http_status(exc)
    if status is not None:
        return status == 404 or code in ("NoSuchKey", "NoSuchBucket")
    return isinstance(exc, FileNotFoundError)


def describe_failure(exc: BaseException, *, anonymous: bool = False) -> str:
    """A short reason for a failed request, for messages (404, 403, HTTP status);
    ``anonymous``: the request was unsigned (``anon=True``)."""
    status, code = _http_status(exc)
    if status == 403 or (status is None and isinstance(exc, PermissionError)):
        return ANONYMOUS_DENIED if anonymous else ACCESS_DENIED
    if is_not_found(exc):
        return "no such object (404)"
    detail = f"HTTP {status}{' ' + code if code else ''}: " if status else ""
    return f"{detail}{exc or type(exc).__name__}"


# ----------------------------------------------------------------------------------
# fsspec


async def fs_call(fs: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call filesystem method ``name``: its async twin ``_name`` when the filesystem is
    async (s3fs, HTTP), else the blocking one in a thread (memory, ...)."""
    if getattr(fs, "async_impl", False):
        return await getattr(fs, "_" + name)(*args, **kwargs)
    return await asyncio.to_thread(getattr(fs, name), *args, **kwargs)


async def fs_request(
    fs: Any, name: str, *args: Any, stats: IOStats, policy: RetryPolicy = RetryPolicy(), **kwargs: Any
) -> Any:
    """:func:`fs_call` with transient failures retried (listing, existence checks)."""

    async def once() -> Any:
        stats.requests += 1
        return await fs_call(fs, name, *args, **kwargs)

    return await retrying(once, policy=policy, stats=stats, what=f"{name} {args[0] if args else ''}")


class RemoteSource:
    """What every remote byte source shares: one semaphore for the requests in flight,
    their counting, retries (:func:`retrying`), hedged reads (:class:`HedgePolicy`),
    versions pinned by ETag, and errors that name the file and byte range.

    A subclass says how one request is made: :meth:`_range` and :meth:`_size`.

    Parameters
    ----------
    concurrency
        Requests in flight at most (hedges aside).
    sizes
        Sizes already known from listing, so that they need no request.
    etags
        The ETag of each file as listed: every read of that file is pinned to it
        (``If-Match``), so that a file replaced during a build stops the build instead
        of mixing two versions into one cube.
    policy
        How transient failures are retried.
    hedge
        When slow reads are sent again (:class:`HedgePolicy`).
    """

    def __init__(
        self,
        concurrency: int = 32,
        *,
        sizes: dict[str, int] | None = None,
        etags: dict[str, str] | None = None,
        policy: RetryPolicy = RetryPolicy(),
        hedge: HedgePolicy = HedgePolicy(),
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.stats = IOStats()
        self.concurrency = concurrency
        self.policy, self.hedge = policy, hedge
        self._sizes = dict(sizes or {})
        self._etags = dict(etags or {})
        self._limit = asyncio.Semaphore(concurrency)
        self.anonymous = False  #: requests are unsigned (set by a subclass that knows)
        self._hedges = asyncio.Semaphore(hedge.hedges_for(concurrency))
        self._recent: deque[float] = deque(maxlen=hedge.window)  #: durations of the last reads
        self._threshold = hedge.threshold(self._recent)  #: the hedge threshold, as last computed
        self._unseen = 0  #: reads finished since then
        self._in_flight = 0

    # -- what a subclass provides ----------------------------------------------------
    async def _range(self, path: str, start: int, stop: int, etag: str | None) -> Any:
        """One request: bytes ``start:stop`` of ``path`` (of version ``etag`` if given),
        as any object with the buffer protocol."""
        raise NotImplementedError

    async def _size(self, path: str) -> int:
        """One request: the size of ``path``."""
        raise NotImplementedError

    async def _range_into(self, path: str, start: int, buf: memoryview, etag: str | None) -> int:
        """One request: fill ``buf`` from byte ``start`` of ``path``; return the bytes
        received.  A client that can stream overrides this, so that a large read never
        holds a second copy of itself (``max_memory`` counts the buffers, not copies)."""
        data = memoryview(await self._range(path, start, start + len(buf), etag)).cast("B")
        buf[: len(data)] = data
        return len(data)

    # -- requests ----------------------------------------------------------------------
    async def _send(self, call: Callable[[], Awaitable[T]], *, timed: bool = False) -> T:
        """One request on the wire, counted (and, for reads, timed)."""
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        self.stats.requests += 1
        started = loop.time()
        try:
            result = await call()
        finally:
            self._in_flight -= 1
        if timed:
            self._recent.append(loop.time() - started)
            self._unseen += 1
            # A median of the window per read cost more CPU than the read's own
            # bookkeeping (py-spy: 2% of a build); every REFRESH reads follows the store as well.
            if self._unseen >= REFRESH:
                self._threshold, self._unseen = self.hedge.threshold(self._recent), 0
        return result

    async def _request(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            async with self._limit:
                return await self._send(call)

        return await retrying(once, policy=self.policy, stats=self.stats, what=what)

    async def _hedged(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A read, retried as :meth:`_request` is, and hedged when it is slow."""

        async def once() -> T:
            async with self._limit:
                return await self._first_answer(call)

        return await retrying(once, policy=self.policy, stats=self.stats, what=what)

    async def _first_answer(self, call: Callable[[], Awaitable[T]]) -> T:
        """Send ``call``; if it is slow and a hedge slot is free, send it again and take
        whichever answers first.  The tasks are awaited here, not left to a TaskGroup:
        a TaskGroup would turn the loser's cancellation or failure into the winner's."""
        first = asyncio.ensure_future(self._send(call, timed=True))
        tasks = [first]
        try:
            done, _ = await asyncio.wait(tasks, timeout=self._threshold)
            if done or not self.hedge.enabled or self._hedges.locked():
                return await first
            async with self._hedges:
                self.stats.hedges += 1
                tasks.append(asyncio.ensure_future(self._send(call)))
                pending = set(tasks)
                while True:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        if not task.cancelled() and task.exception() is None:
                            return task.result()
                    if not pending:  # both failed: the retry policy decides on the last error
                        return await done.pop()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- ByteSource --------------------------------------------------------------------
    async def size(self, path: str) -> int:
        if path not in self._sizes:
            try:
                size = await self._request(f"size of {path}", lambda: self._size(path))
            except Exception as exc:
                raise ReadError(describe_failure(exc, anonymous=self.anonymous), path=path) from exc
            self._sizes[path] = size
        return self._sizes[path]

    async def _fetch(self, path: str, start: int, stop: int, call: Callable[[str | None], Awaitable[T]]) -> T:
        """``call(etag)``, hedged and retried, its failures as errors naming the file and range."""
        etag = self._etags.get(path)
        try:
            return await self._hedged(f"read of {path}", lambda: call(etag))
        except Exception as exc:
            if _http_status(exc)[0] == 412:
                raise ReadError(
                    f"changed since it was listed (it is no longer version {etag}); "
                    "a cube is made of one version of each input", path=path, byte_range=(start, stop),
                ) from exc
            raise ReadError(describe_failure(exc, anonymous=self.anonymous), path=path,
                            byte_range=(start, stop)) from exc

    async def read(self, path: str, start: int, stop: int) -> bytes:
        stop = min(stop, await self.size(path))
        if stop <= start:
            return b""
        data = await self._fetch(path, start, stop, lambda etag: self._range(path, start, stop, etag))
        self.stats.bytes_read += len(memoryview(data))
        return data if isinstance(data, bytes) else bytes(data)

    async def readinto(self, path: str, start: int, buf: memoryview) -> None:
        stop = start + len(buf)
        n = min(stop, await self.size(path)) - start
        if n > 0:
            n = await self._fetch(path, start, stop, lambda etag: self._range_into(path, start, buf[:n], etag))
            self.stats.bytes_read += n
        if n < len(buf):
            raise ReadError(
                f"object ends at byte {start + max(n, 0)}: truncated (it changed or was cut short)",
                path=path,
                byte_range=(start, stop),
            )

    async def aclose(self) -> None:
        # The session belongs to whoever opened it (see remote.py).
        return None


class FsspecSource(RemoteSource):
    """Reads byte ranges through an fsspec filesystem's async API.

    Parameters
    ----------
    fs
        The filesystem; async ones (s3fs, HTTP) are awaited directly, others are
        called in threads.
    concurrency, sizes, etags, policy, hedge
        As for :class:`RemoteSource`.
    """

    def __init__(self, fs: Any, concurrency: int = 32, **kwargs: Any) -> None:
        super().__init__(concurrency, **kwargs)
        self.fs = fs
        self.anonymous = bool(getattr(fs, "anon", False))

    async def _range(self, path: str, start: int, stop: int, etag: str | None) -> Any:
        client = getattr(self.fs, "s3", None) if etag else None
        if etag and client is not None:  # s3fs: its cat_file cannot send If-Match; its client can
            bucket, key, _ = self.fs.split_path(path)
            response = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{stop - 1}",
                                               IfMatch=etag, **getattr(self.fs, "req_kw", {}))
            async with response["Body"] as body:
                return await body.read()
        extra = {"headers": {"If-Match": etag}} if etag and self.fs.protocol[0] in ("http", "https") else {}
        return await fs_call(self.fs, "cat_file", path, start=start, end=stop, **extra)

    async def _size(self, path: str) -> int:
        info = await fs_call(self.fs, "info", path)
        return int(info["size"])
