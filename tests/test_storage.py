"""Retries decided by failure kind (fficube.sources.policy.is_transient) and carried out by retrying."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from botocore.exceptions import ClientError

from fficube.sources.base import IOStats
from fficube.sources.policy import RetryPolicy, is_transient, retrying


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def http_error(status: int) -> aiohttp.ClientResponseError:
    return aiohttp.ClientResponseError(request_info=None, history=(), status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [client_error(503, "ServiceUnavailable"), client_error(500, "InternalError"), client_error(400, "RequestTimeout"),
     client_error(503, "SlowDown"), client_error(429, "TooManyRequests"), http_error(502), http_error(429),
     ConnectionResetError("reset"), TimeoutError(), aiohttp.ServerDisconnectedError()],
)
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [client_error(403, "AccessDenied"), client_error(404, "NoSuchKey"), client_error(416, "InvalidRange"),
     http_error(403), http_error(404), FileNotFoundError("x"), PermissionError("x"), ValueError("x"),
     asyncio.CancelledError()],
)
def test_permanent_failures_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_cause_decides_for_the_error_raised_from_it() -> None:
    try:
        try:
            raise client_error(503, "SlowDown")
        except ClientError as inner:
            raise OSError("wrapped") from inner
    except OSError as outer:
        assert is_transient(outer)


async def test_retrying_retries_transient_failures_and_counts_them() -> None:
    stats, calls = IOStats(), []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "done"

    assert await retrying(flaky, policy=RetryPolicy(base=0.0), stats=stats, what="read") == "done"
    assert len(calls) == 3 and stats.retries == 2


async def test_retrying_gives_up_after_its_attempts_and_at_once_on_permanent_failures() -> None:
    stats, calls = IOStats(), []

    async def down() -> None:
        calls.append(1)
        raise client_error(503, "ServiceUnavailable")

    with pytest.raises(ClientError):
        await retrying(down, policy=RetryPolicy(attempts=4, base=0.0), stats=stats, what="read")
    assert len(calls) == 4 and stats.retries == 3

    async def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        await retrying(missing, policy=RetryPolicy(base=0.0), stats=IOStats(), what="read")
    assert len(calls) == 1


def test_hedge_threshold_is_the_recent_95th_percentile_and_at_least_twice_the_median() -> None:
    from collections import deque

    from fficube.sources.policy import HedgePolicy

    policy = HedgePolicy(initial=2.0, window=64)
    assert policy.threshold(deque()) == 2.0  # nothing measured yet
    assert policy.threshold(deque([0.05] * 7)) == 2.0  # too few to trust
    # a long tail: its 95th percentile (no fixed floor: 0.3 s, not a second)
    tail = [0.05] * 90 + [0.3] * 8 + [5.0] * 2
    assert policy.threshold(deque(tail)) == 0.3
    # no tail (every read as long as the next): twice the median, where a second request could win
    assert policy.threshold(deque([0.05] * 64)) == 0.1
    assert policy.hedges_for(32) == 8 and policy.hedges_for(2) == 1
    assert HedgePolicy(enabled=False).hedges_for(32) == 0
    # the budget: 5% of the reads, and a few to start with
    assert [policy.allowed(n) for n in (0, 19, 20, 1000)] == [4, 4, 5, 54]
    assert HedgePolicy(enabled=False).allowed(1000) == 0


def test_the_connection_pool_holds_reads_hedges_and_upload_parts() -> None:
    from fficube.sinks.s3 import PARTS_IN_FLIGHT
    from fficube.sources.fsspec import Filesystems
    from fficube.sources.policy import HedgePolicy, IOPolicy

    for reads in (1, 10, 32, 100):
        assert IOPolicy().connections(reads) >= reads + HedgePolicy().hedges_for(reads) + PARTS_IN_FLIGHT
    options = Filesystems(concurrency=64).options_for("s3")
    assert options["config_kwargs"]["max_pool_connections"] == IOPolicy().connections(64)
    mine = Filesystems(storage_options={"config_kwargs": {"max_pool_connections": 7}}).options_for("s3")
    assert mine["config_kwargs"]["max_pool_connections"] == 7  # the user's choice wins
    # The pool follows the policy: a policy with more hedges gets more connections.
    wide = IOPolicy(hedge=HedgePolicy(share=1.0))
    assert Filesystems(concurrency=64, policy=wide).options_for("s3")["config_kwargs"]["max_pool_connections"] == (
        64 + 64 + wide.other_connections)


def test_parts_in_flight_fit_a_quarter_of_the_budget() -> None:
    from fficube.sinks.s3 import MIN_PART, PART_BUFFERS, PARTS_IN_FLIGHT, parts_in_flight

    assert parts_in_flight(MIN_PART, 4 * 10**9) == PARTS_IN_FLIGHT
    assert parts_in_flight(MIN_PART, 20 * 10**6) == 1  # never none
    for budget in (100 * 10**6, 200 * 10**6, 300 * 10**6):
        n = parts_in_flight(MIN_PART, budget)
        assert 1 < n <= PARTS_IN_FLIGHT and (n + PART_BUFFERS) * MIN_PART <= budget // 4


def test_blocking_reads_of_a_local_source_are_counted_and_hints_never_fail(tmp_path) -> None:
    from fficube.errors import ReadError
    from fficube.sources.local import LocalSource

    data = bytes(range(256)) * 40
    path, missing = str(tmp_path / "f.bin"), str(tmp_path / "missing.fits")
    (tmp_path / "f.bin").write_bytes(data)

    def job(reads):
        reads.prefetch(path, 0, 100)
        reads.prefetch(missing, 0, 100)  # a hint: the read, not the hint, reports a missing file
        return reads.size(path), reads.read(path, 10, 20), reads.read(path, 10230, 10300)

    def missing_size(reads):
        return reads.size(missing)

    async def run(work):
        source = LocalSource(2)
        try:
            return await source.run_blocking(work), source.stats
        finally:
            await source.aclose()

    (size, first, last), stats = asyncio.run(run(job))
    assert (size, first, last) == (len(data), data[10:20], data[10230:])
    assert (stats.requests, stats.bytes_read) == (2, 20)
    with pytest.raises(ReadError, match="no such file") as info:
        asyncio.run(run(missing_size))
    assert info.value.path == missing
