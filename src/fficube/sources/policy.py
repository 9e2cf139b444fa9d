"""How storage is talked to, and what its failures mean: one home for both.

:class:`IOPolicy` carries the retry and hedge policies and the request and connection
limits from a build's options to every source, sink and connection pool (httpx's
``Limits`` is the model), so that a pool is sized for the hedges the policy allows.
The classification of failures (transient or not, not found, what to tell the user)
is here once, for reads, listings and uploads alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from .base import IOStats

__all__ = [
    "RetryPolicy", "HedgePolicy", "IOPolicy", "retrying", "is_transient", "is_not_found", "describe_failure",
    "http_status", "TRANSIENT_CODES", "REFRESH", "DEFAULT_LOCAL_CONCURRENCY", "DEFAULT_REMOTE_CONCURRENCY",
]

log = logging.getLogger("fficube")
T = TypeVar("T")

#: Reads in flight for local files: a few keep a disk busy; more only add seeks.
DEFAULT_LOCAL_CONCURRENCY = 4
#: Requests in flight for remote files: enough to hide tens of ms of latency.
DEFAULT_REMOTE_CONCURRENCY = 32

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
    """When a slow read is sent a second time, and how often that may happen.

    A read is hedged once it has run longer than the ``quantile`` of the recent reads'
    durations (the last ``window`` that answered), and at least ``factor`` times their
    median: "The Tail at Scale" (Dean and Barroso) hedges at the 95th percentile, where
    a store's latency has a long tail; where it has none (every read about as long as
    the next), a second request sent at the 95th percentile would answer after the first
    one, so the median sets a minimum.  Until ``window // 8`` reads have answered the
    threshold is ``initial`` seconds (AWS's advice for a small GET, before anything
    is known of the store).  The store decides, not a constant: at 50 ms per
    request a slow GET is sent again after about 0.1 s, not after a second.

    Hedges are bounded twice: at most ``budget`` of the reads (plus ``burst``) are ever
    sent a second time, so that the extra GETs stay near 5% however the store behaves;
    and at most ``share`` of the source's concurrency are hedges at once, so that a
    store that is slow for everyone is not asked twice for everything.
    """

    enabled: bool = True
    quantile: float = 0.95
    factor: float = 2.0
    initial: float = 2.0
    window: int = 128
    budget: float = 0.05
    burst: int = 4
    share: float = 0.25

    def hedges_for(self, concurrency: int) -> int:
        """Hedged reads in flight at most for a source of ``concurrency``."""
        return max(1, int(concurrency * self.share)) if self.enabled else 0

    def allowed(self, reads: int) -> int:
        """Hedges a source may have sent in all once ``reads`` reads have started."""
        return int(self.budget * reads) + self.burst if self.enabled else 0

    def threshold(self, recent: Sequence[float]) -> float:
        """Seconds after which a read is hedged, given the durations of recent reads."""
        if len(recent) < max(1, self.window // 8):
            return self.initial
        ordered = sorted(recent)
        top = ordered[min(len(ordered) - 1, int(self.quantile * len(ordered)))]
        return max(top, self.factor * ordered[len(ordered) // 2])


@dataclass(frozen=True, slots=True)
class IOPolicy:
    """Retries, hedges, requests in flight and connections: how a build uses storage.

    One value, made from a build's options and carried to its sources, its sinks and
    the connection pools of its filesystems, so that a pool holds every read, its
    hedges and the upload's parts.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    hedge: HedgePolicy = field(default_factory=HedgePolicy)
    local_concurrency: int = DEFAULT_LOCAL_CONCURRENCY  #: reads in flight for local files
    remote_concurrency: int = DEFAULT_REMOTE_CONCURRENCY  #: requests in flight for remote files
    #: Connections beyond the reads': an upload's parts in flight (8, see
    #: :data:`fficube.sinks.s3.PARTS_IN_FLIGHT`), its journal and listings.
    other_connections: int = 16

    def concurrency(self, *, local: bool, given: int | None = None) -> int:
        """Requests in flight for a source (``given`` by the user, else the policy's)."""
        return given or (self.local_concurrency if local else self.remote_concurrency)

    def connections(self, concurrency: int | None = None) -> int:
        """Connections an S3 filesystem may open for reads of ``concurrency``.

        botocore keeps 10 by default whatever the requests asked of it, and requests
        beyond the pool wait for a connection (measured: 10 on the wire for 32 asked):
        the pool must hold every read, its hedges and the upload's parts.
        """
        reads = concurrency or self.remote_concurrency
        return reads + self.hedge.hedges_for(reads) + self.other_connections


#: S3 error codes that mean "try again later" whatever their HTTP status.
TRANSIENT_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
     "ServiceUnavailable", "RequestLimitExceeded", "BandwidthLimitExceeded"}
)
PERMANENT_TYPES = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
    ValueError, TypeError, KeyError, NotImplementedError,
)


def http_status(exc: BaseException) -> tuple[int | None, str | None]:
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
    status, code = http_status(exc)
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
    status, code = http_status(exc)
    if status is not None:
        return status == 404 or code in ("NoSuchKey", "NoSuchBucket")
    return isinstance(exc, FileNotFoundError)


def describe_failure(exc: BaseException, *, anonymous: bool = False) -> str:
    """A short reason for a failed request, for messages (404, 403, HTTP status);
    ``anonymous``: the request was unsigned (``anon=True``)."""
    status, code = http_status(exc)
    if status == 403 or (status is None and isinstance(exc, PermissionError)):
        return ANONYMOUS_DENIED if anonymous else ACCESS_DENIED
    if is_not_found(exc):
        return "no such object (404)"
    detail = f"HTTP {status}{' ' + code if code else ''}: " if status else ""
    return f"{detail}{exc or type(exc).__name__}"
