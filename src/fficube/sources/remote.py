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
        hedge = policy.hedge
        self._sizes = dict(sizes or {})
        self._etags = dict(etags or {})
        self._limit = asyncio.Semaphore(concurrency)
        self.anonymous = False  #: requests are unsigned (set by a subclass that knows)
        self._hedges = asyncio.Semaphore(hedge.hedges_for(concurrency))
        self._recent: deque[float] = deque(maxlen=hedge.window)  #: durations of the last reads
        self._threshold = hedge.threshold(self._recent)  #: the hedge threshold, as last computed
        self._unseen = 0  #: reads finished since then
        self._in_flight = 0

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
