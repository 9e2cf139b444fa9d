"""What every remote byte source shares: requests bounded and counted, retried,
hedged when slow, pinned to a version, and errors that name the file and byte range.

A subclass says how one request is made (:mod:`fficube.sources.fsspec`,
:mod:`fficube.sources.obstore`).  Transient failures (5xx, throttling, dropped
connections, timeouts) are retried by :func:`~fficube.sources.policy.retrying` with
exponential backoff and jitter; permanent ones (403, 404) fail at once.  A read that has
not answered long after its peers is *hedged*
(:class:`~fficube.sources.policy.HedgePolicy`): sent again, the first answer wins and the
other request is cancelled, so that one slow GET out of hundreds does not hold up its
whole block.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import ReadError
from .base import IOStats, truncated
from .policy import REFRESH, IOPolicy, describe_failure, http_status, retrying

__all__ = ["RemoteSource"]

T = TypeVar("T")


class _Read:
    """One request of a read on the wire, watched for slowness by the source's one timer."""

    __slots__ = ("answer", "call", "hedge", "started", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any], call: Callable[[], Awaitable[Any]], started: float) -> None:
        self.task = task  #: the task awaiting the request (cancelled if its hedge answers first)
        self.call = call
        self.started = started
        self.hedge: asyncio.Task[None] | None = None  #: the same request sent again, if it was
        self.answer: tuple[Any] | None = None  #: the hedge's answer, once it came first
        self.waiting = True  #: the task still awaits the first request


class RemoteSource:
    """What every remote byte source shares: one semaphore for the requests in flight,
    their counting, retries (:func:`retrying`), hedged reads (:class:`~fficube.sources.policy.HedgePolicy`),
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
        How transient failures are retried and when slow reads are sent again
        (:class:`~fficube.sources.policy.IOPolicy`).
    """

    def __init__(
        self,
        concurrency: int = 32,
        *,
        sizes: dict[str, int] | None = None,
        etags: dict[str, str] | None = None,
        policy: IOPolicy = IOPolicy(),
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.stats = IOStats()
        self.concurrency = concurrency
        self.policy, self.hedge = policy.retry, policy.hedge
        self._sizes = dict(sizes or {})
        self._etags = dict(etags or {})
        self._limit = asyncio.Semaphore(concurrency)
        self.anonymous = False  #: requests are unsigned (set by a subclass that knows)
        self._max_hedging = policy.hedge.hedges_for(concurrency)
        self._hedging = 0  #: hedges on the wire now
        self._reads = 0  #: reads started (the hedge budget is a share of them)
        self._recent: deque[float] = deque(maxlen=policy.hedge.window)  #: durations of the last reads
        self._threshold = policy.hedge.threshold(self._recent)  #: the hedge threshold, as last computed
        self._unseen = 0  #: reads finished since then
        self._in_flight = 0
        self._watched: set[_Read] = set()  #: reads on the wire that may yet be hedged
        self._timer: asyncio.TimerHandle | None = None  #: the one clock of every watched read

    local = False

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
    async def _send(self, call: Callable[[], Awaitable[T]]) -> T:
        """One request on the wire, counted."""
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        self.stats.requests += 1
        try:
            return await call()
        finally:
            self._in_flight -= 1

    async def _request(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            async with self._limit:
                return await self._send(call)

        return await retrying(once, policy=self.policy, stats=self.stats, what=what)

    async def _hedged(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A read, retried as :meth:`_request` is, and hedged when it is slow."""

        async def once() -> T:
            async with self._limit:
                return await self._watch(call)

        return await retrying(once, policy=self.policy, stats=self.stats, what=what)

    async def _watch(self, call: Callable[[], Awaitable[T]]) -> T:
        """Send ``call`` and await it; if the timer hedges it (:meth:`_check`) and the
        hedge answers first, this request is cancelled and the hedge's answer returned.

        A read costs no task, future or timer of its own: thousands of reads a second
        share one timer, and only the few hedged ones make a task (the loser's
        cancellation is how the winner's answer reaches the reader).
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        read = _Read(task, call, loop.time())
        self._reads += 1
        if self.hedge.enabled:
            self._watched.add(read)
            if self._timer is None:
                self._timer = loop.call_at(read.started + self._threshold, self._check)
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        self.stats.requests += 1
        try:
            try:
                result = await call()
            except BaseException:
                read.waiting = False
                # Cancelled by its hedge's answer (a CancelledError, or whatever the client
                # made of it), and by nothing else: uncancel() counts the cancellations.
                if read.answer is None or task.uncancel() > 0:
                    raise
                return read.answer[0]  # type: ignore[no-any-return]
            read.waiting = False
            self._recent.append(loop.time() - read.started)
            self._unseen += 1
            # A quantile of the window per read would cost more CPU than the read's own
            # bookkeeping; every REFRESH reads follows the store as well.
            if self._unseen >= REFRESH:
                self._threshold, self._unseen = self.hedge.threshold(self._recent), 0
            return result
        finally:
            read.waiting = False
            self._in_flight -= 1
            self._watched.discard(read)
            hedge = read.hedge
            if hedge is not None and not hedge.done():
                hedge.cancel()
                await asyncio.wait([hedge])  # its buffer is the reader's again only once it stopped

    def _check(self) -> None:
        """The timer: hedge every watched read that has run past the threshold, within
        the budget, then wake again when the next one would be due."""
        loop = asyncio.get_running_loop()
        now, threshold, due = loop.time(), self._threshold, None
        for read in self._watched:
            if read.hedge is not None:
                continue
            if now - read.started < threshold:
                due = read.started if due is None else min(due, read.started)
            elif self._hedging < self._max_hedging and self.stats.hedges < self.hedge.allowed(self._reads):
                self.stats.hedges += 1
                self._hedging += 1
                read.hedge = loop.create_task(self._send_hedge(read))
        # Reads left unhedged for want of budget are looked at again a threshold later.
        self._timer = None
        if self._watched:
            self._timer = loop.call_at(max(now + threshold / 8, (due if due is not None else now) + threshold),
                                       self._check)

    async def _send_hedge(self, read: _Read) -> None:
        """Send ``read``'s request again; if it answers while the first still waits, the
        first is cancelled and its reader takes this answer.  A failed hedge is
        forgotten: the first request's own outcome decides."""
        try:
            result = await self._send(read.call)
        except Exception:
            return
        finally:
            self._hedging -= 1
        if read.waiting and read.answer is None:
            read.answer = (result,)
            read.task.cancel()

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
            if http_status(exc)[0] == 412:
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
            raise truncated(path, start, stop, n, "object")

    async def aclose(self) -> None:
        # The session belongs to whoever opened it (fficube.sources.fsspec.Filesystems).
        return None
